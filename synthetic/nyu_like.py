#!/usr/bin/env python3
"""Seeded synthetic rooms in the layout of NYU Depth V2, for tests, benchmarks and trying the repo without data.

    python -m synthetic.nyu_like DATA_PATH [--count 6] [--seed 0] [--scenes bathroom,kitchen,living_room]

Writes DATA_PATH/official_splits/test/<scene>/rgb_XXXXX.jpg (640x480 RGB with the real split's black border)
and .../sync_depth_XXXXX.png (640x480 uint16 millimetres, 0 = missing), so that `eval.py --data_path DATA_PATH
--testfile_nyu auto` reads them. Each room is a back wall, a floor and a few boxes; the pixels are not
photographs, so numbers on them say nothing about NYU. The draws follow the parity references' generator,
so golden.json's pipeline case applies.
"""
import argparse
import os
import sys

if __name__ == "__main__" and not __package__:  # run by its path: import from the repository's root, as with -m
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from PIL import Image

import cli
from datasets.nyu import SPLIT_DIR  # where eval.py looks under --data_path

H, W = 480, 640


def make_room(rng):
    """One (rgb uint8 (H, W, 3), depth uint16 millimetres (H, W)) pair drawn from rng."""
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float64)
    wall = rng.uniform(3.0, 8.0)
    horizon = rng.uniform(0.35, 0.55) * H
    depth = np.full((H, W), wall)
    floor = rows > horizon
    depth[floor] = np.minimum(wall, 1.2 * H / np.maximum(rows[floor] - horizon, 1.0) + 0.8)
    for _ in range(rng.randint(1, 4)):
        left, top = rng.randint(0, W - 120), rng.randint(int(horizon) - 60, H - 100)
        width, height = rng.randint(60, 200), rng.randint(60, 160)
        box_depth = rng.uniform(1.0, wall - 0.3)
        box = (cols >= left) & (cols < left + width) & (rows >= top) & (rows < top + height)
        depth[box] = np.minimum(depth[box], box_depth)
    depth = np.clip(depth, 0.5, 9.9)

    brightness = 1.0 / depth  # nearer is brighter, each channel tinted
    rgb = np.stack([brightness * rng.uniform(0.6, 1.4) for _ in range(3)], -1)
    rgb = rgb / rgb.max() * 220 + rng.normal(0, 6, (H, W, 3))
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    rgb[:7], rgb[474:], rgb[:, :7], rgb[:, 632:] = 0, 0, 0, 0  # the real split's black border

    depth_mm = (depth * 1000).astype(np.uint16)
    depth_mm[rng.random_sample((H, W)) < 0.02] = 0  # missing measurements
    return rgb, depth_mm


def write_dataset(data_path, count=6, seed=0, scenes=("bathroom", "kitchen", "living_room")):
    """Write `count` rooms under data_path/official_splits/test, cycling through `scenes`; room i gets file
    index 1 + 7 i. Returns the rgb paths."""
    rng = np.random.RandomState(seed)
    paths = []
    for i in range(count):
        folder = os.path.join(data_path, SPLIT_DIR, scenes[i % len(scenes)])
        os.makedirs(folder, exist_ok=True)
        rgb, depth_mm = make_room(rng)
        index = 1 + 7 * i
        paths.append(os.path.join(folder, f"rgb_{index:05d}.jpg"))
        Image.fromarray(rgb).save(paths[-1], quality=95)
        Image.fromarray(depth_mm).save(os.path.join(folder, f"sync_depth_{index:05d}.png"))
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_path", help="folder to hold official_splits/test (eval.py's --data_path)")
    parser.add_argument("--count", type=cli.bounded(int, at_least=1), default=6)
    parser.add_argument("--seed", type=cli.bounded(int, at_least=0), default=0)
    parser.add_argument("--scenes", default="bathroom,kitchen,living_room")
    args = parser.parse_args(argv)
    write_dataset(args.data_path, args.count, args.seed, args.scenes.split(","))
    split = os.path.join(args.data_path, SPLIT_DIR)
    print(f"{args.count} rooms written under {split} ({cli.size_of(split)}); evaluate them with eval.py --data_path "
          f"{args.data_path} --testfile_nyu auto")


if __name__ == "__main__":
    main()
