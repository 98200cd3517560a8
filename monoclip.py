"""DepthCLIP: monocular depth from a frozen CLIP, with no training.

Renrui Zhang, Ziyao Zeng, Ziyu Guo, Yafeng Li, "Can Language Understand Depth?", ACM Multimedia 2022
(https://arxiv.org/abs/2207.01077). "The authors' code", wherever this repository says it, is their release:
https://github.com/Adonis-galaxy/DepthCLIP at commit e247c87904763d8564f926712cca6dd082fdb9ca (DepthCLIP_code/),
which this file was checked against (docs/faithfulness.md).

Every image patch is compared with prompts such as "This object is close". The softmax over the
distance words weights one depth bin (metres) per word, and the weighted sum is the patch's depth:

    1. language side, once per prompt setting: each (depth word, object) prompt, averaged over
       templates -> text features (embed_dim, K) and one bin per column (K,)
    2. image side, once per image: CLIP ResNet trunk (B, 2048, h, w) -> L2-normalized -> every other
       channel -> patch features (B, hw, 1024)
    3. head: depth = sum_k softmax_k(100 * patch . text_k / temperature) * bin_k -> (B, 1, h, w)

Steps 1 and 3 are cheap; step 2 is nearly all the work. Keeping them apart is what lets eval.py score
any number of prompt settings (--sweep) from one pass of the image tower, and keep that pass (--cache).
Loading and running CLIP (device, precision, speed-ups that keep the numbers) is clip_runtime.py's.
"""
import dataclasses
import string
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

import clip
from clip_runtime import FrozenCLIP, check_dense_features, state_sha256

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

    def texts(self):
        """Every prompt the text tower reads, (word, object) pairs in column order (words outer), templates inner."""
        return [template.format(obj, word) for word in self.depth_classes for obj in self.objects
                for template in self.templates]

    def check_lengths(self, tokenize=clip.tokenize, context_length=77, where=None):
        """A ValueError naming where the settings came from if a prompt has more tokens (start and end of text
        included) than the text tower reads; checked before any model loads where the tokenizer is CLIP's own."""
        for text in set(self.texts()):
            count = int((tokenize(text, context_length=4 * len(text) + 2) != 0).sum())
            if count > context_length:
                shown = text if len(text) <= 60 else text[:57] + "..."
                raise ValueError(f"{where + ': ' if where else ''}the prompt {shown!r} is {count} tokens long, more than the "
                                 f"{context_length} CLIP's text tower reads; shorten the words, template or object")

    def encode(self, model, tokenize=clip.tokenize):
        """-> EncodedPrompts through this model's text tower (prompts longer than it reads refused first)."""
        self.check_lengths(tokenize, model.context_length)
        return EncodedPrompts.of(model, self, tokenize)

    def config(self):
        """The settings as a results file records them."""
        return {"depth_classes": list(self.depth_classes), "bins": list(self.bins), "templates": list(self.templates),
                "objects": list(self.objects), "temperature": self.temperature}


@torch.no_grad()
def text_features(model, prompts, tokenize=clip.tokenize):
    """(embed_dim, K) unit prompt embeddings, one column per (depth word, object), words outer.

    Each column: every template filled, tokenized, encoded, L2-normalized, averaged, L2-normalized again. All
    prompts go through the text tower as one batch.
    """
    device = next(model.parameters()).device
    embeddings = encode_tokens(model, tokenize(prompts.texts()).to(device))  # (K * T, embed_dim)
    embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
    mean = embeddings.view(-1, len(prompts.templates), embeddings.shape[-1]).mean(dim=1)  # (K, embed_dim)
    return (mean / mean.norm(dim=-1, keepdim=True)).T


def encode_tokens(model, tokens):
    """(N, context_length) token ids -> (N, embed_dim), as model.encode_text, faster: the text tower is causal and
    the feature is read at the end token, so it runs on the positions up to the longest prompt's end token only
    (equal to the full run within float rounding). Towers that are not causal run whole."""
    if not getattr(model, "causal_text", True):
        return model.encode_text(tokens)
    eot = tokens.argmax(dim=-1)  # the end token has the largest id
    return model.encode_token_embeddings(model.token_embedding(tokens[:, :int(eot.max()) + 1]), eot)


