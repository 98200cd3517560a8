"""Relative depth from elsewhere, put into metres by RSA's language alignment or by a fit (eval.py and predict.py
--relative; docs/rsa.md).

    --relative npy:DIR     one .npy per image, mirroring the evaluated list as RSA's caption folders do:
                           DIR/<image path without its 4-character extension>.npy (eval.py); predict.py: a file
    --relative depthclip   DepthCLIP's own map (the --clip_model and prompt flags), a depth: inverted first
    --relative_kind        disparity (default: DPT, MiDaS and Depth Anything predict inverse depth) or depth
    --align language       RSA: LanScale (--scale_model) turns the image's caption (--captions, line 0, as their
                           evaluation) into a scale and shift, depth = 1 / (s * r + t) (rsa.metric_depth)
    --align median|lstsq|lstsq_disparity|none   the same maps aligned with the ground truth instead: median is
                           RSA's baseline, lstsq_disparity its "linear fit" upper bound (fits in inverse depth)

A map covers the frame the dataset is scored on: NYU and VOID 480x640 (the whole frame, as RSA evaluates), KITTI
the 352x1216 benchmark box (a full-frame map is cropped to it), the zero-shot suite its ground truth's size.
NYU, KITTI and VOID are scored by RSA's protocol (protocols.PROTOCOLS' *_rsa rows; eval.py --protocol rsa, the
default with --relative), the suite by its own.
"""
import os

import numpy as np
import torch

import options
import protocols
import rsa
from clip_runtime import FrozenCLIP
from datasets import captions, kitti, nyu, void
from datasets.images import resolve_normalization
from learned_prompts import prompts_from
from monoclip import MonoCLIP

ALIGN = "language"  # eval.py --align: RSA's


def run_name(args):
    """The results table's name of a --relative run: rsa (language), or the --align that put it into metres."""
    return {ALIGN: "rsa", "none": "relative"}.get(args.align, f"relative+{args.align}")


def npy_path(folder, image_path):
    """DIR/<image path minus its last 4 characters>.npy: the caption files' rule (datasets.captions.caption_path)."""
    return os.path.join(folder, image_path.lstrip("/")[:-4] + ".npy")


def read_map(path, kind, expected, where):
    """A relative map (H, W) float32 from a .npy ((H, W) or (1, H, W)); expected: the (rows, cols) it must have, or
    a tuple of such shapes. ValueError (one line naming where and what to do) when missing, unreadable, of another
    size, or not a map RSA's formula takes (rsa.check_relative)."""
    if not os.path.isfile(path):
        raise ValueError(f"{where}: no relative map {path}; write one .npy per image (DIR/<image path without "
                         f"extension>.npy, docs/rsa.md)")
    try:
        relative = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable .npy array ({str(error).splitlines()[0]})") from None
    if relative.ndim == 3 and relative.shape[0] == 1:
        relative = relative[0]
    shapes = expected if isinstance(expected[0], tuple) else (expected,)
    if relative.ndim != 2 or tuple(relative.shape) not in shapes:
        wanted = " or ".join(f"{w}x{h}" for h, w in shapes)
        got = "x".join(map(str, relative.shape[::-1])) if relative.ndim == 2 else f"of shape {relative.shape}"
        raise ValueError(f"{path}: the relative map is {got} but {where} is scored on {wanted} (width x height); "
                         f"resize it to the image's size (KITTI: its 352x1216 benchmark box or the full frame)")
    relative = relative.astype(np.float32)
    rsa.check_relative(relative, kind, path)
    return relative


def kind_of(args):
    """What the relative maps hold: DepthCLIP's own map is a depth; .npy maps hold --relative_kind."""
    return "depth" if args.relative[0] == options.RELATIVE_DEPTHCLIP else args.relative_kind


class Language:
    """RSA's scale and shift from captions: the caption encoder on a FrozenCLIP and a LanScale file.

    __call__(captions (B,) strings) -> (scale (B,), shift (B,)) float32 CPU tensors."""

    def __init__(self, scale_model, backbone, cache_dir=None):
        self.encoder = rsa.CaptionEncoder(backbone, cache_dir)
        self.path = scale_model
        self.model, self.settings = rsa.load_scale_model(scale_model, text_width=self.encoder.width)
        self.model.to(backbone.device)

    def __call__(self, texts):
        with torch.no_grad():
            scale, shift = self.model(self.encoder(texts))
        return scale.float().cpu(), shift.float().cpu()

    def config(self):
        return {"scale_model": os.path.abspath(self.path), "scale_model_settings": self.settings,
                "caption_clip": self.encoder.backbone.config()}


# ---------------------------------------------------------------- predict.py
class PhotoAlignment:
    """predict.py --relative: one caption's scale and shift (found once, printed) applied to each photo's map."""

    def __init__(self, args, model=None):
        self.source, self.location = args.relative
        self.kind = kind_of(args)
        if self.source == "npy" and not os.path.exists(self.location):
            raise ValueError(f"--relative npy:{self.location}: no such file or folder; give the image's .npy map")
        backbone = model.backbone if model is not None else FrozenCLIP(args.clip_model, device=args.device,
                                                                      precision=args.precision)
        scale, shift = Language(args.scale_model, backbone)([args.caption])
        self.scale, self.shift = scale.item(), shift.item()

    def map_of(self, path, single):
        """The .npy of a photo: the file given, or (a folder of photos) <folder>/<photo name minus extension>.npy."""
        if os.path.isdir(self.location):
            return os.path.join(self.location, os.path.splitext(os.path.basename(path))[0] + ".npy")
        if not single:
            raise ValueError(f"--relative npy:{self.location} is one map; for a folder of images give a folder of "
                             f"<image name>.npy maps")
        return self.location

    def depth(self, path, image, depthclip_depth=None, single=True):
        """(H, W) float32 metres of one photo (PIL image, its own size): 1 / (s * r + t) (rsa.metric_depth)."""
        if self.source == options.RELATIVE_DEPTHCLIP:
            relative = np.asarray(depthclip_depth, np.float32)
            rsa.check_relative(relative, self.kind, path)
        else:
            relative = read_map(self.map_of(path, single), self.kind, (image.height, image.width), f"image {path}")
        return rsa.metric_depth(torch.from_numpy(relative), self.scale, self.shift, self.kind).numpy()


