"""Learned prompt tokens: Auty & Mikolajczyk's language side, as their code computes it.

D. Auty, K. Mikolajczyk, "Learning to Prompt CLIP for Monocular Depth Estimation: Exploring the Limits of Human
Language", ICCV 2023 workshops (OpenSUN3D); code: https://github.com/DylanAuty/PromptLearningCLIP-MDE at commit
1583acf ("their code" below): modules/DepthCLIP.py (get_language_features, forward), CLIP/clip/model.py
(encode_text with extra tokens).

A prompt is a template of text words and learned slots, e.g. "<prompt_0> {object} <prompt_1> {depth}": each
learned slot is a (width,) vector that enters CLIP's frozen text tower in place of a word's token embedding, before
the positional embedding; {depth} is one depth word or learned depth token per bin, {object} a word or one learned
object token. Where their language side differs from DepthCLIP's (monoclip.DepthPrompts), the numbers follow theirs:
  - one template, no averaging over templates;
  - the (K, C) text matrix: each prompt's feature L2-normalized, then the whole matrix divided by its Frobenius
    norm (their get_language_features), so each column has norm 1/sqrt(K) and the logits shrink with K;
  - bins from their presets (dset-even-N, dset-log-N, const80-log-N, computed from the dataset's depth range).
The image side and head are DepthCLIP's (their forward: trunk features, L2-normalized, every other channel via
F.interpolate, 100 * patch . text / 0.1, softmax, bins), so MonoCLIP runs these prompts unchanged.

Files: LearnedPrompts.save/load write and read .safetensors (tensors: the tokens, and CLIP's BatchNorm statistics
when a checkpoint adapted them; metadata: the layout, bins, temperature, backbone and its SHA256). from_auty reads
their PyTorch Lightning checkpoints with their params YAML.
"""
import dataclasses
import difflib
import json
import math
import os
import re
from typing import NamedTuple

import torch

import clip
import files
import open_clip_adapter
from protocols import LEARNED_RANGE
from clip.clip import checkpoint_sha256
from monoclip import BIN_SETS, PROMPT_SETS, TEMPERATURE, DepthPrompts, EncodedPrompts

TEMPLATES = {  # their lang_strat.templates
    "paper": "This {object} is {depth}",
    "paper-v1": "This {object} appears to be {depth}",
    "learned-static-1o1d": "<prompt_0> {object} <prompt_1> {depth}",
    "learned-static-1o2d": "<prompt_0> {object} <prompt_1> <prompt_2> {depth}",
    "learned-static-4o4d": "<prompt_0> <prompt_1> <prompt_2> <prompt_3> {object} <prompt_4> <prompt_5> <prompt_6> "
                           "<prompt_7> {depth}",
}
DEPTH_WORDS = {  # their lang_strat.depth_tokens made of words; "learned-static-N" are N learned tokens
    "paper": PROMPT_SETS["paper"],
    "size-7": ["very small", "small", "slightly small", "neither small nor large", "slightly large", "large",
               "very large"],
    "depth-7": ["very close", "close", "slightly close", "neither close nor distant", "slightly distant", "distant",
                "very distant"],
    "colour-7": ["very red", "red", "slightly red", "neither red nor green", "slightly green", "green", "very green"],
}
OBJECT_WORDS = {"paper": "object"}  # their lang_strat.object_tokens; "learned-static-1" is one learned token
DEPTH_RANGES = {name.lower(): depth_range for name, depth_range in LEARNED_RANGE.items()}  # their params' datasets
PARAMS_KEYS = {  # every key their params YAML may hold: the keys of their params/*.yaml at 1583acf and those their
    # code reads (args.<section>.<key>, .get("<key>")); any other is a typo that their OmegaConf would carry silently
    "": {"adabins", "basic", "depthclip", "hardware", "kitti", "loss", "model", "nyu", "optimizer", "paths"},
    "adabins": {"encoder_name", "n_bins", "slow_encoder"},
    "basic": {"batch_size", "dataset", "from_checkpoint", "max_epochs", "name", "use_adabins_dataloader",
              "val_checkpoint", "validate_every"},
    "depthclip": {"clip", "freeze_clip", "freeze_depthclip", "lang_corr_stage", "lang_strat",
                  "load_clip_from_checkpoint", "post_depth_pred_stage", "post_img_feat_stage", "post_lang_corr_stage",
                  "start_from_checkpoint"},
    "depthclip.lang_strat": {"depth_bin_centres", "depth_tokens", "img_f_dependent", "imgf_transformation",
                             "object_tokens", "templates"},
    "hardware": {"num_workers"},
    "kitti": {"base_path", "data_path", "degree", "depth_norm_factor", "dimensions_test", "dimensions_train",
              "do_kb_crop", "do_random_rotate", "eigen_crop", "filenames_file_eval", "filenames_file_train",
              "garg_crop", "gt_path", "image_norm_factor", "max_depth", "min_depth", "use_right"},
    "loss": {"coeffs", "names"},
    "model": {"name"},
    "nyu": {"base_path", "degree", "depth_norm_factor", "dimensions_test", "dimensions_train", "do_kb_crop",
            "do_random_rotate", "eigen_crop", "eval_path", "filenames_file_eval", "filenames_file_train", "garg_crop",
            "image_norm_factor", "max_depth", "min_depth", "train_path"},
    "optimizer": {"div_factor", "final_div_factor", "gradient_clip_val", "lr", "name", "slow_encoder", "use_swa", "wd"},
    "paths": {"data_dir", "run_dir"},
}
UNSUPPORTED = {  # settings of their code that this repository does not run, refused by name
    "img_f_dependent": "image-conditioned tokens", "post_img_feat_stage": "decoders", "post_lang_corr_stage":
    "decoders", "post_depth_pred_stage": "decoders", "lang_corr_stage": "other correlations",
}
TRAINING_DEFAULTS = dict(template="learned-static-1o1d", depth_tokens="learned-static-7", object_tokens="paper",
                         bins="dset-even-7", epochs=25, batch_size=16, lr=3.57e-4, weight_decay=0.1, div_factor=25.0,
                         final_div_factor=100.0, grad_clip=0.1)  # their params/*.yaml: train.py's defaults
