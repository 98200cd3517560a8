"""RSA: a scene description sets the metric scale of a relative depth model (Zeng et al., NeurIPS 2024).

"RSA: Resolving Scale Ambiguities in Monocular Depth Estimators through Language Descriptions". A small network,
LanScale, maps the CLIP RN50 text feature of one caption of the image to a global scale s and shift t, both
positive; they turn a relative model's inverse depth r (DPT, MiDaS, Depth Anything, ...) into metres:

    depth = 1 / (s * r + t)

Everything here follows their code, github.com/Adonis-galaxy/RSA at RSA_COMMIT (RSA/lanscale.py, RSA/train_3d.py
`eval` and `eval_void`, RSA/utils.py `compute_errors`), quirks included and named where they are kept:

    LanScale(text_width)(features (B, D)) -> (scale (B,), shift (B,))     their LanScaleModel, same parameter names
    CaptionEncoder(backbone)(captions)    -> (B, D) float32               CLIP's encode_text, unnormalized, as theirs
    metric_depth(relative, scale, shift, kind)                            depth in metres
    protocols.PROTOCOLS["nyu_rsa"], ...                                   their evaluation (protocols.py)
    load_scale_model(path) / save_scale_model(model, path, settings)      their checkpoints and ours

Captions (their 15 per image) are read by datasets/captions.py; docs/rsa.md has the method, commands and quirks.
"""
import hashlib
import io
import json
import os

import numpy as np
import torch
from torch import nn

import files
from datasets.captions import RSA_COMMIT  # the commit of their repository this module was read from
TEXT_WIDTH = 1024  # RN50's text embedding: their LanScaleModel(text_feat_dim=1024) and clip.load("RN50")
TRAIN_EPS = 1e-8  # train_3d.py's EPS: added to s * r + t in training only; their evaluation adds nothing
KINDS = ("disparity", "depth")  # what a relative map holds (--relative_kind)
FORMAT = 1  # of our .safetensors metadata

# Their published numbers (paper, Table 1 and 2): THEIRS, not measured here. (dataset, relative model) -> metrics.
THEIR_TABLE = {
    ("NYU", "DPT"): {"a1": 0.916, "abs_rel": 0.097, "rmse": 0.347},
    ("NYU", "Depth Anything Small"): {"a1": 0.775, "abs_rel": 0.147, "rmse": 0.484},
    ("KITTI", "DPT"): {"a1": 0.963, "abs_rel": 0.061, "rmse": 2.354},
}


class LanScale(nn.Module):
    """Their LanScaleModel (RSA/lanscale.py): a text feature -> one global scale and shift.

    Three MLPs with their layer names, so their state dict loads as it is: scene_feat_net (D -> 512 -> 512 ->
    512 -> 256 -> 256), then scale_net and shift_net (256 -> 256 -> 128 -> 128 -> 64 -> 1) on its output,
    LeakyReLU (slope 0.01) between linear layers, exp at the end (so s, t > 0).

    forward: (B, text_width) float32 features -> (scale (B,), shift (B,)). Their forward returns each as
    (B, 1, 1) (reshape(-1, HEIGHT, WIDTH) with HEIGHT = WIDTH = 1) and scale first; the same numbers, flattened.
    """

    def __init__(self, text_width=TEXT_WIDTH):
        super().__init__()
        self.text_width = text_width
        self.scene_feat_net = _mlp([text_width, 512, 512, 512, 256, 256])
        self.scale_net = _mlp([256, 256, 128, 128, 64, 1])
        self.shift_net = _mlp([256, 256, 128, 128, 64, 1])

    def forward(self, text_features):
        if text_features.ndim != 2 or text_features.shape[1] != self.text_width:
            raise ValueError(f"LanScale takes (B, {self.text_width}) text features, got {tuple(text_features.shape)}; "
                             f"this scale model was made for a CLIP whose text feature is {self.text_width} wide")
        scene = self.scene_feat_net(text_features)
        return torch.exp(self.scale_net(scene))[:, 0], torch.exp(self.shift_net(scene))[:, 0]


def _mlp(widths):
    """Linear layers of these widths with LeakyReLU between them (none after the last): indices 0, 2, 4, ... are
    the linear layers, as in their nn.Sequential."""
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Linear(a, b)] + ([nn.LeakyReLU()] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers)


