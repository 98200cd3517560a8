"""The zero-shot suite beyond NYU and KITTI (eval.py --dataset eth3d|scannet|diode|ibims|sunrgbd), each dataset read
as the source named with it reads it: its file layout, depth decoding, valid range, masks and crop.

    Marigold (prs-eth/Marigold at b1dffaa: src/dataset/*_dataset.py, data_split/, script/depth/eval/*.sh)
        ETH3D    454 images, 6048x4032; depth: raw float32 files of 4032x6048, inf = none; valid (1e-5, inf)
        ScanNet  800 images (their scannet_val_sampled_list_800_1); depth: 16-bit PNG / 1000; valid (1e-3, 10)
        DIODE    validation, 325 indoor + 446 outdoor; depth: .npy metres; valid: its _depth_mask.npy (and, our
                 extension, a finite depth); predictions clipped to (0.6, 350)
    ZoeDepth (isl-org/ZoeDepth at d87f17b: zoedepth/data/ibims.py, sun_rgbd_loader.py, utils/config.py, misc.py)
        iBims-1  100 images listed in its own imagelist.txt; depth: 16-bit PNG x 50 / 65535 m; invalid where
                 mask_invalid or mask_transp is 0; scored where 0 < gt < 10 inside rows 45:471, cols 41:601
        SUN RGB-D every rgb/rgb/*.jpg of its test folder with gt/gt/*.png; depth: PNG / 1000, above 8 m none;
                 scored where 0 < gt < 8 inside rows 45:471, cols 41:601 (ZoeDepth's fixed box, whatever the size)

Each split list (Marigold's, file names as theirs) ships in datasets/lists/; iBims and SUN RGB-D are listed by
the data itself, as ZoeDepth reads them. The model sees each image resized so its long side is --long_side (544,
NYU's evaluated width, as photos are: images.model_input_size) and its depth is upsampled bilinearly
(align_corners=True, as evaluated) to the ground truth's size, where it is scored. No pixel of NaN or +-inf depth
is scored, and an image with no scored pixel is left out of the means and listed under `unscored`, as on NYU and
KITTI (read_ground_truth).
"""
import glob
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .images import DataError, depth_values, open_image, read_list, resized_input
from .nyu import BTS_EIGEN_CROP

HERE = os.path.dirname(os.path.abspath(__file__))
LISTS = os.path.join(HERE, "lists")
MARIGOLD_DATA = "https://share.phys.ethz.ch/~pf/bingkedata/marigold/evaluation_dataset"  # their README's server
ZOEDEPTH_BOX = BTS_EIGEN_CROP  # rows 45:471, cols 41:601: ZoeDepth's "eigen_crop" for every non-KITTI dataset
# (misc.py), BTS's numbers


@dataclass(frozen=True)
class Protocol:
    """One dataset as its source evaluates it."""
    name: str  # eval.py --dataset, upper case
    source: str  # whose reading and scoring this is
    valid_range: tuple  # (min, max) metres: ground truth strictly inside is scored (DIODE: its mask alone)
    clip: tuple  # (min, max) metres: the (aligned) prediction is clipped to this before scoring
    box: tuple = None  # (top, bottom, left, right) pixel rows/cols scored, or None for the whole image
    align_max_resolution: int = None  # Marigold's --alignment_max_res for this dataset (ETH3D: 1024)
    archive: str = None  # the source's download, relative to its server
    layout: str = ""  # what --data_path must hold, for messages


PROTOCOLS = {
    "ETH3D": Protocol("ETH3D", "Marigold", (1e-5, float("inf")), (1e-5, float("inf")), align_max_resolution=1024,
                      archive="eth3d/eth3d.tar", layout="rgb/<scene>/images/dslr_images/*.JPG and "
                      "depth/<scene>_dslr_depth/<scene>/ground_truth_depth/dslr_images/*.JPG (Marigold's eth3d.tar)"),
    "SCANNET": Protocol("SCANNET", "Marigold", (1e-3, 10.0), (1e-3, 10.0),
                        archive="scannet/scannet_val_sampled_800_1.tar",
                        layout="<scene>/color/*.jpg and <scene>/depth/*.png (Marigold's "
                        "scannet_val_sampled_800_1.tar)"),
    "DIODE": Protocol("DIODE", "Marigold", None, (0.6, 350.0), archive="diode/diode_val.tar",
                      layout="indoors/ and outdoor/<scene>/<scan>/*.png, *_depth.npy, *_depth_mask.npy (DIODE's val)"),
    "IBIMS": Protocol("IBIMS", "ZoeDepth", (0.0, 10.0), (0.0, 10.0), box=ZOEDEPTH_BOX,
                      layout="imagelist.txt, rgb/, depth/, mask_invalid/, mask_transp/ (iBims-1 core)"),
    "SUNRGBD": Protocol("SUNRGBD", "ZoeDepth", (0.0, 8.0), (0.0, 8.0), box=ZOEDEPTH_BOX,
                        layout="rgb/rgb/*.jpg and gt/gt/*.png (ZoeDepth's SUN RGB-D test folder)"),
}
ETH3D_SHAPE = (4032, 6048)  # rows, cols of every ETH3D depth file (Marigold's ETH3DDepthDataset)
DIODE_SPLITS = ("all", "indoor", "outdoor")
SUNRGBD_CAP = 8.0  # metres: ZoeDepth's loader marks deeper ground truth as none