GROUPS = ("prompt", "depth", "object")  # the learned-token groups, in their state dict's names
SLOT = re.compile(r"<prompt_(\d+)>|\{object\}|\{depth\}")
FORMAT = 1  # of the .safetensors metadata


def bin_centres(preset, depth_range=DEPTH_RANGES["nyu"]):
    """Their depth_bin_centres presets -> [metres]: 'paper', 'dset-even-N' (N even bins' centres over the dataset's
    [min, max]), 'dset-log-N' (even in log depth), 'const80-log-N' (even in log over [0.001, 80]); a list of metres
    (train.py --bins) as it is. ValueError else."""
    if isinstance(preset, (list, tuple)):
        return [float(centre) for centre in preset]
    preset = str(preset)  # a params YAML may hold a number
    if preset == "paper":
        return list(BIN_SETS["paper"])
    match = re.fullmatch(r"(dset|const80)-(even|log)-(\d+)", preset)
    if not match or match.group(1, 2) == ("const80", "even"):
        raise ValueError(f"unknown bin-centre preset {preset!r}; their code has paper, dset-even-N, dset-log-N, "
                         f"const80-log-N")
    low, high = (0.001, 80.0) if match.group(1) == "const80" else depth_range
    n = int(match.group(3))
    if match.group(2) == "even":
        width = (high - low) / n
        return [low + i * width + width / 2 for i in range(n)]
    width = (math.log(high) - math.log(low)) / n
    return [math.e ** (math.log(low) + i * width + width / 2) for i in range(n)]  # as theirs: e ** x, not exp


def token_counts(template, depth, object_word):
    """{'prompt', 'depth', 'object': how many learned tokens the layout has}: template a TEMPLATES name or string,
    depth a word list or a count of learned tokens, object_word a word or None (learned). ValueError for a template
    without {object}, {depth} and <prompt_i> slots numbered from 0."""
    template = TEMPLATES.get(template, template)
    prompt = [int(i) for i in re.findall(r"<prompt_(\d+)>", template)]
    if sorted(prompt) != list(range(len(prompt))) or "{object}" not in template or "{depth}" not in template:
        raise ValueError(f"template {template!r} needs {{object}}, {{depth}} and <prompt_0>, <prompt_1>, ... "
                         f"numbered from 0")
    return {"prompt": len(prompt), "depth": depth if isinstance(depth, int) else 0,
            "object": 1 if object_word is None else 0}


