#!/usr/bin/env python3
"""Seeded synthetic data in RSA's layout: images and ground truth of NYU, KITTI and VOID, their 15 captions per
image, relative inverse-depth maps and LanScale weights, for tests and for trying --align language without data.

    python -m synthetic.rsa_like OUT [--count 3] [--seed 0]

Writes under OUT:
    nyu/     synthetic.nyu_like's rooms (official_splits/test/...) and nyu/test_list.txt (NYU's list format)
    kitti/   synthetic.kitti_like's road scenes and kitti/test_list.txt (its last line has no ground truth)
    void/    void_1500/data/<scene>/{image,ground_truth,sparse_depth}/<timestamp>.png, <scene>/K.txt and their
             data_splits lists test_image.txt, test_ground_truth.txt, test_sparse_depth.txt, test_intrinsics.txt
    text/text_all/<nyu|kitti|void>/test/<image path without extension>.txt          15 captions each
    text/seg_txt_panoptic/<nyu|kitti|void>/test/<image path without extension>.txt  '<label> <fraction>' lines
    relative/<nyu|kitti|void>/<image path without extension>.npy   float32 inverse depth, 0 where "sky", of the
             frame the prediction covers (NYU and VOID 480x640; KITTI the 352x1216 benchmark box), affine in 1/gt
    lanscale.pt           LanScale weights as their train_3d.py saves them ({'model': state dict, 'global_step'})
    lanscale.safetensors  the same weights as rsa.save_scale_model writes them

Nothing here is real: the numbers say nothing about RSA's.
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
import rsa
from datasets import kitti, nyu
from synthetic import kitti_like, nyu_like

OBJECTS = ["sink", "towel", "mirror", "bed", "lamp", "table", "chair", "car", "tree", "road", "shelf", "plant"]
PLACES = {"nyu": "room", "kitti": "street", "void": "corridor"}
VOID_SCENES = ("desktop2", "plants3")


def caption_lines(rng, place):
    """15 distinct captions: 10 free sentences, then 5 'An image with ...' lists, as their text_all files."""
    lines = []
    for i in range(10):
        things = rng.choice(OBJECTS, size=2, replace=False)
        lines.append(f"A {['small', 'large', 'bright', 'dark', 'tidy'][i % 5]} {place} with a {things[0]} and a "
                     f"{things[1]}, view {i}.")
    things = list(rng.choice(OBJECTS, size=3, replace=False))
    for i in range(5):
        order = [things[j] for j in rng.permutation(3)]
        lines.append(f"An image with a {order[0]}, a {order[1]}, and a {order[2]} ({i}).")
    return lines


def relative_of(gt, rng):
    """A relative inverse depth affine in 1 / gt where gt > 0 (a random scale and shift, 1% noise), else the map's
    smallest value; the top tenth of the rows 0 (a ReLU's sky)."""
    disparity = np.where(gt > 0, 1.0 / np.maximum(gt, 1e-3), 0.0)
    disparity[gt <= 0] = disparity[gt > 0].min() if (gt > 0).any() else 0.1
    rel = rng.uniform(0.5, 2.0) * disparity + rng.uniform(0.0, 0.02)
    rel *= 1 + 0.01 * rng.standard_normal(rel.shape)
    rel[: rel.shape[0] // 10] = 0.0
    return np.maximum(rel, 0).astype(np.float32)


def write_text(out, dataset, image_path, rng):
    stem = image_path[:-4]  # their get_text's [:-4]
    place = PLACES[dataset]
    caption = os.path.join(out, "text", "text_all", dataset, "test", stem + ".txt")
    panoptic = os.path.join(out, "text", "seg_txt_panoptic", dataset, "test", stem + ".txt")
    for path in (caption, panoptic):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(caption, "w") as f:
        f.write("\n".join(caption_lines(rng, place)) + "\n")
    with open(panoptic, "w") as f:
        for label in rng.choice(OBJECTS + ["traffic light"], size=4, replace=False):
            f.write(f"{label} {rng.uniform(0.001, 0.4)}\n")


def write_relative(out, dataset, image_path, gt, rng):
    path = os.path.join(out, "relative", dataset, image_path[:-4] + ".npy")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, relative_of(gt, rng))


def write_void(root, count, rng):
    """VOID-like frames (rooms in metres x 256) under root in their layout, and their four test lists."""
    lists = {"image": [], "ground_truth": [], "sparse_depth": [], "intrinsics": []}
    for i in range(count):
        scene = VOID_SCENES[i % len(VOID_SCENES)]
        stamp = f"{1552625295.7828 + 0.0333 * i:.4f}.png"
        rgb, depth_mm = nyu_like.make_room(rng)
        depth = np.clip(depth_mm / 1000.0 * 0.55, 0, 6.0)  # a smaller room: some of it past VOID's 5 m
        png = np.where(depth_mm > 0, np.round(depth * 256.0), 0).astype(np.uint16)
        base = f"void_1500/data/{scene}"
        for kind, image in (("image", Image.fromarray(rgb)), ("ground_truth", Image.fromarray(png)),
                            ("sparse_depth", Image.fromarray(np.where(rng.random_sample(png.shape) < 0.005, png,
                                                                      0).astype(np.uint16)))):
            os.makedirs(os.path.join(root, base, kind), exist_ok=True)
            image.save(os.path.join(root, base, kind, stamp))
            lists[kind].append(f"{base}/{kind}/{stamp}")
        with open(os.path.join(root, base, "K.txt"), "w") as f:
            f.write("514.6 0 315.3\n0 515.4 241.2\n0 0 1\n")
        lists["intrinsics"].append(f"{base}/K.txt")
    for kind, lines in lists.items():
        with open(os.path.join(root, f"test_{kind}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return lists["image"]


def make_lanscale(seed, text_width=rsa.TEXT_WIDTH):
    """LanScale with seeded weights (torch's default initialisation under torch.manual_seed(seed)), its shift
    lowered so 1 / (s * r + t) lands near the maps' metres."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = rsa.LanScale(text_width).eval()
    torch.random.set_rng_state(generator_state)
    with torch.no_grad():  # exp(shift) from about 0.9 to about 0.01 (1 / 100 m): metres of the relative maps' order
        model.shift_net[-1].bias -= 4.5
    return model


def write_dataset(out, count=3, seed=0, text_width=rsa.TEXT_WIDTH):
    """Write everything listed in the module's docstring under out; returns {dataset: [image paths]}."""
    rng = np.random.RandomState(seed)
    written = {}

    nyu_root = os.path.join(out, "nyu")
    paths = nyu_like.write_dataset(nyu_root, count, seed)
    split = os.path.join(nyu_root, nyu.SPLIT_DIR)
    entries = [os.path.relpath(p, split).replace(os.sep, "/") for p in paths]
    with open(os.path.join(nyu_root, "test_list.txt"), "w") as f:
        for e in entries:
            f.write(f"{e} {e.replace('rgb_', 'sync_depth_').replace('.jpg', '.png')} {nyu.FOCAL}\n")
    for e in entries:
        depth_file = e.replace("rgb_", "sync_depth_").replace(".jpg", ".png")
        gt = nyu.load_depth(os.path.join(split, depth_file), clip=False)[0].numpy()
        write_text(out, "nyu", e, rng)
        write_relative(out, "nyu", e, gt, rng)
    written["nyu"] = entries

    kitti_root = os.path.join(out, "kitti")
    listing = kitti_like.write_dataset(kitti_root, count, seed)
    with open(listing) as f:
        lines = [line.split() for line in f if line.strip()]
    for rgb, depth, _ in lines:
        write_text(out, "kitti", rgb, rng)
        if depth != "None":
            gt = kitti.load_depth(os.path.join(kitti_root, kitti.GT_FOLDER, depth))[0].numpy()
            write_relative(out, "kitti", rgb, gt[kitti.benchmark_box(*gt.shape)], rng)
    written["kitti"] = [rgb for rgb, depth, _ in lines if depth != "None"]

    void_root = os.path.join(out, "void")
    images = write_void(void_root, count, rng)
    for image in images:
        gt = np.asarray(Image.open(os.path.join(void_root, image.replace("/image/", "/ground_truth/"))),
                        np.float32) / 256.0
        write_text(out, "void", image, rng)
        write_relative(out, "void", image, gt, rng)
    written["void"] = images

    model = make_lanscale(seed, text_width)
    torch.save({"global_step": 0, "model": model.state_dict()}, os.path.join(out, "lanscale.pt"))
    rsa.save_scale_model(model, os.path.join(out, "lanscale.safetensors"), {"source": "synthetic.rsa_like",
                                                                            "seed": seed})
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write into")
    parser.add_argument("--count", type=int, default=3, help="images per dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text_width", type=int, default=rsa.TEXT_WIDTH, help="LanScale's input width (1024: RN50)")
    args = parser.parse_args(argv)
    written = write_dataset(args.out, args.count, args.seed, args.text_width)
    print(f"{', '.join(f'{len(v)} {k}' for k, v in written.items())} images with captions and relative maps "
          f"written under {args.out} ({cli.size_of(args.out)}); captions in {os.path.join(args.out, 'text')}, "
          f"LanScale in {os.path.join(args.out, 'lanscale.pt')}")


if __name__ == "__main__":
    main()
