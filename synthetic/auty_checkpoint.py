#!/usr/bin/env python3
"""Seeded checkpoints in the format of PromptLearningCLIP-MDE (Auty & Mikolajczyk, 2023) and their params YAML, for
tests and for trying --prompts RUN.ckpt --prompts_config PARAMS.yaml without their training.

    python -m synthetic.auty_checkpoint OUT_DIR --clip_model CLIP.pt [--template learned-static-1o1d]
        [--depth_tokens learned-static-7] [--object_tokens paper] [--bins dset-even-7] [--seed 1] [--batchnorm_seed 2]

writes OUT_DIR/run.ckpt (a PyTorch Lightning checkpoint: state_dict with model.clip.* and
model.extra_tkns_learnables_{prompt,depth,object}.{i}, each (1, width), hyper_parameters as OmegaConf when it is
installed) and OUT_DIR/params.yaml (depthclip.lang_strat as their params/*.yaml). Tokens are N(0, 0.02) draws from
numpy.random.RandomState(seed), groups in the order prompt, depth, object; with --batchnorm_seed the image tower's
BatchNorm statistics are moved as their training in train mode moves them (running mean + N(0, 0.1), running
variance x U(0.5, 1.5), in state-dict order).
"""
import argparse
import os
import sys

if __name__ == "__main__" and not __package__:  # run by its path: import from the repository's root, as with -m
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import torch
import yaml

import cli
import clip
import learned_prompts

def draw_tokens(counts, width=512, seed=1):
    """{group: (n, width) float32}: N(0, 0.02) from RandomState(seed), groups in the order prompt, depth, object."""
    rng = np.random.RandomState(seed)
    return {group: torch.from_numpy((rng.standard_normal((n, width)) * 0.02).astype(np.float32))
            for group, n in counts.items()}


def adapted_batchnorm(clip_state, seed):
    """CLIP's state dict with the image tower's BatchNorm statistics moved, seeded."""
    rng = np.random.RandomState(seed)
    state = dict(clip_state)
    for key in list(state):
        if key.startswith("visual.") and key.endswith(".running_mean"):
            stem = key[:-len("running_mean")]
            shape = state[key].shape
            state[key] = state[key] + torch.from_numpy(rng.normal(0, 0.1, shape).astype(np.float32))
            state[stem + "running_var"] = state[stem + "running_var"] * torch.from_numpy(
                rng.uniform(0.5, 1.5, shape).astype(np.float32))
            state[stem + "num_batches_tracked"] = torch.tensor(100)
    return state


def params(clip_model, template, depth_tokens, object_tokens, bins, dataset="nyu"):
    """Their params YAML's content, as far as the language side and evaluation read it."""
    return {"basic": {"dataset": dataset, "batch_size": 16, "max_epochs": 25},
            "optimizer": {"name": "adamw", "lr": 0.000357, "wd": 0.1, "div_factor": 25, "final_div_factor": 100,
                          "gradient_clip_val": 0.1},
            "model": {"name": "depthclip"}, "loss": {"names": ["silog"], "coeffs": [1]},
            "depthclip": {"clip": clip_model, "lang_strat": {"templates": template, "depth_tokens": depth_tokens,
                                                             "object_tokens": object_tokens,
                                                             "depth_bin_centres": bins}},
            "nyu": {"min_depth": 0.001, "max_depth": 10, "eigen_crop": True, "garg_crop": False, "do_kb_crop": False},
            "kitti": {"min_depth": 0.001, "max_depth": 80, "eigen_crop": False, "garg_crop": True,
                      "do_kb_crop": True}}


def write_run(folder, clip_model, template="learned-static-1o1d", depth_tokens="learned-static-7",
              object_tokens="paper", bins="dset-even-7", seed=1, batchnorm_seed=None, dataset="nyu", drop=None):
    """Write folder/run.ckpt and folder/params.yaml; returns their paths. drop: a state-dict key to leave out."""
    config = params(clip_model, template, depth_tokens, object_tokens, bins, dataset)
    clip_state = clip.load(clip_model, device="cpu")[0].state_dict()  # CLIP as their model holds it (fp16-rounded)
    if batchnorm_seed is not None:
        clip_state = adapted_batchnorm(clip_state, batchnorm_seed)
    width = clip_state["token_embedding.weight"].shape[1]
    state = {f"model.clip.{key}": value for key, value in clip_state.items()}
    template_text, depth, object_word, *_ = learned_prompts.layout_from_params(config, "write_run")
    counts = learned_prompts.token_counts(template_text, depth, object_word)
    for group, tokens in draw_tokens(counts, width, seed).items():
        state.update({f"model.extra_tkns_learnables_{group}.{i}": row[None].clone() for i, row in enumerate(tokens)})
    state.pop(drop, None)
    try:
        from omegaconf import OmegaConf
        hyper = {"args": OmegaConf.create(config)}
    except ImportError:
        hyper = {"args": config}
    os.makedirs(folder, exist_ok=True)
    ckpt, yaml_path = os.path.join(folder, "run.ckpt"), os.path.join(folder, "params.yaml")
    torch.save({"epoch": 24, "global_step": 1000, "pytorch-lightning_version": "1.9.0", "state_dict": state,
                "hyper_parameters": hyper}, ckpt)
    cli.write_file(yaml_path, yaml.safe_dump(config, sort_keys=False).encode())
    return ckpt, yaml_path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("--clip_model", required=True, help="a CLIP checkpoint file (e.g. python -m synthetic.checkpoint)")
    p.add_argument("--template", default="learned-static-1o1d")
    p.add_argument("--depth_tokens", default="learned-static-7")
    p.add_argument("--object_tokens", default="paper")
    p.add_argument("--bins", default="dset-even-7")
    p.add_argument("--seed", type=cli.bounded(int, at_least=0), default=1)
    p.add_argument("--batchnorm_seed", type=cli.bounded(int, at_least=0))
    args = p.parse_args(argv)
    ckpt, yaml_path = write_run(args.folder, args.clip_model, args.template, args.depth_tokens, args.object_tokens,
                                args.bins, args.seed, args.batchnorm_seed)
    print(f"checkpoint written to {ckpt} ({cli.size_of(ckpt)}) with its params {yaml_path}")


if __name__ == "__main__":
    main()
