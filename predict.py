"""Depth for your own photos with DepthCLIP: one image or a folder of them.

    python predict.py photo.jpg                       # -> photo_depth.png (uint16 mm) and photo_depth_color.png
    python predict.py photos/ -o depth/ --prompt_set prompt2 --clip_model /path/RN50.pt

Each image (any size or mode; EXIF orientation applied) is resized so its long side is --long_side and both
sides are multiples of the model's stride (32 for ResNets), normalized, flip-averaged as in the evaluation,
and its depth upsampled back to the photo's own size. Nothing is trained: the numbers are CLIP's guesses in
the bins' range (1 to 3 m with the paper's bins).
"""
import argparse
import os

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

import cli
import visualize
from datasets import NORMALIZATIONS, open_image
from eval import add_model_arguments, build_monoclip, check_model_arguments
from monoclip import pick_device

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def find_images(path):
    if os.path.isdir(path):
        images = sorted(os.path.join(path, name) for name in os.listdir(path)
                        if name.lower().endswith(IMAGE_EXTENSIONS) and not name.endswith(("_depth.png", "_depth_color.png")))
        if not images:
            raise ValueError(f"{path} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
        return images
    if not os.path.isfile(path):
        raise ValueError(f"{path} does not exist; give an image file or a folder of images")
    return [path]


def read_image(path):
    """RGB PIL image, upright: EXIF orientation applied; grayscale, RGBA and palette converted."""
    return ImageOps.exif_transpose(open_image(path)).convert("RGB")


def model_input_size(width, height, long_side, stride):
    """(width, height) scaled so the long side is long_side, each rounded to a multiple of stride (at least one)."""
    scale = long_side / max(width, height)
    return tuple(max(stride, round(side * scale / stride) * stride) for side in (width, height))


def to_tensor(image, size, normalize):
    """PIL RGB -> (1, 3, H, W) normalized, resized bicubically to size (width, height)."""
    rgb = np.asarray(image.resize(size, Image.BICUBIC), dtype=np.float32) / 255.0
    mean, std = NORMALIZATIONS[normalize]
    rgb = (torch.from_numpy(rgb).permute(2, 0, 1) - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return rgb[None]


def predict_depth(model, image, long_side, normalize, flip=True):
    """PIL RGB image -> (H, W) metres at the image's own size."""
    x = to_tensor(image, model_input_size(*image.size, long_side, model.stride), normalize)
    depth = model.predict(x, flip=flip, size=(image.height, image.width))  # (1, 1, H, W)
    return depth[0, 0].float().cpu().numpy()


def main(argv=None):
    p = cli.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("input", help="an image file or a folder of images")
    p.add_argument("-o", "--out", help="output folder (default: beside each image)")
    p.add_argument("--long_side", type=int, default=544, help="the long side (pixels) the image is resized to")
    p.add_argument("--normalize", default="imagenet", choices=list(NORMALIZATIONS),
                   help="RGB mean/std: the authors' ImageNet statistics or CLIP's own")
    add_model_arguments(p)
    args = p.parse_args(argv)
    check_model_arguments(p, args)
    if args.long_side < 32:
        p.error("--long_side must be at least 32")

    images = find_images(args.input)
    if args.out:
        cli.check_writable_dir(args.out, "--out")
    model = build_monoclip(args, pick_device(args.device))
    for path in tqdm(images, desc="predict", unit="image", disable=len(images) == 1):
        depth = predict_depth(model, read_image(path), args.long_side, args.normalize, flip=not args.no_flip)
        stem = os.path.join(args.out or os.path.dirname(path), os.path.splitext(os.path.basename(path))[0])
        visualize.save_depth(stem + "_depth.png", stem + "_depth_color.png", depth)
    print(f"{len(images)} depth map(s) written to {args.out or os.path.dirname(os.path.abspath(images[0]))}")


if __name__ == "__main__":
    cli.run(main)