# ---------------------------------------------------------------- eval.py
class Relative:
    """eval.py's --relative run: the dataset, the predictor and the scorer; rows carry each image's scale and
    shift (RSA's, or the fit's)."""

    def __init__(self, args):
        self.args = args
        self.source, self.location = args.relative
        self.kind = kind_of(args)
        self.align = args.align
        self.scales = {}  # index -> (scale, shift) of language alignment, for the rows
        self.language = None
        self.model = None
        if self.source == "npy" and not os.path.isdir(self.location):
            raise ValueError(f"--relative npy:{self.location}: no such folder; give the folder of .npy maps (one per "
                             f"image, mirroring the list)")
        self.caption_folder = None
        if self.align == ALIGN:
            root = args.captions or captions.DEFAULT_ROOT
            if not os.path.isdir(root):
                raise ValueError(f"--captions {root}: no such folder; {captions.HINT}")
            self.caption_folder = captions.split_folder(root, args.dataset, "test")

    @property
    def with_rgb(self):
        """Whether the images are read: DepthCLIP makes the relative maps; .npy maps need no pixels."""
        return self.source == options.RELATIVE_DEPTHCLIP

    def scored_with(self, r):
        """Takes eval.open_dataset's dataset; the results' config says RSA's protocol and the alignment."""
        self.dataset = r.dataset
        if r.protocol.name in protocols.RSA_ROWS:
            low, high = r.protocol.valid_range
            r.dataset_config["rsa_protocol"] = {
                "min_depth": low, "max_depth": high,
                "box": "kitti_benchmark" if r.protocol.truth_region == "kitti_box" else None,
                "crop": r.protocol.crop_fractions}
        r.dataset_config["align"] = self.align

    def frame(self, index):
        """(rows, cols) the index-th map covers; KITTI also accepts the full frame (cropped to the benchmark box)."""
        if self.args.dataset == "KITTI":
            return kitti.CROP_SIZE
        if self.args.dataset in ("NYU", "VOID"):
            return nyu.FRAME if self.args.dataset == "NYU" else void.FRAME
        return tuple(self.dataset.output_size([index]))

    def load(self, device):
        """Models: DepthCLIP for --relative depthclip, the caption encoder and LanScale for --align language."""
        backbone = None
        if self.source == options.RELATIVE_DEPTHCLIP:
            self.model = MonoCLIP.from_settings(self.args, prompts_from(vars(self.args)), device)
            self.dataset.normalize = resolve_normalization(self.args.normalize, self.model)
            self.dataset.stride = self.model.stride
            backbone = self.model.backbone
        if self.align == ALIGN:
            backbone = backbone or FrozenCLIP(self.args.clip_model, device=device, precision=self.args.precision)
            self.language = Language(self.args.scale_model, backbone, self.args.cache)

    def maps(self, rgb, files, indices):
        """(B, H, W) float32 relative maps of a batch (one size within a batch)."""
        if self.source == options.RELATIVE_DEPTHCLIP:
            with torch.inference_mode():
                depth = self.model.predict(rgb, not self.args.no_flip, self.frame(indices[0]))
            return depth[:, 0].float().cpu()
        out = []
        for file, index in zip(files, indices):
            frame = self.frame(index)
            shapes = (frame, self.dataset.frame_size(index)) if self.args.dataset == "KITTI" else frame
            relative = read_map(npy_path(self.location, file), self.kind, shapes, f"{self.args.dataset} image {file}")
            if relative.shape != frame:  # a full KITTI frame: its benchmark box
                relative = relative[kitti.benchmark_box(*relative.shape)]
            out.append(torch.from_numpy(relative))
        return torch.stack(out)

    def predict(self, rgb, files, indices):
        """eval.evaluate's predictor: [(B, 1, H, W)] metres (language) or the depth the fit aligns (1 / r for inverse
        depth, r for depth)."""
        relative = self.maps(rgb, files, indices)
        if self.align == ALIGN:
            texts = captions.get_text(self.caption_folder, files, "eval")
            scale, shift = self.language(texts)
            self.scales.update({i: (s, t) for i, s, t in zip(indices, scale.tolist(), shift.tolist())})
            return [rsa.metric_depth(relative, scale, shift, self.kind)[:, None]]
        return [(1 / relative if self.kind == "disparity" else relative)[:, None]]

    def fits(self, indices):
        """[(scale, shift)] that --align language found for these images in predict (calculate_error.score's fits),
        or None where the scorer fits --align itself."""
        return [self.scales.pop(i) for i in indices] if self.align == ALIGN else None

    def config(self):
        """The results' config of the relative source and its alignment."""
        source = {"relative": options.RELATIVE_DEPTHCLIP if self.source == options.RELATIVE_DEPTHCLIP else f"npy:{os.path.abspath(self.location)}",
                  "relative_kind": self.kind, "align": self.align}
        if self.model is not None:
            source["depthclip"] = self.model.config()
        if self.language is not None:
            source.update(self.language.config(), captions=os.path.abspath(self.caption_folder),
                          caption_line=0, rsa_commit=rsa.RSA_COMMIT)
        return source