@dataclasses.dataclass(eq=False)
class LearnedPrompts:
    """A prompt layout and its learned tokens.

    template: a TEMPLATES name or a string with {object}, {depth} and <prompt_i> slots. depth: a list of words, or
    the number of learned depth tokens. object_word: a word, or None for one learned object token. bins: one (m) per
    depth token. tokens: {'prompt': (P, width), 'depth': (D, width), 'object': (1, width)} for the learned slots.
    visual_state: CLIP's BatchNorm statistics from a checkpoint that adapted them ({name: tensor}), or None.
    depth_range: (min, max) metres of the dataset the tokens were trained on (their params' min_depth, max_depth;
    train.py's --dataset): every prediction clamps each view to it before the flip average, as their validation,
    test and visualization steps do. None (files written before it was recorded): no clamp.
    Raises ValueError for a layout whose tokens, bins or widths do not fit (naming what).
    """
    template: str
    depth: object
    object_word: object
    bins: tuple
    tokens: dict
    temperature: float = TEMPERATURE
    visual_state: dict = None
    depth_range: tuple = None
    source: dict = dataclasses.field(default_factory=dict)  # where it came from: file, backbone, training, metrics

    def __post_init__(self):
        self.template = TEMPLATES.get(self.template, self.template)
        self.bins = tuple(float(b) for b in self.bins)
        self.tokens = {name: torch.as_tensor(value, dtype=torch.float32) for name, value in self.tokens.items()}
        needed = self.needed_tokens()
        for name in GROUPS:
            have = len(self.tokens[name]) if name in self.tokens else 0
            if have != needed[name]:
                raise ValueError(f"the layout needs {needed[name]} learned {name} token(s), the tokens hold {have}")
        widths = {tuple(t.shape[1:]) for t in self.tokens.values() if len(t)}
        if len(widths) > 1 or any(len(w) != 1 for w in widths):
            raise ValueError(f"learned tokens must be (n, width) with one width; got {sorted(widths)}")
        if len(self.bins) != self.depth_count:
            raise ValueError(f"{len(self.bins)} bins for {self.depth_count} depth tokens; give one bin per token")
        if not all(b > 0 for b in self.bins) or not self.temperature > 0:
            raise ValueError("bins (metres) and the temperature must be positive")
        if self.depth_range is not None:
            self.depth_range = tuple(float(d) for d in self.depth_range)
            if len(self.depth_range) != 2 or not 0 <= self.depth_range[0] < self.depth_range[1]:
                raise ValueError(f"depth_range {list(self.depth_range)} is not (min, max) metres with 0 <= min < max")

    @property
    def depth_count(self):
        return self.depth if isinstance(self.depth, int) else len(self.depth)

    @property
    def width(self):
        return next((t.shape[1] for t in self.tokens.values() if len(t)), None)

    def needed_tokens(self):
        return token_counts(self.template, self.depth, self.object_word)

    # ------------------------------------------------------------ what MonoCLIP asks of a language side
    @property
    def column_labels(self):
        return list(self.depth) if not isinstance(self.depth, int) else [f"<depth {i}>" for i in range(self.depth)]

    @property
    def column_bins(self):
        return list(self.bins)

    def config(self):
        learned = {name: len(t) for name, t in self.tokens.items() if len(t)}
        return {"prompts": self.source.get("file"), "language_side": "auty2023", "template": self.template,
                "depth_tokens": self.depth if isinstance(self.depth, int) else list(self.depth),
                "object_token": self.object_word, "learned_tokens": learned, "bins": list(self.bins),
                "temperature": self.temperature, "depth_range": self.depth_range and list(self.depth_range),
                "batchnorm_statistics": "checkpoint" if self.visual_state else "clip"}

    def encode(self, model, tokenize):
        """-> EncodedPrompts: each prompt's token embeddings (words through the model's token_embedding, learned
        slots as they are), the text tower on the positions up to the end token, then their normalization."""
        if self.width is not None and self.width != model.token_embedding.weight.shape[1]:
            raise ValueError(f"the learned tokens are {self.width}-d but this CLIP's text tower reads "
                             f"{model.token_embedding.weight.shape[1]}-d token embeddings; they were made for "
                             f"another backbone")
        device = model.token_embedding.weight.device
        sequences = [self.sequence(model, tokenize, k, device) for k in range(self.depth_count)]
        length = max(len(s) for s in sequences)
        if length > model.context_length:
            raise ValueError(f"a prompt of {length} tokens is longer than the {model.context_length} CLIP reads")
        pad = model.token_embedding(torch.zeros(1, dtype=torch.long, device=device))[0]  # id 0 pads, as tokenize
        padded = torch.stack([torch.cat([s, pad.expand(length - len(s), -1)]) for s in sequences])  # (K, L, width)
        eot = torch.tensor([len(s) - 1 for s in sequences], device=device)
        features = model.encode_token_embeddings(padded, eot).float()  # (K, embed_dim); differentiable in the tokens
        features = features / features.norm(dim=-1, keepdim=True)
        features = features / features.norm()  # their quirk: the whole matrix by its Frobenius norm
        return EncodedPrompts(features.T.contiguous(), torch.tensor(self.bins, device=device), self.temperature,
                              self.depth_range)

    def sequence(self, model, tokenize, k, device):
        """(n, width): start token, the template's parts for depth token k, end token."""
        start, *_, end = word_ids(tokenize, "")
        parts, last = [model.token_embedding.weight[start][None]], 0
        learned = {name: t.to(device=device, dtype=model.token_embedding.weight.dtype) for name, t in
                   self.tokens.items()}
        for match in SLOT.finditer(self.template):
            parts.append(words(model, tokenize, self.template[last:match.start()]))
            slot = match.group(0)
            if slot == "{depth}":
                parts.append(learned["depth"][k][None] if isinstance(self.depth, int) else
                             words(model, tokenize, self.depth[k]))
            elif slot == "{object}":
                parts.append(learned["object"][:1] if self.object_word is None else
                             words(model, tokenize, self.object_word))
            else:
                parts.append(learned["prompt"][int(match.group(1))][None])
            last = match.end()
        parts += [words(model, tokenize, self.template[last:]), model.token_embedding.weight[end][None]]
        return torch.cat(parts)

    # ------------------------------------------------------------ files
    def save(self, path, backbone=None, checkpoint_sha256=None, extra=None):
        """Write a .safetensors file (whole or not at all): the tokens (and BatchNorm statistics), the layout, the
        backbone it was made for and that backbone's SHA256 as metadata."""
        files.write_file(path, self.file_bytes(backbone, checkpoint_sha256, extra), "--output")

    def file_bytes(self, backbone=None, checkpoint_sha256=None, extra=None):
        """The .safetensors file's bytes (see save)."""
        from safetensors.torch import save
        tensors = {f"tokens.{name}": t.detach().contiguous() for name, t in self.tokens.items() if len(t)}
        tensors.update({f"visual.{name}": t.contiguous() for name, t in (self.visual_state or {}).items()})
        layout = {"format": FORMAT, "template": self.template, "depth": self.depth, "object_word": self.object_word,
                  "bins": list(self.bins), "temperature": self.temperature,
                  "depth_range": self.depth_range and list(self.depth_range), "backbone": backbone,
                  "checkpoint_sha256": checkpoint_sha256, **(extra or {})}
        return save(tensors, metadata={"depthclip": json.dumps(layout)})

    @classmethod
    def load(cls, path, flag="--prompts"):
        """A .safetensors file written by save (or train.py) -> LearnedPrompts; ValueError naming the file (as the
        flag that gave it) if it is not one."""
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as error:
            raise ValueError(f"{flag} {path} cannot be read ({error.strerror or error})") from None

        def refuse(what):
            return ValueError(f"{flag} {path} is not a prompts file written by this repository ({what}); give a "
                              f".safetensors from train.py or convert_prompts.py, or their .ckpt with --prompts_config")
        try:
            tensors = load(data)
            with safe_open(path, "pt") as f:  # the metadata, which load() leaves out
                metadata = f.metadata() or {}
        except SafetensorError as error:
            raise refuse(f"damaged, truncated or not a .safetensors: {str(error).strip()}") from None
        if "depthclip" not in metadata:
            raise refuse(f"a .safetensors without this repository's 'depthclip' metadata, holding {len(tensors)} "
                         f"tensor(s){': ' + ', '.join(sorted(tensors)[:3]) if tensors else ''}")
        try:
            layout = json.loads(metadata["depthclip"])
        except json.JSONDecodeError:
            raise refuse("its 'depthclip' metadata is not JSON: the file is damaged") from None
        missing = [key for key in ("template", "depth", "object_word", "bins", "temperature")
                   if not isinstance(layout, dict) or key not in layout]
        if missing:
            raise refuse(f"its 'depthclip' metadata lacks {', '.join(missing)}")
        tokens = {name: tensors.get(f"tokens.{name}", torch.zeros(0, 1)) for name in GROUPS}
        visual = {key[len("visual."):]: t for key, t in tensors.items() if key.startswith("visual.")} or None
        source = {"file": os.path.abspath(path), **{k: v for k, v in layout.items() if k not in (
            "template", "depth", "object_word", "bins", "temperature", "depth_range", "format")}}
        try:
            return cls(layout["template"], layout["depth"], layout["object_word"], layout["bins"], tokens,
                       layout["temperature"], visual, layout.get("depth_range") or trained_range(layout), source)
        except ValueError as error:
            raise refuse(f"its layout does not hold together: {error}") from None


