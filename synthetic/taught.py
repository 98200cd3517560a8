#!/usr/bin/env python3
"""Synthetic NYU-layout training data whose depth a known prompt (a "teacher" token setting) produced through
DepthCLIP's own head, so that prompt learning has something to find: train.py should bring its validation loss
down from the standard initialization.

    python -m synthetic.taught DIR --clip_model CLIP.pt [--count 24] [--seed 0] [--teacher_seed 7]

writes DIR/official_splits/train/<scene>/rgb_*.jpg (synthetic rooms) and sync_depth_*.png: the teacher's depth on
DepthCLIP's evaluation crop (flip-averaged, upsampled), in millimetres, pasted into the 480x640 frame (zeros around).
The teacher is the default layout (learned-static-1o1d, 7 learned depth tokens, dset-even-7 bins) with tokens
N(0, 2) drawn with teacher_seed, at temperature 0.15: a random CLIP's softmax at 0.1 is one-hot, which leaves
nothing to learn, so train on this data with --temperature 0.15.
"""
import argparse
import os
import sys

if __name__ == "__main__" and not __package__:  # run by its path: import from the repository's root, as with -m
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import torch
from PIL import Image

import cli
import learned_prompts
import visualize
from datasets.nyu import NYUDepthV2
from monoclip import MonoCLIP
from synthetic.nyu_like import make_room

SCENES = ("bathroom", "kitchen", "living_room")


def teacher_prompts(width, seed=7, scale=2.0, temperature=0.15):
    d = learned_prompts.TRAINING_DEFAULTS
    generator = torch.Generator().manual_seed(seed)
    tokens = {"prompt": torch.randn(2, width, generator=generator) * scale,
              "depth": torch.randn(7, width, generator=generator) * scale}
    return learned_prompts.LearnedPrompts(d["template"], 7, "object", learned_prompts.bin_centres(d["bins"]), tokens,
                                          temperature)


def write_taught_dataset(root, clip_model, count=24, seed=0, teacher_seed=7):
    """Write the rooms and their teacher depth; returns the teacher (LearnedPrompts)."""
    rng = np.random.RandomState(seed)
    split = os.path.join(root, "official_splits", "train")
    for i in range(count):
        folder = os.path.join(split, SCENES[i % len(SCENES)])
        os.makedirs(folder, exist_ok=True)
        rgb, _ = make_room(rng)
        Image.fromarray(rgb).save(os.path.join(folder, f"rgb_{i:05d}.jpg"), quality=95)
        Image.fromarray(np.ones((480, 640), np.uint16)).save(os.path.join(folder, f"sync_depth_{i:05d}.png"))
    model = MonoCLIP(clip_model, device="cpu")
    teacher = teacher_prompts(model.clip.token_embedding.weight.shape[1], teacher_seed)
    encoded = model.encode_prompts(teacher)
    data = NYUDepthV2(root, "auto", split="train")
    for index, (rgb_file, depth_file) in enumerate(data.pairs):
        rgb = data[index][0][None]
        depth = model.depth_from_features(*model.view_features(rgb), data.input_size, True, encoded)
        cli.write_file(os.path.join(split, depth_file), visualize.prediction_png(depth[0, 0]).data)
    return teacher


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--clip_model", required=True)
    p.add_argument("--count", type=cli.bounded(int, at_least=1), default=24)
    p.add_argument("--seed", type=cli.bounded(int, at_least=0), default=0)
    p.add_argument("--teacher_seed", type=cli.bounded(int, at_least=0), default=7)
    args = p.parse_args(argv)
    write_taught_dataset(args.root, args.clip_model, args.count, args.seed, args.teacher_seed)
    split = os.path.join(args.root, "official_splits", "train")
    print(f"{args.count} taught rooms written under {split} ({cli.size_of(split)}); train on them with "
          f"train.py --data_path {args.root} --clip_model {args.clip_model}")


if __name__ == "__main__":
    main()