def default_list(name, diode_split="all"):
    """The shipped split list of a Marigold dataset; None for those the data lists itself."""
    files = {"ETH3D": "eth3d_filename_list.txt", "SCANNET": "scannet_val_sampled_list_800_1.txt",
             "DIODE": f"diode_val_{diode_split}_filename_list.txt"}
    return os.path.join(LISTS, files[name]) if name in files else None


def read_entries(name, root, listing=None):
    """[(rgb, depth, mask or None)] paths relative to root, in the list's (or ZoeDepth's) order; a DataError naming
    what is missing."""
    protocol = PROTOCOLS[name]
    if not os.path.isdir(root):
        raise DataError(f"no {name} data at {root}: --data_path must hold {protocol.layout}; "
                        f"python -m datasets.prepare_zeroshot {name.lower()} --check (docs/data.md)")
    if name == "IBIMS":
        with open(require(os.path.join(root, "imagelist.txt"), name)) as f:
            names = f.read().split()
        entries = [(f"rgb/{n}.png", f"depth/{n}.png", (f"mask_invalid/{n}.png", f"mask_transp/{n}.png"))
                   for n in names]
    elif name == "SUNRGBD":
        rgbs = sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "rgb", "rgb", "*")))
        entries = [(rgb, rgb.replace("rgb/rgb", "gt/gt").replace("jpg", "png"), None) for rgb in rgbs]
    else:
        lines = read_list(listing or default_list(name), "--testfile")
        entries = [(rgb, depth, line.split()[2] if name == "DIODE" else None) for line, rgb, depth in lines]
    if not entries:
        raise DataError(f"no {name} images under {root}: --data_path must hold {protocol.layout}")
    missing = [p for entry in entries for p in files_of(entry) if not os.path.isfile(os.path.join(root, p))]
    if missing:
        raise DataError(f"{len(missing)} {name} files are missing under {root} (first: {', '.join(missing[:2])}); "
                        f"python -m datasets.prepare_zeroshot {name.lower()} --check")
    return entries


def files_of(entry):
    rgb, depth, mask = entry
    return [rgb, depth, *((mask,) if isinstance(mask, str) else mask or ())]


def require(path, name):
    if not os.path.isfile(path):
        raise DataError(f"{path} is missing: {name} is listed by it; python -m datasets.prepare_zeroshot "
                        f"{name.lower()} --check")
    return path