def trained_range(layout):
    """The depth range of a file written before the range was recorded, from the dataset train.py recorded; None
    for a converted checkpoint of that time (convert_prompts.py again records it)."""
    dataset = (layout.get("training") or {}).get("dataset")
    return DEPTH_RANGES.get(str(dataset).lower())


def word_ids(tokenize, text):
    """The token ids of text with its start and end tokens, as the tokenizer writes them."""
    ids = tokenize([text], context_length=4 * len(text) + 2)[0].tolist() if text else tokenize([""])[0].tolist()
    end = ids.index(max(ids))  # the end token has the largest id
    return ids[:end + 1]


def words(model, tokenize, text):
    """(n, width) token embeddings of text's words, without start and end tokens (n may be 0)."""
    ids = word_ids(tokenize, text.strip())[1:-1] if text.strip() else []
    weight = model.token_embedding.weight
    return weight[torch.tensor(ids, dtype=torch.long, device=weight.device)] if ids else weight[:0]


# ---------------------------------------------------------------- their checkpoints
def read_params(path, flag="--prompts_config"):
    """Their params YAML (as their main.py reads it) -> dict; ValueError naming the file."""
    params = files.read_document(path, flag, "YAML")
    check_params_keys(params, f"{flag} {path}")
    if not isinstance(params, dict) or not isinstance(params.get("depthclip"), dict) or \
            not isinstance(params["depthclip"].get("lang_strat"), dict):
        raise ValueError(f"{flag} {path} has no depthclip.lang_strat; give the params YAML the checkpoint "
                         f"was trained with (their params/*.yaml)")
    return params


