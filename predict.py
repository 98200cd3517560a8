"""Depth for your own photos with DepthCLIP: one image or a folder of them.

    python predict.py photo.jpg                       # -> photo_depth.png (uint16 mm) and photo_depth_color.png
    python predict.py photos/ -o depth/ --prompt_set prompt2 --clip_model /path/RN50.pt

Each image (any size or mode; EXIF orientation applied) is resized so its long side is --long_side and both
sides are multiples of the model's stride (32 for ResNets), normalized, flip-averaged as in the evaluation,
and its depth upsampled back to the photo's own size. Nothing is trained: the numbers are CLIP's guesses in
the bins' range (1 to 3 m with the paper's bins). The coloured picture spans the prediction's own range
(2nd to 98th percentile), with a colour bar in metres.
"""
import contextlib
import os

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

import cli
import options
import visualize
from datasets import normalized, open_image
from datasets.nyu import FOCAL, IMAGE_SIZE

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
OUTPUT_SUFFIXES = ("_depth.png", "_depth_color.png", "_depth.ply")


def find_images(path):
    if os.path.isdir(path):
        images = sorted(os.path.join(path, name) for name in os.listdir(path)
                        if name.lower().endswith(IMAGE_EXTENSIONS) and not name.endswith(OUTPUT_SUFFIXES))
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


def default_focal(width):
    """NYU's colour camera's focal length, scaled to an image `width` pixels wide."""
    return FOCAL * width / IMAGE_SIZE[0]


def model_input(model, image, long_side, normalize):
    """PIL RGB image -> (1, 3, h, w): resized bicubically to model_input_size, normalized."""
    size = model_input_size(*image.size, long_side, model.stride)
    return normalized(image.resize(size, Image.BICUBIC), normalize)[None]


def predict_depth(model, image, long_side, normalize, flip=True):
    """PIL RGB image -> (H, W) metres at the image's own size."""
    x = model_input(model, image, long_side, normalize)
    depth = model.predict(x, flip=flip, size=(image.height, image.width))  # (1, 1, H, W)
    return depth[0, 0].float().cpu().numpy()


def main(argv=None):
    p = options.predict_options()
    args = p.parse_args(argv)
    options.check_model_arguments(p, args)
    if args.focal is not None and args.focal <= 0:
        p.error("--focal must be a positive number of pixels")

    images = find_images(args.input)
    with cli.output_dir(args.output, "--output") if args.output else contextlib.nullcontext():
        model = options.build_monoclip(args)
        normalize = options.normalization(args, model)
        for path in tqdm(images, desc="predict", unit="image", disable=len(images) == 1):
            image = read_image(path)
            depth = predict_depth(model, image, args.long_side, normalize, flip=not args.no_flip)
            stem = os.path.join(args.output or os.path.dirname(path), os.path.splitext(os.path.basename(path))[0])
            visualize.save_depth(stem + OUTPUT_SUFFIXES[0], stem + OUTPUT_SUFFIXES[1], depth)
            if args.ply:
                focal = args.focal or default_focal(image.width)
                cli.write_file(stem + OUTPUT_SUFFIXES[2], visualize.point_cloud_ply(depth, np.asarray(image), focal))
    print(f"{len(images)} depth map(s) written to {args.output or os.path.dirname(os.path.abspath(images[0]))}")


if __name__ == "__main__":
    cli.run(main)
