"""KITTI's Eigen test split (697 images, 652 with ground truth), read as BTS, AdaBins and the DepthCLIP authors
read it.

    <data_path>/<date>/<drive>/image_02/data/<frame>.png                        raw RGB (about 1242x375)
    <gt_path>/<drive>/proj_depth/groundtruth/image_02/<frame>.png               uint16, depth * 256, 0 = none

The list (datasets/eigen_test_files_with_gt.txt) has a line `<rgb> <gt> <focal>` per image, gt being `None`
for the 45 images without annotated depth: those are skipped and reported. The RGB is cropped to KITTI's
benchmark box (the bottom 352 rows, the centred 1216 columns), scaled to [0, 1] and normalized; the ground
truth is kept whole (full frame, metres), padded to a common size for batching, with its true size alongside.
"""
import glob
import os

import torch
from PIL import Image

from .images import MODEL, DataError, depth_values, mean_std, normalized, open_image, read_list, select, to_rgb

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA_PATH = os.path.join(HERE, "KITTI")
DEFAULT_TEST_LIST = os.path.join(HERE, "eigen_test_files_with_gt.txt")
TRAIN_LIST = os.path.join(HERE, "eigen_train_files_with_gt.txt.gz")  # BTS's Eigen training split, 23,158 frames
# (cleinc/bts at 5e3406b, train_test_inputs/; Auty & Mikolajczyk's kitti_eigen_train_files_with_gt.txt is the same)
GT_FOLDER = "data_depth_annotated"  # the default --gt_path under --data_path (the authors' layout)

DEPTH_SCALE = 256.0  # PNG units per metre
CROP_SIZE = (352, 1216)  # rows, cols of KITTI's benchmark crop: the frame's bottom rows, centred columns; the input
CAP = 80.0  # metres: the largest depth scored (--cap)
CROPS = {  # --eval_crop: (top, bottom, left, right) as fractions of the scored frame
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),  # Garg et al. 2016, as BTS and the authors
    "eigen": (0.3324324, 0.91351351, 0.0359477, 0.96405229),  # Eigen et al. 2014, as BTS
    "none": None,
}
MAX_FRAME = (376, 1242)  # the largest raw frame of the split; smaller ones are padded with zeros (no depth)
CHECK_HINT = "python -m datasets.prepare_kitti --check says which drives are missing"


def drive_of(relative_path):
    """'2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png' -> '2011_09_26_drive_0002_sync'."""
    return relative_path.replace("\\", "/").split("/")[1]


def gt_of(rgb):
    """The annotated-depth path of a raw RGB path, as the list writes it."""
    _, drive, camera, _, frame = rgb.replace("\\", "/").split("/")
    return f"{drive}/proj_depth/groundtruth/{camera}/{frame}"


def read_pairs(data_path, gt_path, test_list, list_flag="--testfile_kitti"):
    """([(rgb, gt)] with ground truth, [rgb] without) from a list file or 'auto' (every RGB with its depth)."""
    if not os.path.isdir(data_path):
        raise DataError(f"no KITTI raw data at {data_path}: --data_path must hold <date>/<drive>/image_02/data; "
                        f"{CHECK_HINT}")
    if test_list == "auto":
        rgbs = sorted(os.path.relpath(p, data_path) for p in glob.glob(os.path.join(data_path, "*", "*", "image_02",
                                                                                     "data", "*.png")))
        pairs = [(rgb, gt_of(rgb)) for rgb in rgbs if os.path.isfile(os.path.join(gt_path, gt_of(rgb)))]
        if not pairs:
            raise DataError(f"no <date>/<drive>/image_02/data/*.png under {data_path} has its depth under {gt_path}; "
                            f"{CHECK_HINT}")
        return pairs, []
    entries = read_list(test_list, list_flag)
    pairs = [(rgb, gt) for _, rgb, gt in entries if gt != "None"]
    skipped = [rgb for _, rgb, gt in entries if gt == "None"]
    missing = [os.path.join(data_path, rgb) for rgb, _ in pairs if not os.path.isfile(os.path.join(data_path, rgb))]
    missing += [os.path.join(gt_path, gt) for _, gt in pairs if not os.path.isfile(os.path.join(gt_path, gt))]
    if missing:
        raise DataError(f"{len(missing)} files named in {os.path.basename(test_list)} are missing (first: "
                        f"{', '.join(missing[:2])}); {CHECK_HINT}, or use {list_flag} auto for the pairs present")
    return pairs, skipped