def read_ground_truth(name, root, entry):
    """(gt (H, W) metres, float32, or float64 where the source decodes so (ZoeDepth's), scored (H, W) bool): the
    source's decoding, masks, valid range and box. A DataError names a file of the wrong type or shape.

    A pixel whose depth is NaN or +-inf is never scored. Where the source compares with a range (ETH3D, ScanNet,
    iBims-1, SUN RGB-D) its comparisons already leave such pixels out; the PNGs cannot hold them anyway. DIODE's
    source scores its mask alone (Marigold's DIODEDepthDataset), so a non-finite depth under a true mask would
    reach the metrics there: leaving it out is our extension. An image left with no scored pixel is returned
    (scored all False), not refused: eval.py leaves it out of the means and lists it under `unscored`, as for
    NYU."""
    _, depth_file, mask_file = entry
    path = os.path.join(root, depth_file)
    protocol = PROTOCOLS[name]
    decoded = np.float64 if protocol.source == "ZoeDepth" else np.float32  # as each source's loader decodes
    if name == "ETH3D":
        raw = np.fromfile(path, dtype=np.float32)
        if raw.size != ETH3D_SHAPE[0] * ETH3D_SHAPE[1]:
            raise DataError(f"{path} holds {raw.size} float32 values, not {ETH3D_SHAPE[0]}x{ETH3D_SHAPE[1]}: ETH3D "
                            f"depth is a raw float32 file of 4032x6048")
        gt = raw.reshape(ETH3D_SHAPE).copy()
        gt[gt == np.inf] = 0.0  # no measurement, as Marigold decodes it (NaN and -inf fail its range instead)
    elif name == "DIODE":
        gt = load_npy(path).squeeze()
    elif name == "IBIMS":
        gt = depth_values(open_image(path), path, "iBims-1 depth is a 16-bit PNG (x 50 / 65535 m)").astype(
            decoded) * 50.0 / 65535
        masks = [np.asarray(open_image(os.path.join(root, m))) for m in mask_file]
        for m, file in zip(masks, mask_file):
            check_shape(m, gt, os.path.join(root, file))
        gt = np.where(masks[0] * masks[1], gt, -1)  # ZoeDepth's iBims: -1 where masked
    else:
        what = "ScanNet" if name == "SCANNET" else "SUN RGB-D"
        gt = depth_values(open_image(path), path, f"{what} depth is a 16-bit PNG in millimetres").astype(
            decoded) / 1000.0
        if name == "SUNRGBD":
            gt[gt > SUNRGBD_CAP] = -1
    gt = np.asarray(gt, dtype=decoded)
    if name == "DIODE":
        mask_path = os.path.join(root, mask_file)
        scored = load_npy(mask_path).squeeze().astype(bool)
        check_shape(scored, gt, mask_path)
    else:
        low, high = protocol.valid_range
        scored = (gt > low) & (gt < high)
    scored &= np.isfinite(gt)  # a no-op after the range comparisons; DIODE's mask alone would let them through
    if protocol.box:
        top, bottom, left, right = protocol.box
        box = np.zeros_like(scored)
        box[top:bottom, left:right] = True
        scored &= box
    return gt, scored


def load_npy(path):
    try:
        return np.load(path)
    except (OSError, ValueError) as error:
        raise DataError(f"{path} is not a readable .npy array ({error})") from None


def check_shape(mask, gt, path):
    if mask.shape != gt.shape:
        raise DataError(f"{path} is {mask.shape[-1]}x{mask.shape[0]}, its depth {gt.shape[-1]}x{gt.shape[0]}: a mask "
                        f"must be the size of its depth")


def scene_of(relative_path):
    """The first folder that names a scene: ETH3D's rgb/<scene>/..., ScanNet's <scene>/..., DIODE's indoors|outdoor."""
    parts = relative_path.replace("\\", "/").split("/")
    return parts[1] if parts[0] == "rgb" and len(parts) > 2 else parts[0]


class ZeroShot(torch.utils.data.Dataset):
    """Items (rgb (3, h, w) normalized at the model's input size, gt (1, H, W) metres with 0 wherever the source does
    not score, rgb path relative to the root) of one dataset of PROTOCOLS, in its list's order; one image a batch,
    the sizes differ.

    listing: another list in the source's format (Marigold's datasets). stride: the model's (eval.py sets it once
    the model is loaded), for the input size.
    """

    def __init__(self, name, root, listing=None, normalize="imagenet", long_side=544, stride=32, limit=None):
        self.name, self.root, self.protocol = name, root, PROTOCOLS[name]
        self.entries = read_entries(name, root, listing)[:limit] if limit else read_entries(name, root, listing)
        self.pairs = [(rgb, depth) for rgb, depth, _ in self.entries]
        self.normalize, self.long_side, self.stride = normalize, long_side, stride
        self.input_size = ("long side", long_side)  # sizes differ by image (output_size); the cache's key notes it

    def __len__(self):
        return len(self.entries)

    def load_rgb(self, path, normalize):
        """(3, h, w): the image resized bicubically so its long side is long_side (multiples of the stride)."""
        return resized_input(path, normalize, self.long_side, self.stride)

    def output_size(self, indices):
        """(rows, cols) of the first index's ground truth (read from its header, or its .npy's)."""
        _, depth_file, _ = self.entries[indices[0]]
        path = os.path.join(self.root, depth_file)
        if self.name == "ETH3D":
            return ETH3D_SHAPE
        if self.name == "DIODE":
            return tuple(np.load(path, mmap_mode="r").shape[:2])
        with Image.open(path) as image:
            return image.height, image.width

    def __getitem__(self, index):
        rgb_file = os.path.join(self.root, self.entries[index][0])
        gt, scored = read_ground_truth(self.name, self.root, self.entries[index])
        return self.load_rgb(rgb_file, self.normalize), torch.from_numpy(np.where(scored, gt, 0))[None], \
            self.entries[index][0]