def check_params_keys(params, where, section=""):
    """ValueError naming the first key of their params that their code has no use for (PARAMS_KEYS), and the
    nearest known one: a misspelt key would otherwise leave its setting at the default without a word."""
    if not isinstance(params, dict) or section not in PARAMS_KEYS:
        return
    known = PARAMS_KEYS[section]
    for key, value in params.items():
        name = f"{section}.{key}" if section else str(key)
        if key not in known:
            near = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ValueError(f"{where}: {name} is not a key of their params YAML; {hint}"
                             f"{section or 'the top level'} takes {', '.join(sorted(known))}")
        check_params_keys(value, where, name)


class Layout(NamedTuple):
    """A prompt layout read from their params."""
    template: str
    depth: object  # words, or a count of learned tokens
    object_word: object  # a word, or None for a learned token
    bins: list  # metres
    backbone: str  # their depthclip.clip
    depth_range: tuple  # (min, max) metres of their dataset


def layout_from_params(params, where):
    """Layout from their params; ValueError naming an unsupported key."""
    depthclip, strategy = params["depthclip"], params["depthclip"]["lang_strat"]
    for key, what in UNSUPPORTED.items():
        value = strategy.get(key, depthclip.get(key))
        if value not in (None, "depthclip"):
            raise ValueError(f"{where}: {key}: {value} ({what}) is a setting of their code this repository does not "
                             f"run; only static learned or word tokens with DepthCLIP's head")
    dataset = params.get("basic", {}).get("dataset", "nyu")
    depth_range = tuple(float(params.get(dataset, {}).get(k, d)) for k, d in zip(
        ("min_depth", "max_depth"), DEPTH_RANGES.get(dataset, DEPTH_RANGES["nyu"])))
    return layout(strategy.get("templates"), strategy.get("depth_tokens"), strategy.get("object_tokens"),
                  strategy.get("depth_bin_centres"), depth_range, depthclip.get("clip", "RN50"), where)