def benchmark_box(height, width):
    """(rows, cols) slices of the benchmark crop in a frame of this size: the bottom rows, the centred columns."""
    top, left = height - CROP_SIZE[0], (width - CROP_SIZE[1]) // 2
    return slice(top, top + CROP_SIZE[0]), slice(left, left + CROP_SIZE[1])


def load_rgb(path, normalize="imagenet"):
    """(3, 352, 1216) float32: the benchmark crop, /255, normalized."""
    image, _ = to_rgb(open_image(path), path)
    if image.height < CROP_SIZE[0] or image.width < CROP_SIZE[1]:
        raise DataError(f"{path} is {image.width}x{image.height}, smaller than KITTI's {CROP_SIZE[1]}x{CROP_SIZE[0]} "
                        f"benchmark crop; expected a raw KITTI frame (about 1242x375)")
    rows, cols = benchmark_box(image.height, image.width)
    return normalized(image.crop((cols.start, rows.start, cols.stop, rows.stop)), normalize)


def read_depth_raw(path):
    """(H, W) float32 values of a KITTI depth PNG (depth * 256, 0 = no measurement), or a DataError naming the file."""
    return depth_values(open_image(path), path, "KITTI depth must be a 16-bit PNG holding depth x 256")


def load_depth(path):
    """(1, H, W) float32 metres from a 16-bit PNG holding depth * 256; 0 = no measurement. Finite
    (images.depth_values); a tensor from elsewhere with NaN or +-inf in it loses those pixels in the scorers
    (calculate_error.score), not the image."""
    return torch.from_numpy(read_depth_raw(path) / DEPTH_SCALE)[None]


def check_frame(height, width, path):
    """A DataError if a depth map is larger than any KITTI frame (it could not be padded to MAX_FRAME)."""
    if height > MAX_FRAME[0] or width > MAX_FRAME[1]:
        raise DataError(f"{path} is {width}x{height}, larger than any KITTI frame ({MAX_FRAME[1]}x{MAX_FRAME[0]})")


def padded(depth, path):
    """(1, H, W) -> (1, 376, 1242): the frame in the top-left corner, zeros (no depth) around, so frames batch."""
    check_frame(*depth.shape[1:], path)
    frame = torch.zeros(1, *MAX_FRAME)
    frame[:, :depth.shape[1], :depth.shape[2]] = depth
    return frame


class KITTIEigen(torch.utils.data.Dataset):
    """Items (rgb (3, 352, 1216), gt (1, 376, 1242) metres padded with zeros, rgb path relative to data_path),
    and the true (height, width) of each frame in self.frame_size(index).

    gt_path defaults to <data_path>/data_depth_annotated. skipped: the list's images without ground truth.
    list_flag: the command-line flag that names the list, for messages.
    """

    input_size = CROP_SIZE  # what the model sees
    load_rgb = staticmethod(load_rgb)

    def __init__(self, data_path=DEFAULT_DATA_PATH, gt_path=None, test_list=DEFAULT_TEST_LIST, scenes=None,
                 limit=None, normalize="imagenet", with_rgb=True, list_flag="--testfile_kitti"):
        if normalize != MODEL:
            mean_std(normalize)
        self.root, self.gt_root = data_path, gt_path or os.path.join(data_path, GT_FOLDER)
        self.normalize, self.with_rgb = normalize, with_rgb
        pairs, self.skipped = read_pairs(self.root, self.gt_root, test_list, list_flag)
        self.pairs = select(pairs, scenes, limit, drive_of, "drive")

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        rgb, gt = self.pairs[index]
        pixels = load_rgb(os.path.join(self.root, rgb), self.normalize) if self.with_rgb else torch.empty(0)
        path = os.path.join(self.gt_root, gt)
        return pixels, padded(load_depth(path), path), rgb

    def frame_size(self, index):
        """(height, width) of the index-th ground truth (its RGB frame's size), read from the PNG's header."""
        with Image.open(os.path.join(self.gt_root, self.pairs[index][1])) as image:
            return image.height, image.width
