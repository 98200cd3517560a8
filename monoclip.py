"""DepthCLIP: monocular depth from a frozen CLIP, with no training ("Can Language Understand Depth?", MM 2022).

Every image patch is compared with prompts such as "This object is close". The softmax over the
distance words weights one depth bin (metres) per word, and the weighted sum is the patch's depth:

    1. language side, once per prompt setting: each (depth word, object) prompt, averaged over
       templates -> text features (embed_dim, K) and one bin per column (K,)
    2. image side, once per image: CLIP ResNet trunk (B, 2048, h, w) -> L2-normalized -> every other
       channel -> patch features (B, hw, 1024)
    3. head: depth = sum_k softmax_k(100 * patch . text_k / temperature) * bin_k -> (B, 1, h, w)

Steps 1 and 3 are cheap; step 2 is nearly all the work. Keeping them apart is what lets eval.py score
any number of prompt settings (--sweep) from one pass of the image tower, and keep that pass (--cache).
"""
import contextlib
import dataclasses
import functools
import os
import string
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

import clip
import open_clip_adapter

# ---------------------------------------------------------------- configuration: the paper's Table 1
CLIP_MODEL = "RN50"
TEMPLATES = ("This {} is {}",)  # formatted with (object, depth word)
OBJECTS = ("object",)
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
    # Outdoors (KITTI, up to 80 m); not from the DepthCLIP paper, and not tuned on any test image:
    "kitti_scaled": [8.0, 12.0, 16.0, 18.0, 20.0, 22.0, 24.0],  # the paper's bins x 8: NYU's 10 m range to KITTI's 80
    "kitti_linear": [5.715214, 17.143643, 28.572071, 40.0005, 51.428929, 62.857357, 74.285786],  # 7 even bins'
    # centres over [0.001, 80] m: Auty & Mikolajczyk (ICCVW 2023), their code's "dset-even-7" for KITTI
}
TEMPERATURE = 0.1
CLIP_LOGIT_SCALE = 100.0  # CLIP's learned logit scale (exp of its logit_scale), which the authors wrote as 100
FEATURES = {  # --features: (the name CLIP's encode_image_dense knows it by, what it is)
    "paper": ("trunk", "ResNet trunk (layer4) features, every other channel kept: the authors' variant (RN50 only)"),
    "maskclip": ("maskclip", "MaskCLIP's dense features: ResNet c_proj(v_proj(f)); ViT last block with attention "
                             "replaced by its value path, residual and MLP kept; ResNet and ViT"),
    "value": ("value", "the bare value path: as maskclip on a ResNet; on a ViT out_proj(V(ln_1 x)) of the last "
                       "block without residual or MLP; ResNet and ViT"),
    "tokens": ("tokens", "last-layer ViT patch tokens through ln_post and proj; ViT only"),
}
PRECISIONS = ("auto", "fp32", "fp16", "bf16")  # auto: fp16 on CUDA (the authors' setting), fp32 on CPU


# ---------------------------------------------------------------- 1. the language side
@dataclasses.dataclass(frozen=True)
class DepthPrompts:
    """What the words say: depth words (nearest first), one bin (m) per word, templates, objects, temperature.

    depth_classes and bins take a list or a preset name (PROMPT_SETS, BIN_SETS); a bad setting is a
    ValueError naming it. With several objects, each (word, object) column carries its word's bin and the
    softmax runs over all columns (the authors' code assumes one object).
    """
    depth_classes: tuple = "paper"
    bins: tuple = "paper"
    templates: tuple = TEMPLATES
    objects: tuple = OBJECTS
    temperature: float = TEMPERATURE

    def __post_init__(self):
        resolved = dict(depth_classes=resolve_preset(self.depth_classes, PROMPT_SETS, "prompt set"),
                        bins=resolve_preset(self.bins, BIN_SETS, "bin set"),
                        templates=tuple(self.templates), objects=tuple(self.objects))
        for name, value in resolved.items():
            object.__setattr__(self, name, value)
        check_prompts(self)

    @property
    def column_bins(self):
        """(K,) the bin of each (word, object) column, words outer."""
        return [b for b in self.bins for _ in self.objects]

    @property
    def column_labels(self):
        return [word if len(self.objects) == 1 else f"{word} / {obj}" for word in self.depth_classes
                for obj in self.objects]


