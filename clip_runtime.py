"""A frozen CLIP made ready to run DepthCLIP's two towers: everything about running the model that is not the method.

    backbone = FrozenCLIP("RN50", device="auto", precision="auto")
    backbone.model          the CLIP (OpenAI's, clip/; or open_clip's through open_clip_adapter.py), frozen
    backbone.tokenize       its tokenizer;  backbone.mean_std: the (mean, std) of its training images
    backbone.stride         input pixels per patch (32 for a ResNet, the patch size for a ViT)

What it decides: the device (CUDA when present) and precision (fp16 on CUDA, as the authors ran it; fp32 on a
CPU; bf16 under autocast on request); speed-ups that keep the numbers (BatchNorm folded into its convolution and
channels_last, both only where BatchNorm runs in eval mode; one view per pass on a CPU, never in train mode); and
the settings that results files and the feature cache record
(checkpoint SHA256, precision, device). monoclip.py holds the method and asks this module only to load and run.
"""
import contextlib
import functools
import hashlib
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

import clip
import open_clip_adapter
from clip.clip import CLIP_MEAN, CLIP_STD, checkpoint_sha256
from downloads import sha256_of_file
from graph_runtime import AUTO_ORDER, CHECK_METRES, RUNTIMES, GraphTower, check_image, version

PRECISIONS = ("auto", "fp32", "fp16", "bf16")  # auto: fp16 on CUDA (the authors' setting), fp32 on CPU


