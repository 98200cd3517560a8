#!/usr/bin/env python3
"""Seeded synthetic images and depth in each zero-shot dataset's own format and layout (datasets/zeroshot.py), for
tests and for trying eval.py --dataset ETH3D|SCANNET|DIODE|IBIMS|SUNRGBD without the data.

    python -m synthetic.zeroshot_like NAME ROOT [--count 3] [--seed 0]

writes ROOT in NAME's layout: ETH3D's raw float32 depth files (inf where none; at datasets.zeroshot.ETH3D_SHAPE,
4032x6048, 97 MB an image), ScanNet's and SUN RGB-D's 16-bit millimetre PNGs, DIODE's .npy depth with its
_depth_mask.npy, iBims-1's 16-bit PNG (x 50 / 65535 m) with mask_invalid/ and mask_transp/ and imagelist.txt; and,
for the Marigold datasets, a split list in their format (ROOT/list.txt). Rooms, not photographs: numbers computed on
them pin the code down and say nothing about the datasets.
"""
import argparse
import os
import sys

if __name__ == "__main__" and not __package__:  # run by its path: import from the repository's root, as with -m
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from PIL import Image

import cli
from datasets import zeroshot

SIZES = {"SCANNET": (48, 64), "DIODE": (48, 64), "IBIMS": (480, 640), "SUNRGBD": (500, 700)}  # rows, cols; ETH3D:
# zeroshot.ETH3D_SHAPE (iBims and SUN RGB-D large enough for ZoeDepth's fixed box)


def scene(rng, shape):
    """(rgb uint8 (H, W, 3), depth float32 metres (H, W)): a floor rising to a back wall, a box, some holes."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    wall = rng.uniform(3.0, 7.0)
    depth = np.minimum(wall, 1.0 + (shape[0] - rows) / shape[0] * 2 * wall).astype(np.float32)
    top, left = (int(rng.uniform(0.2, 0.5) * s) for s in shape)
    depth[top:top + shape[0] // 4, left:left + shape[1] // 4] = rng.uniform(1.0, 2.0)
    rgb = np.stack([255 * depth / depth.max(), 128 + 60 * np.sin(cols / 7), 255 - 20 * depth], -1)
    return np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8), depth


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(data, Image.Image):
        data.save(path)
    elif isinstance(data, np.ndarray) and path.endswith(".npy"):
        np.save(path, data)
    else:
        cli.write_file(path, data)


def write_dataset(name, root, count=3, seed=0):
    """Write `count` images of dataset NAME under root; returns the split list's path (Marigold's datasets) or None."""
    rng = np.random.RandomState(seed)
    shape = zeroshot.ETH3D_SHAPE if name == "ETH3D" else SIZES[name]
    lines, names = [], []
    for i in range(count):
        rgb, depth = scene(rng, shape)
        holes = rng.rand(*shape) < 0.05  # pixels without a measurement
        image = Image.fromarray(rgb)
        if name == "ETH3D":
            raw = np.where(holes, np.inf, depth).astype(np.float32)
            rgb_file = f"rgb/office/images/dslr_images/DSC_{i:04d}.JPG"
            depth_file = f"depth/office_dslr_depth/office/ground_truth_depth/dslr_images/DSC_{i:04d}.JPG"
            write(os.path.join(root, rgb_file), image)
            write(os.path.join(root, depth_file), raw.tobytes())
            lines.append(f"{rgb_file} {depth_file}")
        elif name == "SCANNET":
            rgb_file, depth_file = f"scene0{i:03d}_00/color/{i:06d}.jpg", f"scene0{i:03d}_00/depth/{i:06d}.png"
            write(os.path.join(root, rgb_file), image)
            write(os.path.join(root, depth_file), Image.fromarray(np.where(holes, 0, depth * 1000).astype(np.uint16)))
            lines.append(f"{rgb_file} {depth_file}")
        elif name == "DIODE":
            stem = f"{'indoors' if i % 2 == 0 else 'outdoor'}/scene_{i:05d}/scan_{i:05d}/{i:05d}_{i:05d}_x"
            write(os.path.join(root, stem + ".png"), image)
            write(os.path.join(root, stem + "_depth.npy"), np.where(holes, 0, depth)[..., None].astype(np.float32))
            write(os.path.join(root, stem + "_depth_mask.npy"), (~holes).astype(np.float32))
            lines.append(f"{stem}.png {stem}_depth.npy {stem}_depth_mask.npy")
        elif name == "IBIMS":
            names.append(f"room_{i:02d}")
            write(os.path.join(root, "rgb", names[-1] + ".png"), image)
            write(os.path.join(root, "depth", names[-1] + ".png"),
                  Image.fromarray(np.round(depth / 50 * 65535).astype(np.uint16)))
            transparent = np.zeros(shape, np.uint8)
            transparent[:, : shape[1] // 8] = 1  # a window's column
            write(os.path.join(root, "mask_invalid", names[-1] + ".png"), Image.fromarray((~holes).astype(np.uint8)))
            write(os.path.join(root, "mask_transp", names[-1] + ".png"), Image.fromarray(1 - transparent))
        else:
            far = depth.copy()
            far[: shape[0] // 10] = 9.0  # beyond ZoeDepth's 8 m
            write(os.path.join(root, "rgb", "rgb", f"{i:05d}.jpg"), image)
            write(os.path.join(root, "gt", "gt", f"{i:05d}.png"), Image.fromarray(np.where(holes, 0, far * 1000)
                                                                                   .astype(np.uint16)))
    if name == "IBIMS":
        cli.write_file(os.path.join(root, "imagelist.txt"), ("\n".join(names) + "\n").encode())
    if not lines:
        return None
    listing = os.path.join(root, "list.txt")
    cli.write_file(listing, ("\n".join(lines) + "\n").encode())
    return listing


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", type=str.upper, choices=list(zeroshot.PROTOCOLS))
    p.add_argument("root")
    p.add_argument("--count", type=cli.bounded(int, at_least=1), default=3)
    p.add_argument("--seed", type=cli.bounded(int, at_least=0), default=0)
    args = p.parse_args(argv)
    listing = write_dataset(args.name, args.root, args.count, args.seed)
    print(f"{args.count} {args.name} images written under {args.root} ({cli.size_of(args.root)})"
          + (f"; list: {listing} (eval.py --testfile)" if listing else ""))


if __name__ == "__main__":
    main()