@torch.no_grad()
def text_features(model, prompts, tokenize=clip.tokenize):
    """(embed_dim, K) unit prompt embeddings, one column per (depth word, object), words outer.

    Each column: every template filled, tokenized, encoded, L2-normalized, averaged, L2-normalized again. All
    prompts go through the text tower as one batch.
    """
    device = next(model.parameters()).device
    pairs = [(depth, obj) for depth in prompts.depth_classes for obj in prompts.objects]
    texts = [template.format(obj, depth) for depth, obj in pairs for template in prompts.templates]
    embeddings = model.encode_text(tokenize(texts).to(device))  # (K * T, embed_dim)
    embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
    mean = embeddings.view(len(pairs), len(prompts.templates), -1).mean(dim=1)  # (K, embed_dim)
    return (mean / mean.norm(dim=-1, keepdim=True)).T


class EncodedPrompts(NamedTuple):
    """A DepthPrompts on a model's device: what the head needs."""
    text: torch.Tensor  # (embed_dim, K) unit columns
    bins: torch.Tensor  # (K,) metres
    temperature: float


def encode_prompts(model, prompts, tokenize=clip.tokenize):
    """DepthPrompts -> EncodedPrompts on the model's device: the text tower's whole share of the work."""
    text = text_features(model, prompts, tokenize)  # (embed_dim, K)
    return EncodedPrompts(text, torch.tensor(prompts.column_bins, device=text.device), prompts.temperature)


# ---------------------------------------------------------------- 2. the image side
def keep_every_other_channel(patches):
    """(B, hw, C) -> (B, hw, C/2): channels 0, 2, 4, ...

    The authors' code calls F.interpolate(patches, scale_factor=0.5), whose nearest-neighbour resampling
    of the last (channel) axis keeps every other channel, to bring RN50's 2048 trunk channels to CLIP's
    1024-dim text space. It runs after the L2 normalization, so the result is not unit length.
    """
    return patches[..., ::2]


def patch_features(model, images, features="paper"):
    """(B, 3, H, W) normalized images -> ((B, hw, C) patch features compared with the text, (h, w) grid).

    H and W must be multiples of the patch stride. The features are L2-normalized per patch; the paper's
    variant then keeps every other channel.
    """
    dense = model.encode_image_dense(images, FEATURES[features][0])  # (B, C, h, w)
    grid = tuple(dense.shape[-2:])
    patches = dense.flatten(2).transpose(1, 2).to(model.dtype)  # (B, hw, C); bf16 autocast back to the weights'
    patches = patches / patches.norm(dim=-1, keepdim=True)
    if features == "paper":
        patches = keep_every_other_channel(patches)  # the authors' quirk, after normalizing
    return patches, grid


# ---------------------------------------------------------------- 3. the head
def bin_weights(patches, grid, prompts):
    """(B, hw, C) patch features, (h, w), EncodedPrompts -> (B, K, h, w): each patch's softmax over the prompts."""
    B = patches.shape[0]
    logits = CLIP_LOGIT_SCALE * patches @ prompts.text  # (B, hw, K)
    logits = logits.transpose(1, 2).reshape(B, -1, *grid)  # (B, K, h, w)
    logits = logits / prompts.temperature
    return logits.softmax(dim=1)


def depth_head(patches, grid, prompts):
    """(B, hw, C) patch features -> (B, 1, h, w) metres: the bins weighted by each patch's softmax."""
    depth = bin_weights(patches, grid, prompts) * prompts.bins.view(1, -1, 1, 1)  # (B, K, h, w)
    return depth.sum(dim=1, keepdim=True)