# ---------------------------------------------------------------- text features
def encode_captions(model, tokenize, captions, device):
    """captions (B,) strings -> (B, D) float32 on device: CLIP's encode_text as their train_3d.py calls it:
    clip.tokenize(captions, truncate=True) (a caption past 77 tokens is cut, keeping its end token), encode_text,
    no normalization, then .float() (their CLIP runs in fp16 on CUDA: the cast comes after the tower)."""
    tokens = tokenize(list(captions), truncate=True).to(device)
    with torch.no_grad():
        return model.encode_text(tokens).float()


class CaptionEncoder:
    """Text features of captions, the text tower run once per distinct caption.

    backbone: a clip_runtime.FrozenCLIP (RN50 for their checkpoints; clip.load builds it with its weights rounded
    to fp16, as theirs; on CUDA the tower runs in fp16 as theirs, on a CPU in fp32). Features are kept in memory;
    with cache_dir also on disk, one float32 .npy per caption under <cache_dir>/<weights SHA256>-<precision>/
    <caption SHA256>.npy (a caption's trailing newline, which their get_text keeps and CLIP's tokenizer drops, is
    not part of the key). __call__(captions (B,) strings) -> (B, width) float32 on the backbone's device.
    """

    def __init__(self, backbone, cache_dir=None):
        self.backbone = backbone
        self.memory = {}
        self.folder = None
        if cache_dir:
            self.folder = os.path.join(cache_dir, f"{backbone.weights_id()}-{backbone.precision}")

    @property
    def width(self):
        """The text feature's width (1024 for RN50)."""
        return self.backbone.model.text_projection.shape[1]

    def __call__(self, captions):
        keys = [caption.rstrip("\n") for caption in captions]
        missing = sorted({key for key in keys if key not in self.memory and not self._read(key)})
        for start in range(0, len(missing), 256):
            chunk = missing[start:start + 256]
            features = encode_captions(self.backbone.model, self.backbone.tokenize, chunk, self.backbone.device)
            for key, feature in zip(chunk, features.cpu()):
                self.memory[key] = feature
                self._write(key, feature)
        return torch.stack([self.memory[key] for key in keys]).to(self.backbone.device)

    def _path(self, key):
        return os.path.join(self.folder, hashlib.sha256(key.encode()).hexdigest() + ".npy")

    def _read(self, key):
        if self.folder is None or not os.path.isfile(self._path(key)):
            return False
        try:
            feature = np.load(self._path(key))
        except (OSError, ValueError):
            return False  # unreadable: encoded again and rewritten
        if feature.shape != (self.width,):
            return False
        self.memory[key] = torch.from_numpy(feature)
        return True

    def _write(self, key, feature):
        if self.folder is None:
            return
        os.makedirs(self.folder, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, feature.numpy())
        try:
            files.write_file(self._path(key), buffer.getvalue(), "--cache")
        except ValueError:
            pass  # a read-only or full cache: the feature stays in memory


# ---------------------------------------------------------------- relative -> metric depth
def check_relative(relative, kind, where):
    """Refuse a relative map LanScale's formula cannot take (ValueError naming `where`): not finite anywhere, a
    negative inverse depth (disparity), or a depth (kind 'depth') at or below 0, which has no inverse. A zero
    inverse depth is allowed: DPT's and Depth Anything's outputs pass a ReLU and are 0 at the far end, and their
    code scores those pixels at 1 / t."""
    if kind not in KINDS:
        raise ValueError(f"unknown relative kind {kind!r}; choose one of {', '.join(KINDS)}")
    values = torch.as_tensor(relative)
    if not torch.isfinite(values).all():
        raise ValueError(f"{where}: the relative map has NaN or infinite values; give a finite map")
    low = values.min().item() if values.numel() else 0.0
    if kind == "disparity" and low < 0:
        raise ValueError(f"{where}: the relative map has a negative inverse depth ({low:.4g}); RSA's formula "
                         f"1 / (s * r + t) needs r >= 0 (a depth map? pass --relative_kind depth)")
    if kind == "depth" and low <= 0:
        raise ValueError(f"{where}: the relative depth map has a value at or below 0 ({low:.4g}), which has no "
                         f"inverse; give positive depth (or an inverse-depth map with --relative_kind disparity)")


