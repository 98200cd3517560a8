"""NYU Depth V2 `official_splits/test`, read as the DepthCLIP authors read it.

Per pair: the RGB is cropped to the box (60, 56, 604, 472), i.e. 544x416, scaled to [0, 1] and normalized
with ImageNet statistics (not CLIP's); the ground truth is the full 480x640 16-bit PNG / 1000, clipped
to [0, 10] metres.
"""
import functools
import glob
import os

import numpy as np
import torch

from .images import MODEL, DataError, depth_values, mean_std, normalized, open_image, read_list, select, to_rgb

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA_PATH = os.path.join(HERE, "NYU_Depth_V2")
DEFAULT_TEST_LIST = os.path.join(HERE, "nyudepthv2_test_files_with_gt.txt")
BTS_TRAIN_LIST = os.path.join(HERE, "nyudepthv2_train_files_with_gt.txt.gz")  # BTS's 24,231 pairs of the sync folder
# (cleinc/bts at 5e3406b, train_test_inputs/; Auty & Mikolajczyk's copy is the same file), gzipped
SPLIT_DIR = os.path.join("official_splits", "test")

RGB_CROP_BOX = (60, 56, 604, 472)  # PIL (left, top, right, bottom): the authors' 544x416 evaluation crop
INPUT_SIZE = (RGB_CROP_BOX[3] - RGB_CROP_BOX[1], RGB_CROP_BOX[2] - RGB_CROP_BOX[0])  # (416, 544): what the model sees
DEPTH_SCALE = 1000.0  # PNG units per metre
IMAGE_SIZE = (640, 480)  # PIL (width, height) of every NYU image
FRAME = (IMAGE_SIZE[1], IMAGE_SIZE[0])  # (480, 640) rows, cols: the ground truth's frame
PASTE_BOX = (RGB_CROP_BOX[1], RGB_CROP_BOX[3], RGB_CROP_BOX[0], RGB_CROP_BOX[2])  # rows, cols of the crop in the frame
EIGEN_CROP = (45, 471, 46, 601)  # rows, cols scored: the authors' calculate_error.py (crop_mask[45:471, 46:601]);
BTS_EIGEN_CROP = (45, 471, 41, 601)  # rows, cols: BTS's eval_with_pngs.py and most others, Auty & Mikolajczyk too
MAX_DEPTH = 10.0  # metres: the ground truth is clipped to it and only depth below it is scored
FOCAL = 518.8579  # pixels: the focal length (fx) of NYU's colour camera at 640x480, for point clouds
PREPARE_HINT = "build it with python -m datasets.prepare_nyu (docs/data.md)"


def split_folder(split):
    """'test' and 'train': official_splits/<split> (from the labeled .mat); 'sync': BTS's training folder (24,231
    frames of the raw videos, docs/data.md)."""
    if split not in ("test", "train", "sync"):
        raise ValueError(f"NYU split {split!r}: one of test, train (official_splits/train) or sync (BTS's)")
    return "sync" if split == "sync" else os.path.join("official_splits", split)


def read_pairs(data_path, test_list, split="test", list_flag="--testfile_nyu"):
    """Sorted (rgb, depth) paths relative to <data_path>/<split_folder(split)>, from a list file or 'auto'."""
    root = os.path.join(data_path, split_folder(split))
    if not os.path.isdir(root):
        hint = "unzip BTS's sync.zip there (docs/data.md)" if split == "sync" else PREPARE_HINT
        raise DataError(f"no NYU {split} split at {root}: --data_path must hold {split_folder(split)}; {hint}")
    if test_list == "auto":
        pairs = []
        for rgb in sorted(glob.glob(os.path.join(root, "*", "rgb_*.jpg"))):
            depth = os.path.join(os.path.dirname(rgb), os.path.basename(rgb).replace("rgb_", "sync_depth_")[:-4] + ".png")
            if os.path.isfile(depth):
                pairs.append((os.path.relpath(rgb, root), os.path.relpath(depth, root)))
        if not pairs:
            raise DataError(f"no <scene>/rgb_*.jpg with a sync_depth_*.png beside it under {root}; {PREPARE_HINT}")
        return pairs
    pairs = [(rgb, depth) for _, rgb, depth in sorted(read_list(test_list, list_flag))]  # sorted, as theirs
    missing = [p for pair in pairs for p in pair if not os.path.isfile(os.path.join(root, p))]
    if missing:
        raise DataError(f"{len(missing)} files named in {os.path.basename(test_list)} are missing under {root} "
                        f"(first: {', '.join(missing[:3])}); use {list_flag} auto (test_list='auto' in "
                        f"Python) to read the pairs present")
    return pairs