# ---------------------------------------------------------------- DepthCLIP = image side + head
class MonoCLIP(nn.Module):
    """Zero-shot depth: forward((B, 3, H, W) normalized images) -> (B, 1, H/s, W/s) metres, s the patch stride.

    The prompt settings (depth_classes, bins, templates, objects, temperature) are a DepthPrompts; others
    can be encoded with encode_prompts and handed to depth_from_features, reusing one image pass.
    """

    def __init__(self, clip_model=CLIP_MODEL, depth_classes=None, bins=None, templates=None, objects=None,
                 temperature=TEMPERATURE, device=None, features="paper", precision="auto", download_root=None):
        super().__init__()
        self.prompts = DepthPrompts("paper" if depth_classes is None else depth_classes,
                                    "paper" if bins is None else bins, TEMPLATES if templates is None else templates,
                                    OBJECTS if objects is None else objects, temperature)
        if features not in FEATURES:
            raise ValueError(f"unknown features {features!r}; choose one of {', '.join(FEATURES)}")
        self.features = features
        self.device = pick_device(device)
        self.precision = pick_precision(precision, self.device)
        self.clip_model = clip_model

        self.clip, self.tokenize, self.mean_std = load_clip(clip_model, self.device, download_root)
        if self.precision != "fp16":
            self.clip.float()  # clip.load gives fp16 weights on CUDA; bf16 runs fp32 weights under autocast
        self.clip.requires_grad_(False)
        if self.precision != "fp16" and "trunk" in self.clip.dense_features:
            fold_batchnorm(self.clip.visual)  # ~12% faster on a CPU; outputs move by float rounding (~1e-6 m)
        self.clip.visual.to(memory_format=torch.channels_last)  # faster convolutions, same numbers
        check_features(self.clip, features, clip_model)
        self.encoded = self.encode_prompts(self.prompts)

    def encode_prompts(self, prompts):
        """DepthPrompts -> EncodedPrompts with this model's text tower and tokenizer."""
        return encode_prompts(self.clip, prompts, self.tokenize)

    @property
    def stride(self):
        """Input pixels per output depth pixel: 32 for a ResNet, the patch size for a ViT."""
        size = getattr(self.clip.visual, "patch_size", 32)
        return size if isinstance(size, int) else size[0]  # open_clip keeps (h, w); patches are square

    @property
    def views_per_pass(self):
        """A CPU runs a 416x544 trunk fastest one image at a time (activations stay in cache); a GPU, all at once."""
        return 1 if self.device.type == "cpu" else None

    def patch_features(self, x):
        """The image side: (B, 3, H, W) normalized images -> ((B, hw, C), (h, w)), on this model's device."""
        B, _, H, W = x.shape
        s = self.stride
        if H % s or W % s:  # only ViT-L/14 at NYU's 416x544: resize to the nearest multiples of the patch
            x = F.interpolate(x, size=(max(s, round(H / s) * s), max(s, round(W / s) * s)), mode="bilinear",
                              align_corners=False)
        x = x.to(self.device)  # channels_last weights make every convolution run channels_last
        with self.autocast():
            return patch_features(self.clip, x, self.features)

    def bin_weights(self, x):
        """(B, 3, H, W) normalized images -> (B, K, h, w): each patch's softmax over the K depth prompts."""
        return bin_weights(*self.patch_features(x), self.encoded)

    def forward(self, x):
        return depth_head(*self.patch_features(x), self.encoded)  # (B, 1, h, w) metres

    @torch.inference_mode()
    def view_features(self, x, flip=True):
        """(B, 3, H, W) -> ((V, hw, C) patch features of the images then, with flip, their mirror images, (h, w))."""
        x = x.to(self.device, non_blocking=True)
        views = torch.cat([x, x.flip(3)]) if flip else x  # both views in one batch
        parts = [self.patch_features(chunk) for chunk in split(views, self.views_per_pass)]
        return torch.cat([patches for patches, _ in parts]), parts[0][1]

    @torch.inference_mode()
    def depth_from_features(self, features, grid, size, flip=True, prompts=None):
        """view_features' output -> (B, 1, *size) metres: the head with these prompts (EncodedPrompts, the
        model's own by default), the mirror view's depth mirrored back and averaged in, then upsampled
        bilinearly with align_corners=True: the authors' evaluation protocol."""
        prompts = prompts or self.encoded
        depth = torch.cat([depth_head(part, grid, prompts) for part in split(features, self.views_per_pass)])
        if flip:
            B = depth.shape[0] // 2
            depth = 0.5 * (depth[:B] + depth[B:].flip(3))
        return F.interpolate(depth, size=size, mode="bilinear", align_corners=True)

    def predict(self, x, flip=True, size=None):
        """(B, 3, H, W) -> (B, 1, H, W) metres (or size): flip-averaged and upsampled, as evaluated."""
        return self.depth_from_features(*self.view_features(x, flip), size or x.shape[-2:], flip)

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @functools.cached_property
    def checkpoint_sha256(self):
        """The checkpoint file's SHA256 (a released model's from its URL); None for open_clip's downloads,
        which open_clip names by model and tag."""
        if self.clip_model.startswith(open_clip_adapter.PREFIX):
            _, pretrained = open_clip_adapter.parse(self.clip_model)
            return clip.sha256_of_file(pretrained) if pretrained and os.path.isfile(pretrained) else None
        return clip.checkpoint_sha256(self.clip_model)

    def image_config(self):
        """The settings that determine the image side's output."""
        return {"clip_model": self.clip_model, "checkpoint_sha256": self.checkpoint_sha256,
                "features": self.features, "precision": self.precision, "device": str(self.device)}

    def config(self, prompts=None):
        """The settings that determine the output, for results files."""
        prompts = prompts or self.prompts
        return {**self.image_config(), "depth_classes": list(prompts.depth_classes), "bins": list(prompts.bins),
                "templates": list(prompts.templates), "objects": list(prompts.objects),
                "temperature": prompts.temperature, "torch": torch.__version__}


