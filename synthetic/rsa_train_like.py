#!/usr/bin/env python3
"""Seeded training data for RSA's LanScale trainer (train_scale.py): NYU, KITTI and VOID in their layouts, each
image with 15 captions and a cached relative inverse-depth map, its ground truth made by a known scale and shift.

    python -m synthetic.rsa_train_like ROOT [--nyu 5] [--kitti 4] [--void 6] [--seed 0]

Writes under ROOT (the flags train_scale.py takes are in brackets):
    nyu/sync/<scene>/rgb_XXXXX.jpg, sync_depth_XXXXX.png (uint16 mm, 640x480)  [--nyu_path ROOT/nyu]
    nyu/train_list.txt ('/<scene>/rgb_XXXXX.jpg /<scene>/sync_depth_XXXXX.png 518.8579', BTS's lines)
    kitti/raw/<date>/<drive>/image_02/data/XXXXXXXXXX.png (1242x375)       [--kitti_path ROOT/kitti/raw]
    kitti/gt/<drive>/proj_depth/groundtruth/image_02/XXXXXXXXXX.png (depth x 256, sparse)
    kitti/train_list.txt (BTS's Eigen lines)
    void/void_1500/data/<scene>/image/<stamp>.png, ground_truth/<stamp>.png (depth x 256, 640x480)
    void/train_image.txt, void/train_ground_truth.txt (RSA's data_splits/void lines)
    captions/<nyu|kitti|void>/train/<the image's path in its list, without extension>.txt (15 lines, all
        different; their text/text_all layout)                                   [--captions ROOT/captions]
    relative/<nyu|kitti|void>/<the same path>.npy: float32 inverse depth at the model's input size (NYU and VOID
        640x480, KITTI the 1216x352 benchmark crop)                            [--nyu_relative ROOT/relative/nyu ...]

Every dataset has its own true scale and shift (TRUTH): ground truth = 1 / (scale * relative + shift), quantized as
the PNG stores it, with holes. Relative values are 16-bit codes / 16384 + 1/64 (exact in float32), and the RGB
pixels carry each code (red: high byte, green: low byte; PNG bytes even in NYU's .jpg names), so that a stand-in
relative model can read the map back from the image exactly: the parity harness runs RSA's own training loop so.
The pictures are not photographs; numbers on them say nothing about the real datasets.
"""
import argparse
import io
import os
import sys

if __name__ == "__main__" and not __package__:  # run by its path: import from the repository's root, as with -m
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from PIL import Image

import cli

TRUTH = {"nyu": (0.5, 0.1), "kitti": (0.2, 0.05), "void": (0.8, 0.3)}  # (scale, shift): depth = 1/(s rel + t)
CODE_UNIT, CODE_OFFSET = 16384.0, 1.0 / 64  # relative = code / CODE_UNIT + CODE_OFFSET
MIN_CODE = 16 * 256  # red at least 16 everywhere: a raw (unnormalized) image is told apart by its values
KITTI_FRAME = (375, 1242)  # rows, cols of a raw KITTI frame
KITTI_CROP = (352, 1216)  # its benchmark crop: bottom rows, centred columns
FRAME = (480, 640)  # NYU's and VOID's
WORDS = {"nyu": ["a sofa", "a bed", "a desk", "two chairs", "a bookshelf", "a kitchen counter", "a window"],
         "kitti": ["three cars", "a cyclist", "a truck", "trees", "a building", "a traffic sign", "a parked van"],
         "void": ["a plant", "a cardboard box", "a shelf", "a table", "a stairway", "a whiteboard", "a lamp"]}
PLACES = {"nyu": "An indoor room", "kitti": "A street scene", "void": "A close view indoors"}


def relative_codes(rng, rows, cols):
    """(rows, cols) uint16 codes of a smooth inverse-depth field: a vertical ramp (nearer below) and a few blobs."""
    y, x = np.mgrid[0:rows, 0:cols] / np.array([rows, cols]).reshape(2, 1, 1)
    field = 0.2 + 0.5 * y + 0.1 * x * rng.uniform(-1, 1)
    for _ in range(3):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.2)
        field += rng.uniform(0.1, 0.3) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r ** 2))
    field = (field - field.min()) / (field.max() - field.min())
    return (MIN_CODE + field * (65535 - MIN_CODE)).round().astype(np.uint16)


def relative_of(codes):
    """uint16 codes -> float32 relative inverse depth (exact: the sum needs fewer than 24 bits)."""
    return codes.astype(np.float32) / np.float32(CODE_UNIT) + np.float32(CODE_OFFSET)


def rgb_of(codes, rng):
    """An RGB image carrying the codes: red the high byte, green the low byte, blue random."""
    blue = rng.randint(0, 256, size=codes.shape)
    return np.stack([codes >> 8, codes & 255, blue], axis=-1).astype(np.uint8)