def metric_depth(relative, scale, shift, kind="disparity", eps=0.0):
    """relative (B, H, W) (or (H, W) with scalar scale and shift), scale and shift (B,) -> depth (B, H, W) metres.

    kind 'disparity' (their case: DPT, MiDaS and Depth Anything predict inverse depth): 1 / (s * r + t).
    kind 'depth' (a relative depth, e.g. DepthCLIP's own map): the map is inverted first, r = 1 / relative, and
    then goes through the same formula: LanScale was trained on inverse depth, so it is given one.
    eps: added to s * r + t; their evaluation adds none (0), their training adds TRAIN_EPS. Computed in the inputs'
    float32 as theirs; no check here (check_relative)."""
    relative = torch.as_tensor(relative)
    scale, shift = torch.as_tensor(scale, dtype=relative.dtype), torch.as_tensor(shift, dtype=relative.dtype)
    if kind == "depth":
        relative = 1 / relative
    elif kind != "disparity":
        raise ValueError(f"unknown relative kind {kind!r}; choose one of {', '.join(KINDS)}")
    if scale.ndim == 1:
        scale, shift = scale.view(-1, *[1] * (relative.ndim - 1)), shift.view(-1, *[1] * (relative.ndim - 1))
    return 1 / (scale * relative + shift + eps)


# ---------------------------------------------------------------- scale-model files
def load_scale_model(path, text_width=None, flag="--scale_model"):
    """A LanScale from their checkpoint (torch.save of {'model': state dict, 'global_step', ...}, as train_3d.py
    writes; the keys with DataParallel's 'module.' prefix or without; a bare state dict too), read with
    weights_only, or from our .safetensors (save_scale_model) -> (LanScale in eval mode on the CPU, settings dict:
    what the file records; for theirs {'source': 'RSA checkpoint', 'global_step': ...}).

    text_width: the loaded CLIP's text feature width; a file made for another width is a ValueError naming both.
    Any unreadable file is a ValueError naming flag and file."""
    if not os.path.isfile(path):
        raise ValueError(f"{flag} {path}: no such file; give a LanScale checkpoint (theirs, or a .safetensors from "
                         f"train_scale.py)")
    with open(path, "rb") as f:
        head = f.read(8)
    if path.endswith(".safetensors") or not (head.startswith(b"PK") or head.startswith(b"\x80")):  # torch.save
        # writes a zip archive (a pickle before torch 1.6); a .safetensors starts with its header's length
        state, settings = _read_safetensors(path, flag)
    else:
        state, settings = _read_theirs(path, flag)
    state = {key[len("module."):] if key.startswith("module.") else key: value for key, value in state.items()}
    first = state.get("scene_feat_net.0.weight")
    if first is None or first.ndim != 2:
        raise ValueError(f"{flag} {path} holds no LanScale weights (no scene_feat_net.0.weight); give a LanScale "
                         f"checkpoint")
    width = first.shape[1]
    if text_width is not None and width != text_width:
        raise ValueError(f"{flag} {path} takes {width}-wide text features but the CLIP loaded gives {text_width}-wide "
                         f"ones; use the CLIP it was trained with (their checkpoints: RN50, 1024)")
    if "scene_feat_net.6.weight" not in state:
        raise ValueError(f"{flag} {path} is an older, smaller LanScale (3 linear layers per MLP, like their "
                         f"eval_void/*_lanscale files) that their lanscale.py at {RSA_COMMIT[:7]} does not load "
                         f"either; use their released RSA/checkpoints/*_ckpt or one from train_scale.py")
    model = LanScale(width)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{flag} {path} does not fit LanScale ({str(error).strip().splitlines()[0]})") from None
    return model.eval(), settings


def _read_theirs(path, flag):
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{flag} {path} is not a readable checkpoint ({reason})") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{flag} {path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{flag} {path} has no state dict of tensors under 'model'")
    settings = {"source": "RSA checkpoint"}
    if isinstance(checkpoint.get("global_step"), int):
        settings["global_step"] = checkpoint["global_step"]
    return state, settings


def _read_safetensors(path, flag):
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(path, "pt") as f:
            metadata = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{flag} {path} is not a readable .safetensors file ({str(error).splitlines()[0]})") from None
    try:
        settings = json.loads(metadata.get("rsa", "{}"))
    except ValueError:
        raise ValueError(f"{flag} {path}: its 'rsa' metadata is not JSON") from None
    return state, settings


def save_scale_model(model, path, settings=None):
    """Write a LanScale to .safetensors, whole or not at all: its state dict (their key names) and, as metadata
    under 'rsa', JSON of {'format': 1, 'text_width': ..., **settings} (what it was trained with: CLIP model and
    SHA256, relative source and kind, captions, ...)."""
    from safetensors.torch import save
    metadata = {"format": FORMAT, "text_width": model.text_width, **(settings or {})}
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    files.write_file(path, save(state, metadata={"rsa": json.dumps(metadata)}), "--output")