class EncodedPrompts(NamedTuple):
    """A DepthPrompts through a model's text tower, on its device: what the head needs."""
    text: torch.Tensor  # (embed_dim, K) unit columns
    bins: torch.Tensor  # (K,) metres
    temperature: float
    depth_range: tuple = None  # (min, max) metres each view is clamped to (learned prompts' training range); None

    @classmethod
    def of(cls, model, prompts, tokenize=clip.tokenize):
        """DepthPrompts -> EncodedPrompts: the text tower's whole share of the work."""
        text = text_features(model, prompts, tokenize)  # (embed_dim, K)
        return cls(text, torch.tensor(prompts.column_bins, device=text.device), prompts.temperature)


# ---------------------------------------------------------------- 2. the image side
def keep_every_other_channel(patches):
    """(B, hw, C) -> (B, hw, C/2): channels 0, 2, 4, ...

    The authors' code calls F.interpolate(patches, scale_factor=0.5), whose nearest-neighbour resampling
    of the last (channel) axis keeps every other channel, to bring RN50's 2048 trunk channels to CLIP's
    1024-dim text space. It runs after the L2 normalization, so the result is not unit length.
    """
    return patches[..., ::2]


def dense_patch_features(model, images, features="paper"):
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
def prompt_softmax(patches, grid, prompts):
    """(B, hw, C) patch features, (h, w), EncodedPrompts -> (B, K, h, w): each patch's softmax over the prompts."""
    B = patches.shape[0]
    logits = CLIP_LOGIT_SCALE * patches @ prompts.text  # (B, hw, K)
    logits = logits.transpose(1, 2).reshape(B, -1, *grid)  # (B, K, h, w)
    logits = logits / prompts.temperature
    return logits.softmax(dim=1)


def depth_head(patches, grid, prompts):
    """(B, hw, C) patch features -> (B, 1, h, w) metres: the bins weighted by each patch's softmax."""
    depth = prompt_softmax(patches, grid, prompts) * prompts.bins.view(1, -1, 1, 1)  # (B, K, h, w)
    return depth.sum(dim=1, keepdim=True)