class FrozenCLIP:
    """A CLIP loaded by name or path, frozen (no gradients, eval mode) on its device in its precision.

    name: an OpenAI CLIP name (RN50, ViT-B/16, ...; downloaded with a SHA256 check), a checkpoint path, or
    'open_clip:<model>[@<pretrained>]'. visual_state: BatchNorm statistics to load into the image tower first.
    fold=False keeps BatchNorm layers (train.py --bn train runs them in train mode). Raises ValueError for a
    device or precision this machine cannot run, RuntimeError for a checkpoint that cannot be read (one line
    naming the file).
    """

    def __init__(self, name, device=None, precision="auto", download_root=None, visual_state=None, fold=True):
        mismatch = open_clip_adapter.torchvision_mismatch()
        if mismatch:
            print(f"warning: {mismatch}", file=sys.stderr)
        self.name = name
        self.device = pick_device(device)
        self.precision = pick_precision(precision, self.device)
        self.model, self.tokenize, self.mean_std = load_clip(name, self.device, download_root)
        self.visual_state_sha256 = load_visual_state(self.model.visual, visual_state) if visual_state else None
        if self.precision != "fp16":
            self.model.float()  # clip.load gives fp16 weights on CUDA; bf16 runs fp32 weights under autocast
        self.model.requires_grad_(False)
        if fold and self.precision != "fp16" and "trunk" in self.model.dense_features:
            fold_batchnorm(self.model.visual)  # ~12% faster on a CPU; outputs move by float rounding (~1e-6 m)
        if fold:  # faster convolutions, same numbers in eval mode; BatchNorm's batch statistics in train mode (train.py
            # --bn train) come out ~100x less precise in channels_last on a CPU, so that tower stays contiguous, as theirs
            self.model.visual.to(memory_format=torch.channels_last)
        self.folded = fold
        self.image_tower, self.runtime = self.model, "torch"  # what runs encode_image_dense (use_runtime)

    def use_runtime(self, runtime, kind, depth_of):
        """Run the image tower through a graph runtime from now on ('openvino', 'onnxruntime'; 'auto': the first of
        AUTO_ORDER installed that passes the check, else PyTorch with one line on stderr saying why; 'torch': as
        loaded). The check: depth_of(tower, images) -> (B, 1, h, w) metres through a tower (the CLIP, or a
        GraphTower in fp32) on graph_runtime.check_image must agree within CHECK_METRES (for the dense feature
        `kind`; its result is kept beside the export, so a later load runs no image tower for it). Runtimes run on a CPU
        in fp32 or bf16 with BatchNorm folded; elsewhere 'auto' keeps PyTorch. Under 'auto' nothing about a runtime
        fails the run: any error in the check is a reason in that line, and a graph that cannot be exported, loaded or
        run later (another input size) runs with PyTorch with one warning (GraphTower.fallback). ValueError when a
        named runtime is missing, cannot run these settings or fails the check."""
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
        if runtime == "torch":
            return
        if self.device.type != "cpu" or self.precision == "fp16" or not self.folded:
            if runtime == "auto":
                return
            raise ValueError(f"--runtime {runtime} runs the image tower on a CPU in fp32 or bf16 with CLIP frozen; "
                             f"this run is {self.device.type} {self.precision}"
                             f"{'' if self.folded else ' with BatchNorm in train mode'}: use --runtime torch")
        s = self.stride
        images = check_image(7 * s, 9 * s)
        reasons = []
        for name in AUTO_ORDER if runtime == "auto" else (runtime,):
            if runtime == "auto" and version(name) is None:
                reasons.append(f"{name} is not installed")
                continue
            try:
                tower = GraphTower(name, self.model, self.weights_id(), self.precision)
                exact = tower if self.precision == "fp32" else GraphTower(name, self.model, self.weights_id(), "fp32")
                difference = self.checked(exact, kind, images, depth_of)
            except Exception as error:  # under auto nothing about a speed-up fails the run: the runtimes' own errors
                if runtime != "auto":  # included (a ValueError from GraphTower says what failed in one line)
                    raise
                reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
                if not isinstance(error, ValueError):
                    reason = f"{type(error).__name__}: {reason}"
                reasons.append(f"{name}: {reason.split(';')[0]}")
                continue
            if difference <= CHECK_METRES:
                self.image_tower, self.runtime = tower, name
                tower.fallback = runtime == "auto"
                return
            reason = f"{name}'s depth differs from PyTorch's by {difference:.2g} m on the check image"
            if runtime != "auto":
                raise ValueError(f"--runtime {name}: its depth differs from PyTorch's by {difference:.2g} m on the "
                                 f"check image (more than {CHECK_METRES:g} m); use --runtime torch")
            reasons.append(reason)
        print(f"note: --runtime auto runs the image tower with PyTorch ({'; '.join(reasons)})", file=sys.stderr)

    def checked(self, tower, kind, images, depth_of):
        """The largest |depth difference| (m) between a GraphTower and PyTorch on the check image, computed once per
        export and runtime version and then read from beside the export."""
        size = tuple(images.shape[-2:])
        difference = tower.recorded_check(kind, size)
        if difference is None:
            with torch.inference_mode():
                difference = (depth_of(tower, images) - depth_of(self.model, images)).abs().max().item()
            tower.record_check(kind, size, difference)
        return difference

    def runtime_name(self):
        """'torch 2.14.1', 'openvino 2026.4.1', ...: what runs the image tower, for results and the feature cache."""
        return f"{self.runtime} {version(self.runtime)}"

    @property
    def stride(self):
        """Input pixels per output depth pixel: 32 for a ResNet, the patch size for a ViT."""
        size = getattr(self.model.visual, "patch_size", 32)
        return size if isinstance(size, int) else size[0]  # open_clip keeps (h, w); patches are square

    def passes(self, views):
        """A batch of views in the chunks the image tower runs best: one view per pass on a CPU (a 416x544 trunk's
        activations stay in cache, and batch size no longer changes a digit), all at once on a GPU."""
        return views.split(1) if self.device.type == "cpu" else (views,)

    def fit(self, x):
        """(B, 3, H, W) -> on this device, H and W resized bilinearly to the nearest multiples of the stride where
        they are not (only ViT-L/14 at NYU's 416x544)."""
        _, _, H, W = x.shape
        s = self.stride
        if H % s or W % s:
            x = F.interpolate(x, size=(max(s, round(H / s) * s), max(s, round(W / s) * s)), mode="bilinear",
                              align_corners=False)
        return x.to(self.device)  # channels_last weights make every convolution run channels_last

    def autocast(self):
        if self.precision == "bf16" and self.runtime == "torch":  # a graph runtime runs its own bf16
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @functools.cached_property
    def checkpoint_sha256(self):
        """The checkpoint file's SHA256 (a released model's from its URL); None for open_clip's downloads,
        which open_clip names by model and tag."""
        if self.name.startswith(open_clip_adapter.PREFIX):
            _, pretrained = open_clip_adapter.parse(self.name)
            return sha256_of_file(pretrained) if pretrained and os.path.isfile(pretrained) else None
        return checkpoint_sha256(self.name)

    def config(self):
        """What results files record about the model: name (a file as its absolute path), SHA256, precision, device."""
        name = os.path.abspath(self.name) if os.path.isfile(self.name) else self.name
        return {"clip_model": name, "checkpoint_sha256": self.checkpoint_sha256, "precision": self.precision,
                "device": str(self.device), "runtime": self.runtime_name(),
                **({"batchnorm_statistics_sha256": self.visual_state_sha256} if self.visual_state_sha256 else {})}

    def weights_id(self):
        """What names these weights for the feature cache: the SHA256, or open_clip's model and tag, and the SHA256
        of BatchNorm statistics a prompts checkpoint replaced."""
        weights = self.checkpoint_sha256 or self.name
        return f"{weights}+batchnorm:{self.visual_state_sha256}" if self.visual_state_sha256 else weights


