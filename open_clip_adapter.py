"""open_clip models for DepthCLIP: `--clip_model open_clip:<model>[@<pretrained>]`, through one small adapter.

    open_clip:ViT-H-14@laion2b_s32b_b79k       a model and one of its pretrained tags (open_clip.list_pretrained())
    open_clip:RN50-quickgelu@/path/RN50.pt     a model and a local checkpoint file
    open_clip:hf-hub:<org>/<repo>              a model on the Hugging Face hub
    open_clip:ViT-B-16                         a model without weights (random, for trying things)

The adapter gives an open_clip model the surface MonoCLIP uses of the vendored CLIP (clip/): encode_text,
encode_image_dense, dense_features, visual, dtype; open_clip's own tokenizer and image mean/std come with it.
Dense features are defined exactly as clip/model.py's encode_image_dense, on open_clip's modules:
  ResNet towers (ModifiedResNet): "trunk" (layer4), "value" = "maskclip" = c_proj(v_proj(trunk)).
  ViT towers (VisionTransformer, LayerScale included): "tokens", "value" = ls_1(out_proj(V(ln_1 x))) of the
  last block, "maskclip" = v = x + ls_1(out_proj(V(ln_1 x))), v = v + ls_2(mlp(ln_2 v)); each then ln_post and
  proj per patch token, the positional embedding resized to the input's patch grid.
Downloads go through open_clip's own cache and progress bars. open_clip_torch is imported only here.
"""
import importlib.metadata
import logging
import os
import re

import torch
import torch.nn.functional as F
from torch import nn

from clip.model import resize_positional_embedding

PREFIX = "open_clip:"


def import_open_clip():
    """The open_clip package, or a RuntimeError in one line: not installed, or installed but failing to import
    (most often a torchvision built for another torch: the line names both and the fix)."""
    try:
        import open_clip
    except ModuleNotFoundError:
        raise RuntimeError("open_clip models need the open_clip_torch package: pip install open_clip_torch") from None
    except Exception as error:
        reason = torchvision_mismatch() or str(error).strip().splitlines()[0]
        raise RuntimeError(f"open_clip_torch is installed but cannot be imported: {reason}") from None
    return open_clip