# ---------------------------------------------------------------- loading, guards and helpers
def load_clip(name, device, download_root=None):
    """(model, tokenize, (mean, std) of its training images): OpenAI's CLIP (clip/) by name or checkpoint path,
    or an open_clip model for 'open_clip:<model>[@<pretrained>]' (open_clip_adapter.py)."""
    if name.startswith(open_clip_adapter.PREFIX):
        model = open_clip_adapter.load(name, device)
        return model, model.tokenize, model.mean_std
    model, _ = clip.load(name, device=device, download_root=download_root)
    return model, clip.tokenize, (clip.CLIP_MEAN, clip.CLIP_STD)



def split(views, size):
    """A batch in chunks of `size` (None: whole)."""
    return views.split(size or len(views))


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


def resolve_preset(value, presets, what):
    """A preset's name -> its tuple; a list is returned as a tuple."""
    if isinstance(value, str):
        if value not in presets:
            raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(presets)} or give a list")
        return tuple(presets[value])
    return tuple(value)


def check_prompts(prompts):
    """Reject settings the method cannot run with, naming the offending value."""
    if not prompts.depth_classes:
        raise ValueError("depth_classes is empty; give at least one depth word")
    if len(prompts.bins) != len(prompts.depth_classes):
        raise ValueError(f"{len(prompts.bins)} bins {list(prompts.bins)} for {len(prompts.depth_classes)} depth "
                         f"words {list(prompts.depth_classes)}; give one bin per word")
    for b in prompts.bins:
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not b > 0:
            raise ValueError(f"bin {b!r} is not a positive number of metres")
    if not prompts.templates:
        raise ValueError("templates is empty; give at least one, e.g. 'This {} is {}'")
    for template in prompts.templates:
        slots = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
        if slots != ["", ""]:
            raise ValueError(f"template {template!r} needs exactly two empty {{}} slots (object, then depth word)")
    if not prompts.objects:
        raise ValueError("objects is empty; give at least one, e.g. 'object'")
    t = prompts.temperature
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
        raise ValueError(f"temperature {t!r} must be a number > 0")


def check_features(model, features, name):
    """Refuse a dense feature the backbone does not have, before any image runs."""
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