def layout(template, depth_tokens, object_tokens, bins, depth_range, backbone, where):
    """Layout from their lang_strat names (templates, depth_tokens, object_tokens, depth_bin_centres: train.py's
    flags or their params) and the dataset's (min, max) depth in metres; ValueError naming the setting."""
    if template not in TEMPLATES:
        raise ValueError(f"{where}: templates: {template} is not one of {', '.join(TEMPLATES)}")
    learned = re.fullmatch(r"learned-static-(\d+)", str(depth_tokens))
    if depth_tokens not in DEPTH_WORDS and not learned:
        raise ValueError(f"{where}: depth_tokens: {depth_tokens} is not one of {', '.join(DEPTH_WORDS)} or "
                         f"learned-static-N")
    if object_tokens not in OBJECT_WORDS and object_tokens != "learned-static-1":
        raise ValueError(f"{where}: object_tokens: {object_tokens} is not supported (paper or learned-static-1; "
                         f"imgf tokens are image-conditioned)")
    try:
        centres = bin_centres(bins, depth_range)
    except ValueError as error:
        raise ValueError(f"{where}: depth_bin_centres: {error}") from None
    depth = int(learned.group(1)) if learned else DEPTH_WORDS[depth_tokens]
    return Layout(template, depth, OBJECT_WORDS.get(object_tokens), centres, backbone, tuple(depth_range))


def allowed_checkpoint_globals():
    """The types a PyTorch Lightning checkpoint of theirs pickles besides tensors: OmegaConf's hyper-parameters."""
    try:
        import omegaconf
        from omegaconf import base, dictconfig, listconfig, nodes
    except ImportError:
        return []
    import collections
    import typing
    return [dictconfig.DictConfig, listconfig.ListConfig, base.ContainerMetadata, base.Metadata, nodes.AnyNode,
            nodes.StringNode, nodes.IntegerNode, nodes.FloatNode, nodes.BooleanNode, typing.Any, dict, list, int,
            omegaconf.base.Node, collections.defaultdict]


