#!/usr/bin/env python3
"""Seeded synthetic road scenes in the layout of KITTI's raw data and annotated depth, for tests and for trying
--dataset KITTI without the data.

    python -m synthetic.kitti_like DATA_PATH [--count 4] [--seed 0]

Writes DATA_PATH/<date>/<drive>/image_02/data/<frame>.png (RGB), the sparse depth DATA_PATH/data_depth_annotated/
<drive>/proj_depth/groundtruth/image_02/<frame>.png (uint16, metres x 256, 0 = none; about 5% of pixels, below
the horizon, as a lidar gives) and DATA_PATH/test_list.txt in the Eigen list's format, whose last line has no
ground truth (None) though its frame is there. Two drives of two frame sizes (1242x375 and 1241x376). Not photographs: numbers on them say
nothing about KITTI.
"""
import argparse
import os
import sys

if __name__ == "__main__" and not __package__:  # run by its path: import from the repository's root, as with -m
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from PIL import Image

import cli

DRIVES = [("2011_09_26", "2011_09_26_drive_0002_sync", (375, 1242)), ("2011_09_30", "2011_09_30_drive_0016_sync",
                                                                      (376, 1241))]
FOCAL = 721.5377


def make_scene(rng, height, width):
    """(rgb uint8 (H, W, 3), depth uint16 (H, W)) of a road under a sky, with a few boxes."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    horizon = rng.uniform(0.35, 0.45) * height
    depth = np.full((height, width), 0.0)
    ground = rows > horizon + 1
    depth[ground] = np.minimum(80.0, 1.65 * FOCAL / (rows[ground] - horizon))
    for _ in range(rng.randint(1, 4)):
        left, width_box = rng.randint(0, width - 200), rng.randint(40, 200)
        bottom = rng.randint(int(horizon) + 20, height)
        box_depth = 1.65 * FOCAL / max(bottom - horizon, 1.0)
        box = (cols >= left) & (cols < left + width_box) & (rows < bottom) & (rows > bottom - 3000 / box_depth)
        depth[box] = box_depth
    brightness = np.where(depth > 0, 1.0 / np.maximum(depth, 1.0), 0.02)
    rgb = np.stack([brightness * rng.uniform(0.6, 1.4) for _ in range(3)], -1)
    rgb = np.clip(rgb / rgb.max() * 220 + rng.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)
    measured = (depth > 0) & (rng.random_sample((height, width)) < 0.05)
    return rgb, np.where(measured, np.round(depth * 256.0), 0).astype(np.uint16)


def write_dataset(data_path, count=4, seed=0):
    """Write `count` frames, alternating drives, and the list; returns the list's path."""
    rng = np.random.RandomState(seed)
    lines = []
    for i in range(count):
        date, drive, (height, width) = DRIVES[i % len(DRIVES)]
        frame = f"{10 * i + 5:010d}.png"
        rgb, depth = make_scene(rng, height, width)
        rgb_path = f"{date}/{drive}/image_02/data/{frame}"
        gt_path = f"{drive}/proj_depth/groundtruth/image_02/{frame}"
        os.makedirs(os.path.dirname(os.path.join(data_path, rgb_path)), exist_ok=True)
        os.makedirs(os.path.dirname(os.path.join(data_path, "data_depth_annotated", gt_path)), exist_ok=True)
        Image.fromarray(rgb).save(os.path.join(data_path, rgb_path))
        Image.fromarray(depth).save(os.path.join(data_path, "data_depth_annotated", gt_path))
        lines.append(f"{rgb_path} {gt_path} {FOCAL}")
    date, drive, (height, width) = DRIVES[0]
    rgb_path = f"{date}/{drive}/image_02/data/{10 * count + 5:010d}.png"  # a frame the list names without depth
    Image.fromarray(make_scene(rng, height, width)[0]).save(os.path.join(data_path, rgb_path))
    lines.append(f"{rgb_path} None {FOCAL}")
    listing = os.path.join(data_path, "test_list.txt")
    with open(listing, "w") as f:
        f.write("\n".join(lines) + "\n")
    return listing


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_path", help="folder to hold the raw data (eval.py's --data_path)")
    parser.add_argument("--count", type=cli.bounded(int, at_least=1), default=4)
    parser.add_argument("--seed", type=cli.bounded(int, at_least=0), default=0)
    args = parser.parse_args(argv)
    listing = write_dataset(args.data_path, args.count, args.seed)
    print(f"{args.count} road scenes written under {args.data_path} ({cli.size_of(args.data_path)}), listed in {listing}")


if __name__ == "__main__":
    main()
