"""VOID-1500's test set as RSA evaluates it (eval.py --dataset VOID): RSA's third dataset, indoor and outdoor-ish
scenes from a phone-like camera (Wong et al., "Unsupervised Depth Completion From Visual Inertial Odometry", 2020).

    <data_path>/void_1500/data/<scene>/image/<timestamp>.png          640x480 RGB
    <data_path>/void_1500/data/<scene>/ground_truth/<timestamp>.png   uint16, metres x 256, 0 = no measurement

Read as RSA's code reads it (github.com/Adonis-galaxy/RSA at rsa.RSA_COMMIT): the 800 images of their
data_splits/void/test_image.txt, shipped here as lists/void_1500_test_image.txt, in its order (not sorted); each
ground truth is the image path with /image/ replaced by /ground_truth/ (their test_ground_truth.txt, line by line);
depth = PNG / 256 with values <= 0 set to 0 (eval_void/data_utils.load_depth_with_validity_map). Their README:
"Please use VOID-1500. The number indicates the number of point for depth completion, and it doesn't affect this
task" (only the sparse inputs differ between VOID-150/500/1500; the images and ground truth are the same).

Scored as RSA scores it (protocols.PROTOCOLS['void_rsa']): the whole frame, 0.2 < gt < 5 m, the prediction clamped to
[0.2, 5]. Without --relative, the same range through the suite's scoring (protocols.PROTOCOLS['void_range']).
"""
import os

import numpy as np
import torch

from .images import DataError, depth_values, open_image, resized_input
from .zeroshot import Protocol

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA_PATH = os.path.join(HERE, "VOID")
DEFAULT_TEST_LIST = os.path.join(HERE, "lists", "void_1500_test_image.txt")  # their data_splits/void/test_image.txt
DEPTH_SCALE = 256.0  # PNG units per metre
FRAME = (480, 640)  # rows, cols of every VOID image and ground truth
VALID_RANGE = (0.2, 5.0)  # metres: their change_to_void's min_depth_eval and max_depth_eval
LAYOUT = "void_1500/data/<scene>/image/*.png and void_1500/data/<scene>/ground_truth/*.png (VOID-1500)"
PROTOCOL = Protocol("VOID", "RSA", VALID_RANGE, VALID_RANGE, layout=LAYOUT)
WHERE = "VOID comes from github.com/alexklwong/void-dataset (void_1500.zip; docs/rsa.md)"


def ground_truth_of(image_path):
    """'void_1500/data/desktop2/image/1552625295.7828.png' -> '.../desktop2/ground_truth/1552625295.7828.png'."""
    return image_path.replace("/image/", "/ground_truth/")


def read_entries(root, listing=None):
    """[(image, ground truth)] paths relative to root in the list's order (their list names images only, one per
    line); a DataError naming what is missing."""
    listing = listing or DEFAULT_TEST_LIST
    if not os.path.isfile(listing):
        raise DataError(f"list {listing} does not exist; give a list of VOID image paths, one per line")
    with open(listing) as f:
        images = [line.split()[0].lstrip("/") for line in f if line.strip()]
    if not os.path.isdir(root):
        raise DataError(f"no VOID data at {root}: --data_path must hold {LAYOUT}; {WHERE}")
    entries = [(image, ground_truth_of(image)) for image in images]
    missing = [p for entry in entries for p in entry if not os.path.isfile(os.path.join(root, p))]
    if missing:
        raise DataError(f"{len(missing)} VOID files are missing under {root} (first: {', '.join(missing[:2])}); "
                        f"--data_path must hold {LAYOUT}; {WHERE}")
    return entries


def load_depth(path):
    """(480, 640) float32 metres, 0 where there is no measurement: PNG / 256, values <= 0 set to 0 (theirs). A
    DataError for a file that is not a 16-bit PNG of VOID's frame."""
    depth = depth_values(open_image(path), path, "VOID ground truth is a 16-bit PNG (metres x 256)") / DEPTH_SCALE
    if depth.shape != FRAME:
        raise DataError(f"{path} is {depth.shape[1]}x{depth.shape[0]}; VOID's ground truth is "
                        f"{FRAME[1]}x{FRAME[0]}")
    depth = depth.astype(np.float32)
    depth[depth <= 0] = 0.0
    return depth


def scene_of(relative_path):
    """'void_1500/data/desktop2/image/x.png' -> 'desktop2'."""
    parts = relative_path.replace("\\", "/").split("/")
    return parts[2] if len(parts) > 3 else parts[0]


class VOID(torch.utils.data.Dataset):
    """Items (rgb (3, h, w) normalized at the model's input size, gt (1, 480, 640) metres (0 = none), image path
    relative to the root) in the list's order; the model sees the image resized so its long side is long_side
    (multiples of the stride), as the suite's datasets do. with_rgb=False leaves the RGB undecoded (an empty
    tensor), for runs that do not read the pixels."""

    name, protocol = "VOID", PROTOCOL

    def __init__(self, root, listing=None, normalize="imagenet", long_side=544, stride=32, limit=None, with_rgb=True):
        self.root, self.with_rgb = root, with_rgb
        self.entries = read_entries(root, listing)[:limit] if limit else read_entries(root, listing)
        self.pairs = list(self.entries)
        self.normalize, self.long_side, self.stride = normalize, long_side, stride
        self.input_size = ("long side", long_side)

    def __len__(self):
        return len(self.entries)

    def load_rgb(self, path, normalize):
        """(3, h, w): the image resized bicubically so its long side is long_side (multiples of the stride)."""
        return resized_input(path, normalize, self.long_side, self.stride)

    def output_size(self, indices):
        return FRAME

    def __getitem__(self, index):
        image, depth = self.entries[index]
        gt = load_depth(os.path.join(self.root, depth))
        pixels = self.load_rgb(os.path.join(self.root, image), self.normalize) if self.with_rgb else torch.empty(0)
        return pixels, torch.from_numpy(gt)[None], image

