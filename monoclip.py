"""DepthCLIP: monocular depth from a frozen CLIP, with no training ("Can Language Understand Depth?", MM 2022).

Every image patch is compared with prompts such as "This object is close". The softmax over the
distance words weights one depth bin (metres) per word, and the weighted sum is the patch's depth:

    1. text features, once: each (depth word, object) prompt, averaged over templates -> (embed_dim, K)
    2. patch features: CLIP ResNet trunk (B, 2048, h, w) -> L2-normalized -> every other channel (B, hw, 1024)
    3. depth = sum_k softmax_k(100 * patch . text_k / temperature) * bin_k -> (B, 1, h, w)
"""
import contextlib
import string

import torch
import torch.nn.functional as F
from torch import nn

import clip

# ---------------------------------------------------------------- configuration: the paper's Table 1
CLIP_MODEL = "RN50"
TEMPLATES = ["This {} is {}"]  # formatted with (object, depth word)
OBJECTS = ["object"]
PROMPT_SETS = {  # seven distance words, nearest first; "paper" is Table 1, the others the prompt ablation
    "paper": ["giant", "extremely close", "close", "not in distance", "a little remote", "far", "unseen"],
    "prompt1": ["extremely close", "close", "middle", "a little far", "far", "quite far", "unseen"],
    "prompt2": ["extremely close", "very close", "close", "a little close", "a little far", "far", "unseen"],
    "prompt3": ["giant", "close", "a little close", "not in distance", "a bit remote", "far", "unseen"],
}
BIN_SETS = {  # the depth (metres) each word stands for; "paper" is Table 1, the others the bin ablation
    "paper": [1.00, 1.50, 2.00, 2.25, 2.50, 2.75, 3.00],
    "class1": [1.00, 2.00, 2.25, 2.50, 2.75, 3.00, 4.00],
    "class2": [1.00, 1.50, 2.00, 2.50, 3.00, 3.50, 4.00],
    "class3": [1.00, 1.25, 1.50, 1.75, 2.00, 2.25, 2.50],
    "class4": [2.00, 2.50, 3.00, 3.25, 3.50, 3.75, 4.00],
}
TEMPERATURE = 0.1
FEATURES = {  # --features: which per-patch image features are compared with the text
    "paper": "ResNet trunk (layer4) features, every other channel kept: the authors' variant (RN50 only)",
    "value": "attention-pool / last-block value path projected into CLIP's joint space (MaskCLIP); ResNet and ViT",
    "tokens": "last-layer ViT patch tokens through ln_post and proj; ViT only",
}
PRECISIONS = ("auto", "fp32", "fp16", "bf16")  # auto: fp16 on CUDA (the authors' setting), fp32 on CPU


def resolve_preset(value, presets, what):
    """A preset's name -> its list; a list is returned as it is."""
    if isinstance(value, str):
        if value not in presets:
            raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(presets)} or give a list")
        return list(presets[value])
    return list(value)


def check_method(depth_classes, bins, templates, objects, temperature):
    """Reject settings the method cannot run with, naming the offending value."""
    if not depth_classes:
        raise ValueError("depth_classes is empty; give at least one depth word")
    if len(bins) != len(depth_classes):
        raise ValueError(f"{len(bins)} bins {bins} for {len(depth_classes)} depth words {depth_classes}; "
                         f"give one bin per word")
    for b in bins:
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not b > 0:
            raise ValueError(f"bin {b!r} is not a positive number of metres")
    if not templates:
        raise ValueError("templates is empty; give at least one, e.g. 'This {} is {}'")
    for template in templates:
        slots = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
        if slots != ["", ""]:
            raise ValueError(f"template {template!r} needs exactly two empty {{}} slots (object, then depth word)")
    if not objects:
        raise ValueError("objects is empty; give at least one, e.g. 'object'")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature {temperature!r} must be a number > 0")


@torch.no_grad()
def text_features(model, depth_classes, objects, templates):
    """(embed_dim, K) unit prompt embeddings, one column per (depth word, object), words outer.

    Each column: every template filled, encoded, L2-normalized, averaged, L2-normalized again.
    """
    device = model.positional_embedding.device
    columns = []
    for depth in depth_classes:
        for obj in objects:
            tokens = clip.tokenize([template.format(obj, depth) for template in templates]).to(device)
            embeddings = model.encode_text(tokens)  # (T, embed_dim)
            embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
            mean = embeddings.mean(dim=0)
            columns.append(mean / mean.norm())
    return torch.stack(columns, dim=1)


def keep_every_other_channel(patches):
    """(B, hw, C) -> (B, hw, C/2): channels 0, 2, 4, ...

    The authors' code calls F.interpolate(patches, scale_factor=0.5), whose nearest-neighbour resampling
    of the last (channel) axis keeps every other channel, to bring RN50's 2048 trunk channels to CLIP's
    1024-dim text space. It runs after the L2 normalization, so the result is not unit length.
    """
    return patches[..., ::2]