def load_visual_state(visual, state):
    """Put a checkpoint's BatchNorm statistics ({name: tensor} of the image tower's buffers) into it, before any
    folding; returns their SHA256. A ValueError if they do not fit this tower."""
    own = visual.state_dict()
    unknown = [key for key in state if key not in own]
    reshaped = [key for key, value in state.items() if key in own and own[key].shape != value.shape]
    if unknown or reshaped:
        raise ValueError(f"the prompts' BatchNorm statistics do not fit this CLIP's image tower (first: "
                         f"{(unknown + reshaped)[0]}; of their {len(state)} tensors {len(unknown)} are not in it and "
                         f"{len(reshaped)} have another shape); they were made for another backbone")
    visual.load_state_dict(state, strict=False)
    return state_sha256(state)


def state_sha256(state):
    """The SHA256 of a {name: tensor} state, names and values."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode() + state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def start_distributed(device):
    """(rank, world size, device) under torchrun (WORLD_SIZE > 1), else (0, 1, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def load_clip(name, device, download_root=None):
    """(model, tokenize, (mean, std) of its training images): OpenAI's CLIP (clip/) by name or checkpoint path,
    or an open_clip model for 'open_clip:<model>[@<pretrained>]' (open_clip_adapter.py)."""
    if name.startswith(open_clip_adapter.PREFIX):
        model = open_clip_adapter.load(name, device)
        return model, model.tokenize, model.mean_std
    model, _ = clip.load(name, device=device, download_root=download_root)
    return model, clip.tokenize, (CLIP_MEAN, CLIP_STD)


def fold_batchnorm(resnet):
    """Fold each BatchNorm of a CLIP ResNet tower (OpenAI's or open_clip's ModifiedResNet) into the convolution
    before it, in place, with torch's own fuse_conv_bn_eval: the same function, one operation less per pair."""
    pairs = [(resnet, "conv1", "bn1"), (resnet, "conv2", "bn2"), (resnet, "conv3", "bn3")]
    for stage in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        for block in stage:
            pairs += [(block, "conv1", "bn1"), (block, "conv2", "bn2"), (block, "conv3", "bn3")]
            if block.downsample is not None:
                pairs.append((block.downsample, "0", "1"))
    for module, conv, bn in pairs:
        setattr(module, conv, fuse_conv_bn_eval(getattr(module, conv), getattr(module, bn)))
        setattr(module, bn, nn.Identity())


def check_dense_features(model, features, name):
    """Refuse a --features kind the backbone does not have, before any image runs (ValueError)."""
    resnet = "trunk" in model.dense_features
    if features == "paper":
        if not resnet:
            raise ValueError("features='paper' reads a ResNet trunk; for a ViT CLIP use 'maskclip', 'value' or "
                             "'tokens'")
        trunk_channels = model.visual.attnpool.k_proj.in_features
        embed_dim = model.visual.output_dim
        if trunk_channels != 2 * embed_dim:
            raise ValueError(f"features='paper' keeps every other of the trunk's channels, which needs "
                             f"2 x {embed_dim} (the embedding size) = {2 * embed_dim} channels, but {name} has "
                             f"{trunk_channels} (only RN50 fits); use features='value'")
    elif features == "tokens" and resnet:
        raise ValueError("features='tokens' needs a ViT CLIP; for a ResNet use 'paper', 'maskclip' or 'value'")


def pick_device(device=None):
    """None/'auto' -> CUDA when available, else CPU; 'cuda' without CUDA is an error, not a silent fallback."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but this PyTorch sees no CUDA GPU; use --device cpu "
                         "(or install a CUDA build of PyTorch)")
    return device


def pick_precision(precision, device):
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA GPU; on the CPU use fp32 or bf16")
    return precision