def torchvision_mismatch():
    """None, or one line saying that the installed torchvision was built for another torch, and the command that
    fixes it (pip can pair them wrongly when PyTorch's own index is out of reach). torch 2.N pairs with torchvision
    0.(N+15), as every 2.x release has."""
    try:
        vision = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return None
    major, minor = (int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    if major != 2 or vision.split("+")[0].split(".")[:2] == ["0", str(minor + 15)]:
        return None
    return (f"torch {torch.__version__} and torchvision {vision} do not belong together (torch 2.{minor} pairs with "
            f"torchvision 0.{minor + 15}); fix it with: pip install \"torchvision==0.{minor + 15}.*\"")


def parse(spec):
    """'open_clip:<model>[@<pretrained>]' -> (model, pretrained or None)."""
    model, _, pretrained = spec[len(PREFIX):].partition("@")
    return model, pretrained or None


def check(spec):
    """(model, pretrained) of a spec open_clip can load; a ValueError naming what it cannot."""
    open_clip = import_open_clip()
    name, pretrained = parse(spec)
    if not name.startswith("hf-hub:") and name not in open_clip.list_models():
        raise ValueError(f"{spec}: open_clip has no model {name!r}; choose one of open_clip.list_models(), e.g. "
                         f"ViT-B-16, or hf-hub:<org>/<repo>")
    if pretrained and not os.path.isfile(pretrained) and not name.startswith("hf-hub:"):
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise ValueError(f"{spec}: {pretrained!r} is neither a pretrained tag of {name} "
                             f"({', '.join(tags) or 'it has none'}) nor a checkpoint file")
    return name, pretrained


def load(spec, device):
    """An open_clip model, as OpenCLIP, fp16 on CUDA and fp32 on a CPU (as clip.load gives OpenAI's). RuntimeError
    in one line (load_failure) when it cannot be made."""
    open_clip = import_open_clip()
    name, pretrained = check(spec)
    precision = "fp16" if torch.device(device).type == "cuda" else "fp32"
    logging.disable(logging.ERROR)  # a failed download is logged by open_clip and the hub, then raised: say it once
    try:
        model = open_clip.create_model(name, pretrained=pretrained, device=device, precision=precision,
                                       require_pretrained=bool(pretrained) or name.startswith("hf-hub:"))
        # (a hub model whose weights fail to download was otherwise made with random weights, its warning silenced)
    except Exception as error:  # torch.load's, pickle's, safetensors' and the hub's own types
        raise RuntimeError(load_failure(open_clip, spec, name, pretrained, error)) from None
    finally:
        logging.disable(logging.NOTSET)
    return OpenCLIP(model.eval(), open_clip.get_tokenizer(name), spec)


DOWNLOAD_FAILURES = ("Failed to download weights", "Failed initial config/weights load from HF Hub")  # how
# open_clip's factory.create_model (open_clip_torch 3.x) begins the error of a download that failed


def load_failure(open_clip, spec, name, pretrained, error):
    """The one line that says why open_clip could not make the model: a download that failed (the network), or the
    weights file at fault, named, with what is wrong with it (unreadable; or missing, unexpected or reshaped keys,
    counted) and what to do: a local file is replaced, a damaged download in open_clip's cache deleted."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    reason = line.split(". ")[0].rstrip(".")  # torch's zip errors go on for five more sentences
    if not pretrained or line.startswith(DOWNLOAD_FAILURES):
        return (f"{spec}: {line}; open_clip keeps downloads in ~/.cache/huggingface, or pass a local file as "
                f"open_clip:{name}@/path/to/checkpoint")
    mismatch = state_dict_mismatch(text)
    if os.path.isfile(pretrained):
        if mismatch:
            return (f"{spec}: {pretrained} does not fit open_clip's {name} ({mismatch}); give a checkpoint of {name}, "
                    f"or name the model it holds weights for (open_clip:<model>@{pretrained})")
        return (f"{spec}: {pretrained} does not load ({type(error).__name__}: {reason}): truncated, damaged or not a "
                f"checkpoint; replace it with a whole copy (compare its size and SHA256 with the original's)")
    try:  # the tag's file in open_clip's cache, downloaded a moment ago: asking again finds it there
        where = open_clip.download_pretrained(open_clip.get_pretrained_cfg(name, pretrained))
    except Exception:
        where = f"the file open_clip downloaded for {name}@{pretrained}"
    return (f"{spec}: {where} does not load ({mismatch or f'{type(error).__name__}: {reason}'}): damaged in "
            f"open_clip's cache; delete it, and it is downloaded again on the next run")


def state_dict_mismatch(text):
    """torch's load_state_dict error text -> '2 missing keys: a, b; 1 unexpected key: c; 1 of another shape: d',
    or None if the text is not one."""
    if "Error(s) in loading state_dict" not in text:
        return None
    faults = []
    for what, label in [("missing", "Missing key(s) in state_dict: "), ("unexpected", "Unexpected key(s) in "
                                                                                      "state_dict: ")]:
        line = next((line for line in text.splitlines() if label in line), "")
        keys = re.findall(r'"([^"]+)"', line)
        if keys:
            faults.append(f"{len(keys)} {what} key{'s' if len(keys) > 1 else ''}: {', '.join(keys[:3])}"
                          + (", …" if len(keys) > 3 else ""))
    reshaped = re.findall(r"size mismatch for ([^:]+):", text)
    if reshaped:
        faults.append(f"{len(reshaped)} of another shape: {', '.join(reshaped[:3])}" + (", …" if len(reshaped) > 3
                                                                                         else ""))
    return "; ".join(faults) or None


class OpenCLIP(nn.Module):
    """An open_clip CLIP seen through the vendored CLIP's surface (see the module's docstring)."""

    def __init__(self, model, tokenizer, name):
        super().__init__()
        import open_clip
        self.model, self.tokenize = model, tokenizer
        self.visual = model.visual
        self.context_length = model.context_length
        self.resnet = isinstance(self.visual, open_clip.modified_resnet.ModifiedResNet)
        if self.resnet:
            self.dense_features = ("trunk", "value", "maskclip")
        elif isinstance(self.visual, open_clip.transformer.VisionTransformer) and self.visual.attn_pool is None:
            self.dense_features = ("tokens", "value", "maskclip")
        else:
            pooler = " with an attentional pooler" if getattr(self.visual, "attn_pool", None) is not None else ""
            raise ValueError(f"{name} has a {type(self.visual).__name__} image tower{pooler}; DepthCLIP's dense "
                             f"features need a ResNet (ModifiedResNet) or a ViT (VisionTransformer) tower without "
                             f"attentional pooling")
        preprocess = open_clip.get_model_preprocess_cfg(model)
        self.mean_std = (tuple(preprocess["mean"]), tuple(preprocess["std"]))

    @property
    def dtype(self):
        return self.visual.conv1.weight.dtype

    def encode_text(self, tokens):
        return self.model.encode_text(tokens)

    @property
    def token_embedding(self):
        return self.model.token_embedding

    @property
    def causal_text(self):
        """Whether encode_token_embeddings may run on fewer positions than the context (a causal mask and the
        feature read at the end token, as OpenAI's CLIP); other towers (bidirectional, pooled elsewhere) may not."""
        return getattr(self.model, "attn_mask", None) is not None and getattr(self.model, "text_pool_type",
                                                                             "argmax") == "argmax"

    def encode_token_embeddings(self, embeddings, eot):
        """(B, L, width) token embeddings, (B,) end-token positions -> (B, embed_dim), as clip/model.py's
        CLIP.encode_token_embeddings, on open_clip's text tower (a causal one: see causal_text)."""
        if not self.causal_text:
            raise ValueError(f"{type(self.model).__name__}'s text tower is not causal with an end-token feature; "
                             f"learned prompt tokens need one (OpenAI-style CLIP text towers)")
        m, L = self.model, embeddings.shape[1]
        cast = m.transformer.get_cast_dtype()
        x = embeddings.to(cast) + m.positional_embedding[:L].to(cast)
        batch_first = getattr(m.transformer, "batch_first", True)
        x = m.transformer(x if batch_first else x.transpose(0, 1), attn_mask=m.attn_mask[:L, :L])
        x = m.ln_final(x if batch_first else x.transpose(0, 1))[torch.arange(x.shape[0]), eot]
        if m.text_projection is None:
            return x
        return m.text_projection(x) if isinstance(m.text_projection, nn.Linear) else x @ m.text_projection

    def encode_image_dense(self, image, features="trunk"):
        """(B, 3, H, W) -> (B, C, H/s, W/s), as clip/model.py's CLIP.encode_image_dense."""
        if features not in self.dense_features:
            raise ValueError(f"features={features!r} is not available for {type(self.visual).__name__}; use one of "
                             f"{', '.join(self.dense_features)}")
        image = image.type(self.dtype)
        visual = self.visual
        if self.resnet:
            trunk = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(image)))))
            if features == "trunk":
                return trunk
            pool = visual.attnpool
            return pool.c_proj(pool.v_proj(trunk.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        x = visual.conv1(image)  # (B, width, h, w)
        B, _, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, hw, width)
        cls = visual.class_embedding.to(x.dtype).expand(B, 1, -1)
        pos = resize_positional_embedding(visual.positional_embedding, visual.grid_size, (h, w))
        x = visual.ln_pre(torch.cat([cls, x], dim=1) + pos.to(x.dtype))  # (B, 1 + hw, width)
        transformer = visual.transformer
        if not transformer.batch_first:
            x = x.transpose(0, 1)
        *blocks, last = transformer.resblocks
        for block in blocks:
            x = block(x)
        if features == "tokens":
            x = last(x)
        else:
            v = last.ls_1(value_path(last, x))
            x = v if features == "value" else maskclip(last, x, v)
        if not transformer.batch_first:
            x = x.transpose(0, 1)
        patches = visual.ln_post(x[:, 1:])  # (B, hw, width)
        if visual.proj is not None:
            patches = patches @ visual.proj
        return patches.transpose(1, 2).reshape(B, -1, h, w)


def value_path(block, x):
    """out_proj(V(ln_1(x))) of an open_clip ResidualAttentionBlock, per token."""
    width = x.shape[-1]
    attn = block.attn
    return attn.out_proj(F.linear(block.ln_1(x), attn.in_proj_weight[2 * width:], attn.in_proj_bias[2 * width:]))


def maskclip(block, x, v):
    """MaskCLIP's last block: the value path v added to the residual, then the block's MLP (LayerScale kept)."""
    v = x + v
    return v + block.ls_2(block.mlp(block.ln_2(v)))