def ground_truth(relative, dataset, rng, valid_fraction):
    """Metres from the dataset's true scale and shift, with holes (0): float64 (rows, cols)."""
    scale, shift = TRUTH[dataset]
    depth = 1.0 / (scale * relative.astype(np.float64) + shift)
    depth[rng.uniform(size=depth.shape) > valid_fraction] = 0.0
    return depth


def captions(dataset, number, rng):
    """15 different captions of one image."""
    words = WORDS[dataset]  # the dataset's words last: a small text tower's end token sees the last words most
    return [f"Description {j + 1} of image {number}: {PLACES[dataset]} with {words[rng.randint(len(words))]} and "
            f"{words[rng.randint(len(words))]}." for j in range(15)]


def png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_dataset(root, counts=None, seed=0):
    """Write the three datasets under root (module docstring); returns {dataset: [image paths as listed]}."""
    counts = {"nyu": 5, "kitti": 4, "void": 6, **(counts or {})}
    rng = np.random.RandomState(seed)
    files, listed = {}, {}

    def item(dataset, image_path, codes, number):
        files[os.path.join(root, "captions", dataset, "train", os.path.splitext(image_path)[0] + ".txt")] = \
            ("\n".join(captions(dataset, number, rng)) + "\n").encode()
        buffer = io.BytesIO()
        np.save(buffer, relative_of(codes))
        files[os.path.join(root, "relative", dataset, os.path.splitext(image_path)[0] + ".npy")] = buffer.getvalue()
        listed.setdefault(dataset, []).append(image_path)

    lines = []
    for i in range(counts["nyu"]):
        scene, number = f"room_{i % 2:04d}", i + 1
        codes = relative_codes(rng, *FRAME)
        rgb, depth = f"{scene}/rgb_{number:05d}.jpg", f"{scene}/sync_depth_{number:05d}.png"
        files[os.path.join(root, "nyu", "sync", rgb)] = png_bytes(rgb_of(codes, rng))
        metres = ground_truth(relative_of(codes), "nyu", rng, 0.9)
        files[os.path.join(root, "nyu", "sync", depth)] = png_bytes(np.round(metres * 1000).astype(np.uint16))
        lines.append(f"/{rgb} /{depth} 518.8579")
        item("nyu", rgb, codes, i)
    files[os.path.join(root, "nyu", "train_list.txt")] = ("\n".join(lines) + "\n").encode()

    lines = []
    top, left = KITTI_FRAME[0] - KITTI_CROP[0], (KITTI_FRAME[1] - KITTI_CROP[1]) // 2
    for i in range(counts["kitti"]):
        drive, frame = f"2011_09_26_drive_{i % 2 + 1:04d}_sync", f"{i:010d}.png"
        codes = relative_codes(rng, *KITTI_FRAME)
        crop = codes[top:top + KITTI_CROP[0], left:left + KITTI_CROP[1]]
        rgb, gt = f"2011_09_26/{drive}/image_02/data/{frame}", f"{drive}/proj_depth/groundtruth/image_02/{frame}"
        files[os.path.join(root, "kitti", "raw", rgb)] = png_bytes(rgb_of(codes, rng))
        metres = ground_truth(relative_of(codes), "kitti", rng, 0.3)
        files[os.path.join(root, "kitti", "gt", gt)] = png_bytes(np.round(metres * 256).astype(np.uint16))
        lines.append(f"{rgb} {gt} 721.5377")
        item("kitti", rgb, crop, i)
    files[os.path.join(root, "kitti", "train_list.txt")] = ("\n".join(lines) + "\n").encode()

    images, truths = [], []
    for i in range(counts["void"]):
        scene, stamp = f"void_1500/data/place_{i % 2}", f"{1552097915.5 + i / 30:.4f}.png"
        codes = relative_codes(rng, *FRAME)
        image, gt = f"{scene}/image/{stamp}", f"{scene}/ground_truth/{stamp}"
        files[os.path.join(root, "void", image)] = png_bytes(rgb_of(codes, rng))
        metres = ground_truth(relative_of(codes), "void", rng, 0.8)
        files[os.path.join(root, "void", gt)] = png_bytes(np.round(metres * 256).astype(np.uint16))
        images.append(image)
        truths.append(gt)
        item("void", image, codes, i)
    files[os.path.join(root, "void", "train_image.txt")] = ("\n".join(images) + "\n").encode()
    files[os.path.join(root, "void", "train_ground_truth.txt")] = ("\n".join(truths) + "\n").encode()

    for path in files:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    cli.write_files(files, "ROOT")
    return listed


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--nyu", type=int, default=5)
    p.add_argument("--kitti", type=int, default=4)
    p.add_argument("--void", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    listed = write_dataset(args.root, {"nyu": args.nyu, "kitti": args.kitti, "void": args.void}, args.seed)
    print(f"wrote {', '.join(f'{len(v)} {k}' for k, v in listed.items())} training images under {args.root}")


if __name__ == "__main__":
    cli.run(main)