class MonoCLIP(nn.Module):
    """Zero-shot depth: forward((B, 3, H, W) normalized images) -> (B, 1, H/s, W/s) metres, s the patch stride.

    depth_classes and bins take a list or a preset name (PROMPT_SETS, BIN_SETS). With several objects,
    each (word, object) column carries its word's bin and the softmax runs over all columns (the authors'
    code assumes one object).
    """

    def __init__(self, clip_model=CLIP_MODEL, depth_classes=None, bins=None, templates=None, objects=None,
                 temperature=TEMPERATURE, device=None, features="paper", precision="auto", download_root=None):
        super().__init__()
        self.depth_classes = resolve_preset("paper" if depth_classes is None else depth_classes, PROMPT_SETS,
                                            "prompt set")
        self.bin_values = resolve_preset("paper" if bins is None else bins, BIN_SETS, "bin set")
        self.templates = list(TEMPLATES if templates is None else templates)
        self.objects = list(OBJECTS if objects is None else objects)
        self.temperature = temperature
        check_method(self.depth_classes, self.bin_values, self.templates, self.objects, temperature)
        if features not in FEATURES:
            raise ValueError(f"unknown features {features!r}; choose one of {', '.join(FEATURES)}")
        self.features = features
        self.device = pick_device(device)
        self.precision = pick_precision(precision, self.device)
        self.clip_model = clip_model

        self.clip, _ = clip.load(clip_model, device=self.device, download_root=download_root)
        if self.precision != "fp16":
            self.clip.float()  # clip.load gives fp16 weights on CUDA; bf16 runs fp32 weights under autocast
        self.clip.requires_grad_(False)
        self.clip.visual.to(memory_format=torch.channels_last)  # faster convolutions, same numbers
        self._check_features()

        text = text_features(self.clip, self.depth_classes, self.objects, self.templates)  # (embed_dim, K)
        self.register_buffer("text_features", text, persistent=False)
        bins = torch.tensor(self.bin_values, device=self.device).repeat_interleave(len(self.objects))  # (K,)
        self.register_buffer("bins", bins, persistent=False)

    def _check_features(self):
        resnet = isinstance(self.clip.visual, clip.model.ModifiedResNet)
        if self.features == "paper":
            if not resnet:
                raise ValueError("features='paper' reads a ResNet trunk; for a ViT CLIP use 'value' or 'tokens'")
            trunk_channels = self.clip.visual.attnpool.k_proj.in_features
            embed_dim = self.clip.text_projection.shape[1]
            if trunk_channels != 2 * embed_dim:
                raise ValueError(f"features='paper' keeps every other of the trunk's channels, which needs "
                                 f"2 x {embed_dim} (the embedding size) = {2 * embed_dim} "
                                 f"channels, but {self.clip_model} has {trunk_channels} (only RN50 fits); "
                                 f"use features='value'")
        elif self.features == "tokens" and resnet:
            raise ValueError("features='tokens' needs a ViT CLIP; for a ResNet use 'paper' or 'value'")

    @property
    def stride(self):
        """Input pixels per output depth pixel: 32 for a ResNet, the patch size for a ViT."""
        return getattr(self.clip.visual, "patch_size", 32)

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def bin_weights(self, x):
        """(B, 3, H, W) normalized images -> (B, K, h, w): each patch's softmax over the K depth prompts."""
        B, _, H, W = x.shape
        s = self.stride
        if H % s or W % s:  # only ViT-L/14 at NYU's 416x544: resize to the nearest multiples of the patch
            x = F.interpolate(x, size=(max(s, round(H / s) * s), max(s, round(W / s) * s)), mode="bilinear",
                              align_corners=False)
        x = x.to(self.device)  # channels_last weights make every convolution run channels_last
        with self.autocast():
            patches = self.clip.encode_image_dense(x, "trunk" if self.features == "paper" else self.features)
        _, _, h, w = patches.shape  # (B, C, h, w)
        patches = patches.flatten(2).transpose(1, 2).to(self.text_features.dtype)  # (B, hw, C)
        patches = patches / patches.norm(dim=-1, keepdim=True)
        if self.features == "paper":
            patches = keep_every_other_channel(patches)  # (B, hw, C/2): the authors' quirk, after normalizing

        logits = 100.0 * patches @ self.text_features  # (B, hw, K)
        logits = logits.transpose(1, 2).reshape(B, -1, h, w)  # (B, K, h, w)
        logits = logits / self.temperature
        return logits.softmax(dim=1)

    def forward(self, x):
        depth = self.bin_weights(x) * self.bins.view(1, -1, 1, 1)  # (B, K, h, w)
        return depth.sum(dim=1, keepdim=True)  # (B, 1, h, w) metres

    @torch.inference_mode()
    def predict(self, x, flip=True, size=None):
        """(B, 3, H, W) -> (B, 1, H, W) metres (or size), the authors' evaluation protocol: the prediction
        averaged with the mirrored image's (mirrored back), then upsampled bilinearly with align_corners=True."""
        x = x.to(self.device, non_blocking=True)
        B = x.shape[0]
        views = torch.cat([x, x.flip(3)]) if flip else x  # (2B or B, 3, H, W): both views in one batch
        # A CPU runs a 416x544 trunk fastest one image at a time (activations stay in cache); a GPU, all at once.
        depth = torch.cat([self(chunk) for chunk in views.split(1 if self.device.type == "cpu" else len(views))])
        if flip:
            depth = 0.5 * (depth[:B] + depth[B:].flip(3))
        return F.interpolate(depth, size=size or x.shape[-2:], mode="bilinear", align_corners=True)

    def config(self):
        """The settings that determine the output, for results files."""
        return {"clip_model": self.clip_model, "depth_classes": self.depth_classes, "bins": self.bin_values,
                "templates": self.templates, "objects": self.objects, "temperature": self.temperature,
                "features": self.features, "precision": self.precision, "device": str(self.device)}


def pick_device(device=None):
    """None/'auto' -> CUDA when available, else CPU; 'cuda' without CUDA is an error, not a silent fallback."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
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
