"""What every dataset (and predict.py) shares: test lists, decoding, the RGB normalizations and their inverse."""
import os

import numpy as np
import torch
from PIL import Image

from clip.clip import CLIP_MEAN, CLIP_STD

NORMALIZATIONS = {  # --normalize: (mean, std) per RGB channel
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # the authors' choice
    "clip": (CLIP_MEAN, CLIP_STD),  # OpenAI CLIP's training statistics
}
MIN_DEPTH = 1e-3  # metres: ground truth at or below this is no measurement; predictions and truth are clamped to it
MODEL = "model"  # --normalize model: the loaded model's own statistics (MonoCLIP.mean_std), known once it is loaded
MODE_NAMES = {"1": "1-bit black-and-white", "L": "8-bit grayscale", "LA": "8-bit grayscale with alpha",
              "P": "8-bit palette", "RGB": "8-bit RGB", "RGBA": "8-bit RGBA", "CMYK": "CMYK", "F": "32-bit float",
              "I": "32-bit integer", "I;16": "16-bit grayscale"}


class DataError(ValueError):
    """A dataset folder, list or file that cannot be evaluated as it is."""


def describe_mode(image):
    """'8-bit grayscale' for PIL's 'L', and so on."""
    return MODE_NAMES.get(image.mode, f"{image.mode}-mode")


def depth_values(image, path, expected):
    """A 16-bit depth PNG's raw values as float32 (H, W), or a DataError naming the file and what it should be."""
    if image.mode not in ("I;16", "I;16B", "I"):
        raise DataError(f"{path} is {describe_mode(image)}, not 16-bit: {expected}")
    return np.asarray(image, dtype=np.float32)


def open_image(path):
    """A fully decoded PIL image, or a DataError naming the file (truncated files are not half-read)."""
    try:
        image = Image.open(path)
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read {path} ({error}); the file is corrupt or truncated: replace it") from None
    return image


def mean_std(normalize):
    """A normalization's (mean, std): a name of NORMALIZATIONS, or a (mean, std) pair as it is."""
    if isinstance(normalize, (tuple, list)):
        return tuple(normalize)
    if normalize == MODEL:
        raise ValueError("normalize='model' stands for the CLIP model's own mean and std: give them as (mean, std), "
                         "e.g. MonoCLIP(...).mean_std")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalize!r}; choose one of {', '.join(NORMALIZATIONS)}, "
                         f"or a (mean, std) pair")
    return NORMALIZATIONS[normalize]


def normalized(image, normalize="imagenet"):
    """PIL RGB image -> (3, H, W) float32: /255, then (x - mean) / std per channel with the normalization's pair."""
    mean, std = mean_std(normalize)
    rgb = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (rgb - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def unnormalize(rgb, normalize="imagenet"):
    """(3, H, W) normalized tensor -> (H, W, 3) uint8, undoing `normalized` (for pictures)."""
    mean, std = mean_std(normalize)
    rgb = rgb.cpu().float() * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return (rgb.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def select(pairs, scenes, limit, scene_of, what="scene"):
    """The (rgb, depth) pairs of the named scenes (all if None), then the first `limit` (all if None)."""
    if scenes:
        present = {scene_of(rgb) for rgb, _ in pairs}
        unknown = [s for s in scenes if s not in present]
        if unknown:
            raise DataError(f"{what}(s) {', '.join(unknown)} not in the test list; present: {', '.join(sorted(present))}")
        pairs = [pair for pair in pairs if scene_of(pair[0]) in scenes]
    return pairs[:limit] if limit else pairs


def read_list(test_list, flag):
    """[(line, rgb, depth)] of a test list's non-empty lines, each 'rgb depth [more fields]'. flag: the command-line
    flag that names the list, for messages."""
    if not os.path.isfile(test_list):
        raise DataError(f"test list {test_list} does not exist; give a list file or {flag} auto (test_list='auto' "
                        f"in Python)")
    entries = []
    with open(test_list) as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if fields and len(fields) < 2:
                raise DataError(f"{test_list}, line {number}: '{line.strip()}' should name an RGB file and a depth "
                                f"file, separated by a space")
            if fields:
                entries.append((line.strip(), fields[0], fields[1]))
    return entries