# ---------------------------------------------------------------- DepthCLIP = image side + head
class MonoCLIP(nn.Module):
    """Zero-shot depth: forward((B, 3, H, W) normalized images) -> (B, 1, H/s, W/s) metres, s the patch stride.

    prompts: a DepthPrompts (default: the paper's), or learned tokens (learned_prompts.LearnedPrompts, whose
    BatchNorm statistics, if a checkpoint adapted them, replace CLIP's); depth_classes, bins, templates, objects
    and temperature build a DepthPrompts instead, as a convenience. Other settings can be encoded with
    encode_prompts and handed to depth_from_features, reusing one image pass. clip_model, device, precision: see
    clip_runtime.FrozenCLIP; runtime: what runs the image tower on a CPU ('torch', the default here; 'auto',
    'openvino', 'onnxruntime': FrozenCLIP.use_runtime, which checks it against PyTorch first).
    Raises ValueError for a setting the method or the backbone cannot run (naming it).
    """

    def __init__(self, clip_model=CLIP_MODEL, depth_classes=None, bins=None, templates=None, objects=None,
                 temperature=None, device=None, features="paper", precision="auto", download_root=None,
                 prompts=None, fold_batchnorm=True, runtime="torch"):
        super().__init__()
        keywords = dict(depth_classes=depth_classes, bins=bins, templates=templates, objects=objects,
                        temperature=temperature)
        given = {name: value for name, value in keywords.items() if value is not None}
        if prompts is not None and given:
            raise ValueError(f"give prompts=DepthPrompts(...) or {', '.join(given)}, not both")
        self.prompts = prompts if prompts is not None else DepthPrompts(**given)
        if features not in FEATURES:
            raise ValueError(f"unknown features {features!r}; choose one of {', '.join(FEATURES)}")
        self.features = features
        self.backbone = FrozenCLIP(clip_model, device, precision, download_root,
                                   getattr(self.prompts, "visual_state", None), fold_batchnorm)
        self.clip = self.backbone.model
        check_dense_features(self.clip, features, clip_model)
        self.encoded = self.encode_prompts(self.prompts)
        self.backbone.use_runtime(runtime, FEATURES[features][0],
                                  lambda tower, x: depth_head(*dense_patch_features(tower, x, features), self.encoded))

    @classmethod
    def from_settings(cls, settings, prompts, device=None):
        """The MonoCLIP flag-named settings describe (a parsed command line: clip_model, features, precision, runtime,
        device), with these prompts (learned_prompts.prompts_from); device: one already chosen wins (a torchrun
        rank's)."""
        return cls(settings.clip_model, prompts=prompts, device=device or settings.device, features=settings.features,
                   precision=settings.precision, runtime=settings.runtime)

    def encode_prompts(self, prompts):
        """A language side (DepthPrompts, LearnedPrompts) -> EncodedPrompts with this model's text tower (its own
        prompts are encoded once). Learned tokens made for other weights, or carrying other BatchNorm statistics
        than this model runs with, are a ValueError."""
        if prompts is self.prompts and hasattr(self, "encoded"):
            return self.encoded
        source = getattr(prompts, "source", {})
        made_for, ours = source.get("checkpoint_sha256"), self.backbone.checkpoint_sha256
        if made_for and ours and made_for != ours:
            raise ValueError(f"{source.get('file', 'the prompts')} was made for the CLIP weights with SHA256 "
                             f"{made_for}, not these ({ours}); give its --clip_model")
        statistics = getattr(prompts, "visual_state", None)
        if (state_sha256(statistics) if statistics else None) != self.backbone.visual_state_sha256:
            raise ValueError(f"{source.get('file', 'the prompts')} carries other BatchNorm statistics than the model "
                             f"runs with: give it as the model's own --prompts, not as a sweep entry")
        return prompts.encode(self.clip, self.backbone.tokenize)

    def patch_features(self, x):
        """The image side: (B, 3, H, W) normalized images -> ((B, hw, C), (h, w)), on this model's device."""
        with self.backbone.autocast():
            return dense_patch_features(self.backbone.image_tower, self.backbone.fit(x), self.features)

    def bin_weights(self, x):
        """(B, 3, H, W) normalized images -> (B, K, h, w): each patch's softmax over the K depth prompts."""
        return prompt_softmax(*self.patch_features(x), self.encoded)

    def forward(self, x):
        return depth_head(*self.patch_features(x), self.encoded)  # (B, 1, h, w) metres

    @torch.inference_mode()
    def view_features(self, x, flip=True):
        """(B, 3, H, W) -> ((V, hw, C) patch features of the images then, with flip, their mirror images, (h, w))."""
        x = x.to(self.device, non_blocking=True)
        views = torch.cat([x, x.flip(3)]) if flip else x  # both views in one batch
        # BatchNorm in train mode (train.py --bn train) normalizes over what one pass sees: the whole batch, as in
        # their training step, never the CPU's one view per pass
        chunks = (views,) if self.clip.visual.training else self.backbone.passes(views)
        parts = [self.patch_features(chunk) for chunk in chunks]
        return torch.cat([patches for patches, _ in parts]), parts[0][1]

    @torch.inference_mode()
    def depth_from_features(self, patches, grid, size, flip=True, prompts=None, clamp=None):
        """view_features' output -> (B, 1, *size) metres: the head with these prompts (EncodedPrompts, the
        model's own by default), the mirror view's depth mirrored back and averaged in, then upsampled
        bilinearly with align_corners=True: the authors' evaluation protocol. clamp=(min, max) metres, else the
        prompts' depth_range (learned prompts: their training range): each view's depth clamped before the flip
        average, as Auty & Mikolajczyk's validation, test and visualization steps do; DepthCLIP's words have no
        range and the authors' head is left unclamped."""
        prompts = prompts or self.encoded
        depth = torch.cat([depth_head(part, grid, prompts) for part in self.backbone.passes(patches)])
        clamp = clamp or prompts.depth_range
        if clamp:
            depth = depth.clamp(*clamp)
        if flip:
            B = depth.shape[0] // 2
            depth = 0.5 * (depth[:B] + depth[B:].flip(3))
        return F.interpolate(depth, size=size, mode="bilinear", align_corners=True)

    def predict(self, x, flip=True, size=None):
        """(B, 3, H, W) -> (B, 1, H, W) metres (or size): flip-averaged and upsampled, as evaluated."""
        return self.depth_from_features(*self.view_features(x, flip), size or x.shape[-2:], flip)

    # what scripts ask of the model, kept on it for them
    device = property(lambda self: self.backbone.device)
    precision = property(lambda self: self.backbone.precision)
    mean_std = property(lambda self: self.backbone.mean_std, doc="(mean, std) of the backbone's training images")
    stride = property(lambda self: self.backbone.stride, doc="input pixels per output depth pixel")
    clip_model = property(lambda self: self.backbone.name)

    def image_config(self):
        """The image side's settings as results files record them."""
        return {**self.backbone.config(), "features": self.features}

    def config(self, prompts=None):
        """The settings that determine the output, for results files."""
        return {**self.image_config(), **(prompts or self.prompts).config(), "torch": torch.__version__}


# ---------------------------------------------------------------- checks of the settings
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