def scene_of(relative_path):
    """'bathroom/rgb_00045.jpg' -> 'bathroom'."""
    return relative_path.replace("\\", "/").split("/")[0]


def _open(path):
    image = open_image(path)
    if image.size != IMAGE_SIZE:
        raise DataError(f"{path} is {image.size[0]}x{image.size[1]}; NYU images are 640x480 ({PREPARE_HINT})")
    return image


def load_rgb(path, normalize="imagenet", box=RGB_CROP_BOX):
    """(3, 416, 544) float32: the authors' crop (box=None: the whole 480x640 frame), /255, normalized. Grayscale,
    RGBA and palette files become RGB."""
    image = to_rgb(_open(path), path)[0]
    return normalized(image.crop(box) if box else image, normalize)


def read_depth_mm(path):
    """(480, 640) float32 millimetres of a NYU depth PNG (0 = missing), or a DataError naming the file."""
    return depth_values(_open(path), path, "NYU depth must be a 16-bit grayscale PNG in millimetres")


def depth_metres(millimetres, clip=True):
    """(..., H, W) millimetres -> float32 metres tensor, clipped to [0, 10] (clip=False: as stored)."""
    depth = np.asarray(millimetres, dtype=np.float32) / DEPTH_SCALE
    return torch.from_numpy(np.clip(depth, 0, MAX_DEPTH) if clip else depth)


def load_depth(path, clip=True):
    """(1, 480, 640) float32 metres from a 16-bit PNG in millimetres, clipped to [0, 10] (clip=False: as stored);
    0 = missing. Finite (images.depth_values); a tensor from elsewhere with NaN or +-inf in it loses those pixels
    in the scorer (calculate_error.score), not the image."""
    return depth_metres(read_depth_mm(path), clip)[None]


def paste_into_frame(pred):
    """(..., 416, 544) tensor -> (..., 480, 640): the prediction placed where its crop came from (PASTE_BOX), zeros
    around, as the authors' evaluation and pictures place it."""
    top, bottom, left, right = PASTE_BOX
    frame = pred.new_zeros(*pred.shape[:-2], *FRAME)
    frame[..., top:bottom, left:right] = pred
    return frame


class NYUDepthV2(torch.utils.data.Dataset):
    """Items (rgb (3, 416, 544), gt (1, 480, 640) metres, rgb path relative to official_splits/test).

    test_list: a list file (default: the 654 pairs of the paper) or 'auto' for every pair on disk.
    scenes: keep only these scene folders. limit: keep the first N pairs (after sorting and scenes).
    normalize: a name of NORMALIZATIONS or a (mean, std) pair; 'model' must be replaced by the model's pair
    (dataset.normalize = model.mean_std) before items are read.
    with_rgb=False leaves the RGB undecoded (an empty tensor in its place), for runs that do not read the pixels:
    baselines, and eval.py's --cache, which decodes (with load_rgb) only the images it has not stored.
    split: 'test' (official_splits/test), 'train' (the 795 labeled training images, train.py's default) or 'sync'
    (BTS's 24,231 training frames, <data_path>/sync).
    list_flag: the command-line flag that names the list, for messages.
    whole_frame=True: the whole 480x640 RGB goes in and the ground truth is not clipped (Auty & Mikolajczyk's
    protocol, whose dataloader reads NYU so); the default is the DepthCLIP authors' crop and clipping.
    """

    load_rgb = staticmethod(load_rgb)

    def __init__(self, data_path=DEFAULT_DATA_PATH, test_list=DEFAULT_TEST_LIST, scenes=None, limit=None,
                 normalize="imagenet", with_rgb=True, whole_frame=False, split="test", list_flag="--testfile_nyu"):
        if normalize != MODEL:
            mean_std(normalize)  # a bad name fails here, not in the first item
        self.root = os.path.join(data_path, split_folder(split))
        self.normalize, self.with_rgb = normalize, with_rgb
        self.box = None if whole_frame else RGB_CROP_BOX
        self.input_size = FRAME if whole_frame else INPUT_SIZE  # what the model sees
        self.pairs = select(read_pairs(data_path, test_list, split, list_flag), scenes, limit, scene_of)
        if whole_frame:
            self.load_rgb = functools.partial(load_rgb, box=None)

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        rgb, depth = self.pairs[index]
        pixels = load_rgb(os.path.join(self.root, rgb), self.normalize, self.box) if self.with_rgb else torch.empty(0)
        return pixels, load_depth(os.path.join(self.root, depth), clip=self.box is not None), rgb
