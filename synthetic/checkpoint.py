#!/usr/bin/env python3
"""Seeded random CLIP checkpoints in OpenAI's state-dict format, for tests, benchmarks and trying the repo
without downloads.

    python -m synthetic.checkpoint OUT.pt --rn50            # RN50's full geometry (about 400 MB): timings
    python -m synthetic.checkpoint OUT.pt [--seed 0] [--vision_layers 1,1,1,1] [--text_width 64] [--text_layers 1]
    python -m synthetic.checkpoint OUT.pt --vit 32 [--vit_width 64] [--vit_layers 2] [--embed_dim 64]

The weights mean nothing; they pin the computation down. The draws (one numpy RandomState, tensors
filled in state-dict order) are those of the parity references' generator, so golden.json applies.
Defaults: ResNet-50 geometry (2048 channels after layer4, embed dim 1024) with one bottleneck per stage
and a one-layer, width-64 text tower, about 100 MB.
"""
import argparse
import math
import os
import sys

if __name__ == "__main__" and not __package__:  # run by its path: import from the repository's root, as with -m
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import torch

import cli

RN50_GEOMETRY = dict(vision_layers=(3, 4, 6, 3), text_width=512, text_layers=12)  # OpenAI's RN50 shapes


def _batchnorm(name, channels):
    return [(f"{name}.weight", (channels,), "norm_weight"), (f"{name}.bias", (channels,), "bn_shift"),
            (f"{name}.running_mean", (channels,), "bn_shift"), (f"{name}.running_var", (channels,), "bn_var"),
            (f"{name}.num_batches_tracked", (), "zero")]


def _transformer(name, width, layers):
    entries = []
    for i in range(layers):
        block = f"{name}.resblocks.{i}"
        entries += [(f"{block}.attn.in_proj_weight", (3 * width, width), "linear"),
                    (f"{block}.attn.in_proj_bias", (3 * width,), "bias"),
                    (f"{block}.attn.out_proj.weight", (width, width), "linear"),
                    (f"{block}.attn.out_proj.bias", (width,), "bias"),
                    (f"{block}.ln_1.weight", (width,), "norm_weight"), (f"{block}.ln_1.bias", (width,), "bias"),
                    (f"{block}.mlp.c_fc.weight", (4 * width, width), "linear"),
                    (f"{block}.mlp.c_fc.bias", (4 * width,), "bias"),
                    (f"{block}.mlp.c_proj.weight", (width, 4 * width), "linear"),
                    (f"{block}.mlp.c_proj.bias", (width,), "bias"),
                    (f"{block}.ln_2.weight", (width,), "norm_weight"), (f"{block}.ln_2.bias", (width,), "bias")]
    return entries


