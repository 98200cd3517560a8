"""What every dataset and photo reader shares: test lists, decoding any image mode to the RGB a viewer shows,
the RGB normalizations and their inverse, the smallest depth that counts, and the size an image of any size enters
the model at."""
import gzip
import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from clip.clip import CLIP_MEAN, CLIP_STD

NORMALIZATIONS = {  # --normalize: (mean, std) per RGB channel
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # the authors' choice
    "clip": (CLIP_MEAN, CLIP_STD),  # OpenAI CLIP's training statistics
}
MIN_DEPTH = 1e-3  # metres: ground truth at or below this is no measurement; predictions and truth are clamped to it
MODEL = "model"  # --normalize model: the loaded model's own statistics (MonoCLIP.mean_std), known once it is loaded
MODE_NAMES = {"1": "1-bit black-and-white", "L": "8-bit grayscale", "LA": "8-bit grayscale with alpha",
              "P": "8-bit palette", "RGB": "8-bit RGB", "RGBA": "8-bit RGBA", "CMYK": "CMYK", "F": "32-bit float",
              "I": "32-bit integer", "I;16": "16-bit grayscale", "I;16B": "16-bit grayscale (big-endian)"}
ALPHA_BACKGROUND = (255, 255, 255)  # transparent pixels are shown over white, as an image viewer does


class DataError(ValueError):
    """A dataset folder, list or file that cannot be evaluated as it is."""


def describe_mode(image):
    """'8-bit grayscale' for PIL's 'L', and so on."""
    return MODE_NAMES.get(image.mode, f"{image.mode}-mode")


def depth_values(image, path, expected):
    """A 16-bit depth PNG's raw values as float32 (H, W), or a DataError naming the file and what it should be.
    Integer modes only, so every value is finite: no PNG reader built on it hands on NaN or +-inf."""
    if image.mode not in ("I;16", "I;16B", "I"):
        raise DataError(f"{path} is {describe_mode(image)}, not 16-bit: {expected}")
    return np.asarray(image, dtype=np.float32)


def open_image(path):
    """A fully decoded PIL image, or a DataError naming the file and what is wrong with it: missing, a broken
    link, a folder, unreadable, not an image, too large to open safely, corrupt or truncated (never half-read)."""
    if not os.path.exists(path):
        if os.path.islink(path):
            raise DataError(f"cannot read {path}: it is a link to {os.readlink(path)}, which does not exist; fix or "
                            f"remove the link")
        raise DataError(f"cannot read {path}: it does not exist")
    if os.path.isdir(path):
        raise DataError(f"cannot read {path}: it is a folder, not an image")
    try:
        image = Image.open(path)
        image.load()
    except PermissionError:
        raise DataError(f"cannot read {path}: permission denied; check its permissions") from None
    except Image.DecompressionBombError as error:
        raise DataError(f"cannot read {path}: too large to open safely ({error}); resize it first") from None
    except UnidentifiedImageError:
        raise DataError(f"cannot read {path}: not an image Pillow can read (unknown format); skip or convert "
                        f"it") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"cannot read {path} ({error}); the file is corrupt or truncated: replace it") from None
    return image


def to_rgb(image, path="image", background=ALPHA_BACKGROUND):
    """Any PIL image -> (8-bit RGB image, whether alpha was flattened), the picture a viewer shows.

    16-bit grayscale (I;16, I;16B, ...; and 'I' with values in 0..65535, as Pillow reads 16-bit files) is scaled by
    255/65535; 32-bit float ('F') is read as 0..1; transparency (RGBA, LA, PA, a palette's transparent index) is
    flattened over `background`; every other mode is Pillow's own conversion. Values outside those ranges are a
    DataError naming the file, not a silently saturated picture.
    """
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        top = 1.0 if mode == "F" else 65535.0
        if not (np.isfinite(values).all() and low >= 0 and high <= top):
            raise DataError(f"{path} is {describe_mode(image)} with values {low:g}..{high:g}, outside 0..{top:g}: "
                            f"convert it to an 8-bit image first")
        gray = Image.fromarray(np.round(values * (255.0 / top)).astype(np.uint8))
        return gray.convert("RGB"), False
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (*background, 255))
        flat.alpha_composite(rgba)
        return flat.convert("RGB"), True
    return image.convert("RGB"), False


def resolve_normalization(normalize, model):
    """--normalize resolved once the model is loaded: a NORMALIZATIONS name as it is, or for 'model' the model's own
    (mean, std) (MonoCLIP.mean_std)."""
    return model.mean_std if normalize == MODEL else normalize


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
    """[(line, rgb, depth)] of a list's non-empty lines, each 'rgb depth [more fields]', paths relative to the data
    folder: a leading '/' (BTS's NYU training list writes '/kitchen_0028b/rgb_00045.jpg') is dropped, as BTS's
    remove_leading_slash does. A .gz list is read decompressed (the repository ships its large lists so). flag: the
    command-line flag that names the list, for messages."""
    if not os.path.isfile(test_list):
        raise DataError(f"list {test_list} does not exist; give a list file or {flag} auto (test_list='auto' "
                        f"in Python)")
    entries = []
    with (gzip.open if test_list.endswith(".gz") else open)(test_list, "rt") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if fields and len(fields) < 2:
                raise DataError(f"{test_list}, line {number}: '{line.strip()}' should name an RGB file and a depth "
                                f"file, separated by a space")
            if fields:
                entries.append((line.strip(), fields[0].lstrip("/"), fields[1].lstrip("/")))
    return entries


def model_input_size(width, height, long_side, stride):
    """(width, height) scaled so the long side is long_side, each rounded to a multiple of stride (at least one)."""
    scale = long_side / max(width, height)
    return tuple(max(stride, round(side * scale / stride) * stride) for side in (width, height))


def resized_input(path, normalize, long_side, stride):
    """(3, h, w) normalized: an image file resized bicubically so its long side is long_side pixels, both sides
    multiples of stride (the zero-shot suite's and VOID's model input, as photos.model_input sizes a photo)."""
    image = to_rgb(open_image(path), path)[0]
    return normalized(image.resize(model_input_size(*image.size, long_side, stride), Image.BICUBIC), normalize)