def read_checkpoint(path, flag="--prompts"):
    """Their .ckpt -> its state_dict, unpickled with weights_only=True and an allow-list (never plain pickle)."""
    import pickle
    try:
        with torch.serialization.safe_globals(allowed_checkpoint_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise ValueError(f"{flag} {path} cannot be read ({error.strerror or error})") from None
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        name = found.group(1) if found else "object"
        hint = " (pip install omegaconf: their hyper-parameters are OmegaConf objects)" if "omegaconf" in name else ""
        raise ValueError(f"{flag} {path} holds a pickled {name} outside the allow-list of types a checkpoint of "
                         f"theirs holds{hint}; it is not loaded") from None
    except Exception as error:
        reason = str(error).strip().split(". ")[0] or type(error).__name__  # e.g. a truncated zip archive's
        raise ValueError(f"{flag} {path} is not a PyTorch checkpoint, or is damaged or truncated ({reason})") from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{flag} {path} has no state_dict; expected a PromptLearningCLIP-MDE Lightning checkpoint")
    return state


def from_auty(ckpt_path, params_path, flag="--prompts", config_flag="--prompts_config"):
    """LearnedPrompts from their Lightning checkpoint and the params YAML it was trained with. Their tokens are
    model.extra_tkns_learnables_{prompt,depth,object}.{i}, each (1, 512); CLIP's BatchNorm statistics
    (model.clip.visual.*, adapted by their training, which leaves CLIP in train mode) come along. A token the YAML
    asks for and the checkpoint lacks is a ValueError (their loader silently keeps a random one)."""
    template, depth, object_word, bins, backbone, depth_range = layout_from_params(
        read_params(params_path, config_flag), params_path)
    state = read_checkpoint(ckpt_path, flag)
    tokens = {}
    for group, count in token_counts(template, depth, object_word).items():
        rows = []
        for i in range(count):
            key = next((k for k in (f"model.extra_tkns_learnables_{group}.{i}",
                                    f"model.extra_tkns_learnables_{group}.{i}.embeddings.weight") if k in state), None)
            if key is None:
                raise ValueError(f"{flag} {ckpt_path} lacks model.extra_tkns_learnables_{group}.{i}, which "
                                 f"{os.path.basename(params_path)} asks for ({count} learned {group} token(s)); "
                                 f"give the checkpoint and the YAML of one run")
            rows.append(state[key].reshape(-1))
        tokens[group] = torch.stack(rows) if rows else torch.zeros(0, 1)
    prefix = "model.clip.visual."
    visual = batchnorm_statistics({key[len(prefix):]: value for key, value in state.items()
                                   if key.startswith(prefix)}) or None
    source = {"file": os.path.abspath(ckpt_path), "params": os.path.abspath(params_path), "backbone": backbone,
              "checkpoint_sha256": backbone_sha256(backbone)}
    return LearnedPrompts(template, depth, object_word, bins, tokens, TEMPERATURE, visual, depth_range, source)


def batchnorm_statistics(state):
    """The BatchNorm statistics of an image tower's state dict (running mean, variance, count: what their training,
    which leaves CLIP in train mode, adapts)."""
    return {key: value for key, value in state.items()
            if key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")}


def backbone_sha256(backbone):
    """The SHA256 of the weights their params name (an OpenAI CLIP name, or a file that is here), else None."""
    if backbone in clip.available_models() or os.path.isfile(backbone):
        return checkpoint_sha256(backbone)
    return None


# ---------------------------------------------------------------- prompts from settings (flags, sweep entries)
WORD_SETTINGS = ("prompt_set", "depth_classes", "bin_set", "bins", "templates", "objects")  # what --prompts replaces
PROMPT_FLAGS = "--depth_classes/--prompt_set, --templates and --objects"  # where a command line's prompts come from


def prompts_from(settings, where=PROMPT_FLAGS):
    """The language side from flag-named settings (a parsed command line's vars, or a sweep entry over them):
    learned tokens from --prompts (learned_prompts.py), or DepthPrompts from the words; prompts longer than CLIP's
    77 tokens are refused here, before any model loads, naming `where` (OpenAI's tokenizer; open_clip's own is asked
    once its model is loaded)."""
    if settings.get("prompts"):
        given = [f"--{key}" for key in WORD_SETTINGS if settings.get(key)]
        if given:
            raise ValueError(f"--prompts sets the words, bins and template; give it or {', '.join(given)}, not both")
        return load_prompts(settings["prompts"], settings.get("prompts_config"), settings.get("temperature"))
    if settings.get("prompts_config"):
        raise ValueError("--prompts_config goes with --prompts RUN.ckpt (a PromptLearningCLIP-MDE checkpoint)")
    prompts = DepthPrompts(settings["depth_classes"] or settings["prompt_set"] or "paper",
                           settings["bins"] or settings["bin_set"] or "paper",
                           settings["templates"] or DepthPrompts.templates,
                           settings["objects"] or DepthPrompts.objects, settings["temperature"])
    if not settings["clip_model"].startswith(open_clip_adapter.PREFIX):
        prompts.check_lengths(where=where)
    return prompts


def load_prompts(path, config=None, temperature=None):
    """--prompts FILE: a .safetensors of this repository, or (with --prompts_config PARAMS.yaml) a
    PromptLearningCLIP-MDE checkpoint; --temperature other than the default replaces the file's."""
    if path.endswith(".ckpt") or config:
        if not config:
            raise ValueError(f"--prompts {path} is a PyTorch Lightning checkpoint: give the params YAML it was "
                             f"trained with as --prompts_config PARAMS.yaml")
        prompts = from_auty(path, config)
    else:
        prompts = LearnedPrompts.load(path)
    if temperature is not None and temperature != TEMPERATURE:
        prompts.temperature = temperature
    return prompts