def _resnet_tower(layers, width, embed_dim, resolution):
    entries = []
    stem = [(3, width // 2), (width // 2, width // 2), (width // 2, width)]
    for i, (cin, cout) in enumerate(stem, start=1):
        entries += [(f"visual.conv{i}.weight", (cout, cin, 3, 3), "conv")] + _batchnorm(f"visual.bn{i}", cout)
    inplanes = width
    for stage, blocks in enumerate(layers):
        planes = width * 2 ** stage
        for b in range(blocks):
            block = f"visual.layer{stage + 1}.{b}"
            entries += [(f"{block}.conv1.weight", (planes, inplanes, 1, 1), "conv")] + _batchnorm(f"{block}.bn1", planes)
            entries += [(f"{block}.conv2.weight", (planes, planes, 3, 3), "conv")] + _batchnorm(f"{block}.bn2", planes)
            entries += [(f"{block}.conv3.weight", (4 * planes, planes, 1, 1), "conv")]
            entries += _batchnorm(f"{block}.bn3", 4 * planes)
            if b == 0 and (stage > 0 or inplanes != 4 * planes):
                entries += [(f"{block}.downsample.0.weight", (4 * planes, inplanes, 1, 1), "conv")]
                entries += _batchnorm(f"{block}.downsample.1", 4 * planes)
            inplanes = 4 * planes
    channels, grid = 32 * width, resolution // 32
    entries.append(("visual.attnpool.positional_embedding", (grid * grid + 1, channels), "embedding"))
    for proj in ("k_proj", "q_proj", "v_proj"):
        entries += [(f"visual.attnpool.{proj}.weight", (channels, channels), "linear"),
                    (f"visual.attnpool.{proj}.bias", (channels,), "bias")]
    entries += [("visual.attnpool.c_proj.weight", (embed_dim, channels), "linear"),
                ("visual.attnpool.c_proj.bias", (embed_dim,), "bias")]
    return entries


def _vit_tower(patch, width, layers, embed_dim, resolution):
    grid = resolution // patch
    entries = [("visual.class_embedding", (width,), "embedding"),
               ("visual.positional_embedding", (grid * grid + 1, width), "embedding"),
               ("visual.proj", (width, embed_dim), "projection"),
               ("visual.conv1.weight", (width, 3, patch, patch), "conv"),
               ("visual.ln_pre.weight", (width,), "norm_weight"), ("visual.ln_pre.bias", (width,), "bias")]
    entries += _transformer("visual.transformer", width, layers)
    return entries + [("visual.ln_post.weight", (width,), "norm_weight"), ("visual.ln_post.bias", (width,), "bias")]


def _text_tower(width, layers, embed_dim, context_length=77, vocab_size=49408):
    entries = [("positional_embedding", (context_length, width), "embedding"),
               ("token_embedding.weight", (vocab_size, width), "embedding")]
    entries += _transformer("transformer", width, layers)
    return entries + [("ln_final.weight", (width,), "norm_weight"), ("ln_final.bias", (width,), "bias"),
                      ("text_projection", (width, embed_dim), "projection"), ("logit_scale", (), "logit_scale")]


def layout(vision_layers=(1, 1, 1, 1), vision_width=64, embed_dim=1024, text_width=64, text_layers=1,
           vit_patch=None, vit_width=64, vit_layers=2, image_resolution=224):
    """(key, shape, kind) for every tensor, in the order the generator fills them."""
    if vit_patch:
        image = _vit_tower(vit_patch, vit_width, vit_layers, embed_dim, image_resolution)
    else:
        image = _resnet_tower(vision_layers, vision_width, embed_dim, image_resolution)
    return image + _text_tower(text_width, text_layers, embed_dim)


def _draw(rng, shape, kind):
    """One tensor's values, float64, drawn from rng (kinds 'zero' and 'logit_scale' draw nothing)."""
    if kind == "conv":
        return rng.standard_normal(shape) * np.sqrt(2.0 / math.prod(shape[1:]))
    if kind == "linear":  # (out, in): scaled by fan-in
        return rng.standard_normal(shape) / np.sqrt(shape[-1])
    if kind == "projection":  # (in, out), applied as x @ W: scaled by fan-in
        return rng.standard_normal(shape) / np.sqrt(shape[0])
    if kind == "embedding":
        return rng.standard_normal(shape) * 0.02
    if kind == "bias":
        return rng.standard_normal(shape) * 0.01
    if kind == "norm_weight":
        return 1.0 + 0.1 * rng.standard_normal(shape)
    if kind == "bn_shift":
        return 0.1 * rng.standard_normal(shape)
    if kind == "bn_var":
        return 1.0 + 0.5 * rng.random_sample(shape)
    if kind == "logit_scale":
        return np.array(np.log(1 / 0.07))
    raise ValueError(kind)


def make_state_dict(seed=0, **geometry):
    """A float32 CLIP state dict filled in layout order from numpy.random.RandomState(seed)."""
    rng = np.random.RandomState(seed)
    state = {}
    for key, shape, kind in layout(**geometry):
        if kind == "zero":
            state[key] = torch.tensor(0, dtype=torch.long)
        else:
            state[key] = torch.from_numpy(np.asarray(_draw(rng, shape, kind), dtype=np.float32))
    return state


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--rn50", action="store_true",
                        help="RN50's full geometry (3,4,6,3 bottlenecks, 12-layer width-512 text tower), for timings")
    parser.add_argument("--seed", type=cli.bounded(int, at_least=0), default=0)
    parser.add_argument("--vision_layers", "--vision-layers", default="1,1,1,1", help="bottlenecks per ResNet stage")
    parser.add_argument("--text_width", "--text-width", type=cli.bounded(int, at_least=1), default=64)
    parser.add_argument("--text_layers", "--text-layers", type=cli.bounded(int, at_least=1), default=1)
    parser.add_argument("--vit", type=cli.bounded(int, at_least=1), metavar="PATCH", help="a ViT image tower with this patch size")
    parser.add_argument("--vit_width", "--vit-width", type=cli.bounded(int, at_least=1), default=64)
    parser.add_argument("--vit_layers", "--vit-layers", type=cli.bounded(int, at_least=1), default=2)
    parser.add_argument("--embed_dim", "--embed-dim", type=cli.bounded(int, at_least=1), help="joint embedding size (default 1024 for ResNet, 64 for ViT)")
    args = parser.parse_args(argv)
    if args.rn50:
        state = make_state_dict(args.seed, **RN50_GEOMETRY)
    else:
        state = make_state_dict(args.seed, vision_layers=tuple(int(n) for n in args.vision_layers.split(",")),
                                text_width=args.text_width, text_layers=args.text_layers,
                                embed_dim=args.embed_dim or (64 if args.vit else 1024),
                                vit_patch=args.vit, vit_width=args.vit_width, vit_layers=args.vit_layers)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    torch.save(state, args.out)
    print(f"checkpoint written to {args.out} ({cli.size_of(args.out)}); use it as --clip_model {args.out}")


if __name__ == "__main__":
    main()
