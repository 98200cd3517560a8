"""Learn DepthCLIP's prompt tokens with CLIP frozen, as Auty & Mikolajczyk (2023) did, and write a prompts file.

    python train.py --data_path NYU_ROOT --clip_model RN50 --output learned.safetensors [--config PARAMS.yaml]
        [--dataset NYU|KITTI] [--train_split train|sync] [--trainfile LIST] [--gt_path KITTI_GT]
        [--template learned-static-1o1d] [--depth_tokens learned-static-7] [--object_tokens paper] [--bins dset-even-7]
        [--epochs 25] [--batch_size 16] [--augment none|flip|full] [--bn frozen|train] [--cache DIR]
        [--checkpoint_dir DIR] [--resume] [--tensorboard DIR]

Their training setting is the default, each part a flag, read from their code (PromptLearningCLIP-MDE at 1583acf:
params/*.yaml, losses/SILogLoss.py, modules/MainRunnerLM.py): SILog with alpha 10 and lambda 0.85 as their code
computes it (over every valid pixel of the batch at once: 10 sqrt(mean g^2 - 0.85 mean(g)^2), g = log pred - log gt),
AdamW (lr 3.57e-4, weight decay 0.1), OneCycleLR (div_factor 25, final_div_factor 100, momentum cycled 0.85-0.95),
gradient-norm clipping 0.1, 25 epochs, batch 16, tokens initialized N(0, 0.02), the prediction upsampled
bilinearly to the ground truth (unclipped, as their training reads it) and scored where gt > 0.001 m.

Data: NYU's official_splits/train (795 images that datasets/prepare_nyu.py builds) by default; --train_split sync is
BTS's 24,231 frames (<data_path>/sync, the list shipped: their published NYU runs trained on it); --dataset KITTI is
BTS's Eigen training list (23,158 frames, shipped). Without --augment full the model sees the evaluation input
(NYU: DepthCLIP's 416x544 crop; KITTI: the 352x1216 benchmark crop). --val_count images held out of the training
data (never the test set) are scored each epoch with the evaluation protocol (NYU: DepthCLIP's; KITTI: BTS's, Garg
crop, 80 m); the best (lowest AbsRel) and the last tokens are kept.

--bn frozen (default here) keeps CLIP exactly as released, so with --augment none or flip the image features never
change: with --cache DIR they are read from eval.py's feature cache (both views, once; then kept in memory up to
--keep_gb, 1.7 MiB an image for RN50 on NYU) and an epoch costs the text tower and the head only. --bn train is
their setting: their training leaves CLIP in train mode (only requires_grad is frozen), so BatchNorm uses batch
statistics and its running statistics adapt; the image tower then runs every step and the prompts file carries the
adapted statistics. --augment full is their training pipeline (AdaBins' dataloader: NYU's registered box or KITTI's
benchmark crop, rotation, random crop, flip, gamma/brightness/colour), drawn in their order; the image tower then
runs every step.

    torchrun --nproc_per_node N train.py ...   # each process takes a share of every batch (gloo on CPU, NCCL on GPU)
"""
import argparse
import contextlib
import io
import json
import math
import os
import random
import sys
import time
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

import cli
import learned_prompts
import options
import protocols
from calculate_error import score
from clip_runtime import pick_device, start_distributed
from datasets import KITTIEigen, NYUDepthV2, kitti, mean_std, nyu
from datasets.images import MIN_DEPTH, open_image, resolve_normalization, to_rgb
from feature_cache import FeatureCache
from monoclip import MonoCLIP, depth_head

DEFAULTS = learned_prompts.TRAINING_DEFAULTS
SILOG_ALPHA, SILOG_LAMBDA = 10.0, 0.85
CHECKPOINT_FORMAT = 2  # 2: the run's settings recorded, checked on --resume


def silog_sums(pred, gt, mask):
    """(valid pixels n, sum g, sum g^2), g = log pred - log gt where mask, pred (B, 1, h, w) upsampled bilinearly
    (align_corners=True) to gt (B, 1, H, W): what their SILogLoss pools over the whole batch."""
    pred = F.interpolate(pred, gt.shape[-2:], mode="bilinear", align_corners=True)
    g = torch.log(pred[mask]) - torch.log(gt[mask])
    return g.numel(), g.sum(), (g ** 2).sum()


def silog_of(n, total, squares):
    """Their SILogLoss.forward from the batch's sums: alpha sqrt(mean g^2 - lambda mean(g)^2)."""
    return SILOG_ALPHA * torch.sqrt(squares / n - SILOG_LAMBDA / n ** 2 * total ** 2)


def silog(pred, gt, mask):
    """Their SILog over one batch's valid pixels, all images together."""
    return silog_of(*silog_sums(pred, gt, mask))


def global_silog(pred, gt, mask, world, anchor):
    """The batch's SILog when its images are spread over `world` processes: each process's sums, all-reduced, with
    the gradient flowing through this process's own part only (the token gradients are then summed), so that the
    loss and its gradient equal one process's on the whole batch. anchor: a tensor of the parameters (for a process
    whose share of the batch is empty). None when no image of the batch has a valid pixel."""
    if world == 1:
        return silog(pred, gt, mask) if mask.any() else None
    n, total, squares = silog_sums(pred, gt, mask) if len(pred) else (0, anchor * 0, anchor * 0)
    totals = torch.stack([torch.as_tensor(float(n)), total.detach().double(), squares.detach().double()])
    dist.all_reduce(totals)
    if not totals[0].item():
        return None
    return silog_of(totals[0].item(), total + (totals[1].float() - total).detach(),
                    squares + (totals[2].float() - squares).detach())


class Pipeline(NamedTuple):
    """Their training augmentation's settings for one dataset (AdaBins' dataloader, which theirs is, and their params'
    nyu/kitti sections)."""
    box: Callable  # (width, height) -> the PIL box kept before anything else
    rotation: float  # degrees either way
    depth_scale: float  # PNG units per metre
    brightness: tuple  # the brightness factor's range
    size: tuple  # (rows, cols) of the random crop


NYU_PIPELINE = Pipeline(
    box=lambda width, height: (43, 45, 608, 472),  # "to avoid blank boundaries due to pixel registration"
    rotation=2.5, depth_scale=nyu.DEPTH_SCALE, brightness=(0.75, 1.25), size=nyu.INPUT_SIZE)
KITTI_PIPELINE = Pipeline(
    box=lambda width, height: ((width - kitti.CROP_SIZE[1]) // 2, height - kitti.CROP_SIZE[0],
                               (width - kitti.CROP_SIZE[1]) // 2 + kitti.CROP_SIZE[1], height),  # the benchmark crop
    rotation=1.0, depth_scale=kitti.DEPTH_SCALE, brightness=(0.9, 1.1), size=(352, 704))


def augment_full(image, depth, rng, nprng, pipeline=NYU_PIPELINE):
    """Their training pipeline for one image (datasets/dataloader.py, DataLoadPreprocess in train mode), drawing in
    their order: the pipeline's box (NYU: the registered region; KITTI: the benchmark crop); a rotation of
    (u - 0.5) * 2 * rotation degrees (bilinear for the image, nearest for the depth); /255 and /depth_scale; a random
    crop of pipeline.size (x, then y, randint); a flip if u > 0.5; if u > 0.5, gamma U(0.9, 1.1), brightness in the
    pipeline's range and per-channel colour U(0.9, 1.1) (numpy's draw), clipped to [0, 1].
    image, depth: PIL images (RGB, 16-bit); rng: a random.Random, nprng: a numpy RandomState ->
    ((H, W, 3) float32 in [0, 1], (H, W, 1) float32 metres, not clipped)."""
    box = pipeline.box(*image.size)
    image, depth = image.crop(box), depth.crop(box)
    angle = (rng.random() - 0.5) * 2 * pipeline.rotation
    image, depth = image.rotate(angle, resample=Image.BILINEAR), depth.rotate(angle, resample=Image.NEAREST)
    image = np.asarray(image, dtype=np.float32) / 255.0
    depth = np.asarray(depth, dtype=np.float32)[..., None] / pipeline.depth_scale
    height, width = pipeline.size
    x, y = rng.randint(0, image.shape[1] - width), rng.randint(0, image.shape[0] - height)
    image, depth = image[y:y + height, x:x + width], depth[y:y + height, x:x + width]
    if rng.random() > 0.5:
        image, depth = image[:, ::-1].copy(), depth[:, ::-1].copy()
    if rng.random() > 0.5:
        image = image ** rng.uniform(0.9, 1.1) * rng.uniform(*pipeline.brightness)
        image = np.clip(image * nprng.uniform(0.9, 1.1, size=3)[None, None], 0, 1)
    return image, depth


class Memo:
    """Values kept in memory after their first computation, up to a budget of bytes; beyond it they are computed
    again each time (for the feature cache: read again from disk)."""

    def __init__(self, budget):
        self.budget, self.used, self.kept = budget, 0, {}

    def __call__(self, key, compute, nbytes):
        if key in self.kept:
            return self.kept[key]
        value = compute()
        if self.used + nbytes(value) <= self.budget:
            self.kept[key] = value
            self.used += nbytes(value)
        return value


class NYUTraining:
    """NYU's training images: official_splits/train (the 795 labeled ones, default) or BTS's sync folder (24,231
    frames of the raw videos, their published runs' data). The model sees DepthCLIP's 416x544 evaluation crop; the
    held-out images are scored with DepthCLIP's protocol (Eigen crop, 10 m)."""

    name, pipeline = "NYU", NYU_PIPELINE

    def __init__(self, args):
        self.dataset = NYUDepthV2(args.data_path, train_list(args), normalize=args.normalize, split=args.train_split,
                                  with_rgb=not args.cache, list_flag="--trainfile")
        self.warned = set()  # (depth file, what) said once in this run

    def depth_file(self, index):
        return os.path.join(self.dataset.root, self.dataset.pairs[index][1])

    @staticmethod
    def read_depth(path):
        return nyu.read_depth_mm(path).astype(np.uint16)  # whole millimetres: exact

    @staticmethod
    def metres(raw, clip):
        """(B, 480, 640) stored values -> (B, 1, 480, 640) metres; clip: to 10 m, as evaluated (their training does
        not clip)."""
        return nyu.depth_metres(np.stack(raw)[:, None], clip)

    def model_region(self, gt, indices):
        """(B, 1, 480, 640) -> (B, 1, 416, 544): the region the model sees (DepthCLIP's crop)."""
        top, bottom, left, right = nyu.PASTE_BOX
        return gt[:, :, top:bottom, left:right]

    def errors(self, gt, pred, indices):
        return score(gt, pred, "nyu_depthclip")


class KITTITraining:
    """KITTI's Eigen training split (BTS's list of 23,158 frames, their published runs' data). The model sees the
    352x1216 benchmark crop (eval.py's input); the held-out frames are scored with BTS's protocol (Garg crop, 80 m)."""

    name, pipeline = "KITTI", KITTI_PIPELINE

    def __init__(self, args):
        self.dataset = KITTIEigen(args.data_path, args.gt_path, train_list(args), normalize=args.normalize,
                                  with_rgb=not args.cache, list_flag="--trainfile")
        self.warned = set()  # (depth file, what) said once in this run

    def depth_file(self, index):
        return os.path.join(self.dataset.gt_root, self.dataset.pairs[index][1])

    @staticmethod
    def read_depth(path):
        raw = kitti.read_depth_raw(path)
        kitti.check_frame(*raw.shape, path)
        return raw.astype(np.uint16)  # depth * 256, whole numbers: exact

    @staticmethod
    def metres(raw, clip):
        """[(H, W)] stored values -> (B, 1, 376, 1242) metres, each frame padded with zeros (scoring caps at 80 m)."""
        frames = torch.zeros(len(raw), 1, *kitti.MAX_FRAME)
        for frame, r in zip(frames, raw):
            frame[0, :r.shape[0], :r.shape[1]] = torch.from_numpy(r / np.float32(kitti.DEPTH_SCALE))
        return frames

    def model_region(self, gt, indices):
        """(B, 1, 376, 1242) padded frames -> (B, 1, 352, 1216): each frame's benchmark crop, what the model sees."""
        return torch.stack([gt[k][(slice(None), *kitti.benchmark_box(*self.dataset.frame_size(i)))]
                            for k, i in enumerate(indices)])

    def errors(self, gt, pred, indices):
        return score(gt, pred, "kitti_bts", frame_sizes=[self.dataset.frame_size(i) for i in indices])


TRAINING_SETS = {"NYU": NYUTraining, "KITTI": KITTITraining}


def train_list(args):
    """The list of training pairs: --trainfile, else NYU's official train split: 'auto' (every pair found); NYU
    sync: BTS's list; KITTI: BTS's Eigen training list (the last two shipped in datasets/)."""
    if args.trainfile:
        return args.trainfile
    if args.dataset == "KITTI":
        return kitti.TRAIN_LIST
    return "auto" if args.train_split == "train" else nyu.BTS_TRAIN_LIST


class Augmented:
    """--augment full: each step's images through augment_full, drawn from generators seeded by (seed, epoch, image),
    so that a resumed run draws what an uninterrupted one does; the image tower runs on them every step."""

    def __init__(self, model, data, seed, bn):
        self.model, self.data, self.seed, self.bn = model, data, seed, bn
        self.mean, self.std = (torch.tensor(v).view(3, 1, 1) for v in mean_std(data.dataset.normalize))

    def __call__(self, indices, epoch):
        """-> ((B, hw, C) patch features, grid, (B, 1, H, W) ground truth in metres)."""
        images, depths = [], []
        for i in indices:
            rgb_file = os.path.join(self.data.dataset.root, self.data.dataset.pairs[i][0])
            depth_file = self.data.depth_file(i)
            rng, nprng = random.Random(f"{self.seed}-{epoch}-{i}"), np.random.RandomState([self.seed, epoch, i])
            image, depth = augment_full(to_rgb(open_image(rgb_file), rgb_file)[0], open_image(depth_file), rng,
                                        nprng, self.data.pipeline)
            images.append((torch.from_numpy(image).permute(2, 0, 1) - self.mean) / self.std)
            depths.append(torch.from_numpy(depth).permute(2, 0, 1))
        with image_tower_mode(self.model, self.bn):
            patches, grid = self.model.view_features(torch.stack(images), flip=False)
        return patches, grid, torch.stack(depths).to(patches.device)


@contextlib.contextmanager
def image_tower_mode(model, bn):
    """The image tower in train mode for a pass with --bn train (BatchNorm on batch statistics, running statistics
    updated, as their training leaves CLIP), back in eval mode after."""
    model.clip.visual.train(bn == "train")
    try:
        yield
    finally:
        model.clip.visual.eval()


def layout_settings(args):
    """(template, depth, object word, bins, depth range) from the layout flags (or --config's params, which set the
    flags' defaults); the depth range is the dataset's, as their params' min_depth and max_depth."""
    template, depth, object_word, bins, _, depth_range = learned_prompts.layout(
        args.template, args.depth_tokens, args.object_tokens, args.bins or args.bin_set,
        learned_prompts.DEPTH_RANGES[args.dataset.lower()], args.clip_model, "the layout flags")
    return template, depth, object_word, bins, depth_range


def initial_tokens(template, depth, object_word, width, seed):
    """N(0, 0.02) tokens for the layout's learned slots, from torch's generator seeded with seed."""
    generator = torch.Generator().manual_seed(seed)
    return {group: torch.nn.Parameter(torch.randn(n, width, generator=generator) * 0.02)
            for group, n in learned_prompts.token_counts(template, depth, object_word).items()}


def read_init(args):
    """--init FILE -> LearnedPrompts: a .safetensors of this repository, or their Lightning .ckpt with --config
    PARAMS.yaml (the run it came from); None without --init."""
    if not args.init:
        return None
    if args.init.endswith(".ckpt"):  # with --config: options.check_train_arguments
        return learned_prompts.from_auty(args.init, args.config, flag="--init", config_flag="--config")
    return learned_prompts.LearnedPrompts.load(args.init, flag="--init")


def tokens_from(given, template, depth, object_word, width):
    """The layout's learned slots as parameters holding the tokens of --init's file; ValueError naming both layouts
    when the file's token counts or width differ from this run's."""
    needed = learned_prompts.token_counts(template, depth, object_word)
    have = {group: len(given.tokens.get(group, ())) for group in needed}
    if have != needed or given.width not in (None, width):
        describe = lambda counts, w: ", ".join(f"{n} {g}" for g, n in counts.items()) + f" token(s) of width {w}"  # noqa: E731
        raise ValueError(f"--init {given.source['file']} holds {describe(have, given.width)}; this run's layout "
                         f"(--template, --depth_tokens, --object_tokens or --config) needs {describe(needed, width)}")
    return {group: torch.nn.Parameter(given.tokens[group].clone() if n else torch.zeros(0, width))
            for group, n in needed.items()}


def split_train_val(dataset, val_count, seed):
    """(train indices, val indices): val_count images held out, drawn with the seed, the same on every resume."""
    if val_count >= len(dataset):
        raise ValueError(f"--val_count {val_count} leaves no training image of the {len(dataset)} found; lower it")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[val_count:]), sorted(order[:val_count])


class Features:
    """Each image's patch features for training: from the feature cache, or the image tower (BatchNorm in train
    mode with --bn train). Cached features stay in memory after their first read, up to the memo's budget."""

    def __init__(self, model, dataset, cache, bn, memo):
        self.model, self.dataset, self.cache, self.bn, self.memo = model, dataset, cache, bn, memo

    def cached(self, indices):
        """-> ([(2, hw, C) the image and its mirror image], grid), from the cache (and the memo)."""
        def read(index):
            file = os.path.join(self.dataset.root, self.dataset.pairs[index][0])
            load = lambda path: self.dataset.load_rgb(path, self.dataset.normalize)  # noqa: E731
            return self.cache.view_features(self.model, [file], load, flip=True)
        both = [self.memo(("features", i), lambda: read(i), lambda v: v[0].nbytes) for i in indices]
        return [b[0] for b in both], both[0][1]

    def __call__(self, indices, mirror):
        """-> ((B, hw, C), grid): each image's features, its mirror image's where mirror (B,) says so. The tower
        sees the chosen views in one pass, so that with --bn train BatchNorm normalizes over the batch and moves its
        statistics once per step, as their training step does."""
        if self.cache is not None:
            both, grid = self.cached(indices)
            return torch.stack([views[int(m)] for views, m in zip(both, mirror)]), grid
        rgb = torch.stack([self.dataset[i][0] for i in indices])
        rgb = torch.where(mirror.view(-1, 1, 1, 1), rgb.flip(3), rgb)
        with image_tower_mode(self.model, self.bn):
            return self.model.view_features(rgb, flip=False)

    def both_views(self, indices):
        """Validation: ((2B, hw, C) the images then their mirror images, grid), BatchNorm on its running statistics
        whatever --bn says, as their validation (Lightning puts the model in eval mode), statistics left as they
        are."""
        if self.cache is not None:
            both, grid = self.cached(indices)
            return torch.cat([torch.stack([b[v] for b in both]) for v in range(2)]), grid
        rgb = torch.stack([self.dataset[i][0] for i in indices])
        with image_tower_mode(self.model, "frozen"):
            return self.model.view_features(rgb, flip=True)


class GroundTruth:
    """(B, 1, H, W) metres in the dataset's frame; each PNG decoded once and its 16-bit values kept (0.6 MB a NYU
    image, 0.9 MB a KITTI frame), up to the memo's budget."""

    def __init__(self, data, memo):
        self.data, self.memo = data, memo

    def __call__(self, indices, clip=False):
        """clip: NYU's ground truth clipped to 10 m, as evaluated; their training reads it unclipped."""
        raw = [self.memo(("depth", i), lambda: self.data.read_depth(self.data.depth_file(i)), lambda v: v.nbytes)
               for i in indices]
        return self.data.metres(raw, clip)


def evaluate_val(model, prompts, features, ground_truth, data, indices, rank=0, world=1):
    """Mean evaluation-protocol metrics and SILog (per image, then averaged) over the held-out images, flip-averaged
    as evaluated (learned prompts clamp each view to their range, as their validation_step); under torchrun each
    process scores its share and every process gets the same means. An image without a scored pixel is left out of
    the means and named once on stderr, as eval.py does; none scored is a ValueError."""
    rows = []
    with torch.no_grad():
        encoded = prompts.encode(model.clip, model.backbone.tokenize)
        mine = indices[rank::world]
        for start in range(0, len(mine), 8):
            part = mine[start:start + 8]
            patches, grid = features.both_views(part)
            pred = model.depth_from_features(patches, grid, data.dataset.input_size, True, encoded)
            gt = ground_truth(part, clip=True).to(pred.device)
            errors = data.errors(gt, pred, part)
            single = depth_head(patches[:len(part)], grid, encoded)
            seen = data.model_region(gt, part)
            for i, index in enumerate(part):
                sums = silog_sums(single[i:i + 1], seen[i:i + 1], seen[i:i + 1] > MIN_DEPTH)
                rows.append({"index": index, "silog": silog_of(*sums).item() if sums[0] else math.nan,
                             **{name: errors[name][i].item() for name in protocols.NYU_METRICS}})
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, rows)
        rows = [row for part in gathered for row in part]
    scored = []
    for row in rows:
        if all(math.isfinite(row[name]) for name in ["silog", *protocols.NYU_METRICS]):
            scored.append(row)
        else:
            warn_once(data, row["index"], "held out but has no pixel with valid ground truth in the scored region: "
                      "left out of the validation means", rank)
    if not scored:
        raise ValueError(f"none of the {len(rows)} held-out images has a pixel with valid ground truth in the scored "
                         f"region; check the depth files or raise --val_count")
    return {name: float(np.mean([row[name] for row in scored])) for name in ["silog", *protocols.NYU_METRICS]}


def warn_once(data, index, what, rank=0):
    """One stderr line per (depth file, what) in a run (data.warned holds what was said), from rank 0."""
    file = data.dataset.pairs[index][1]
    if rank == 0 and (file, what) not in data.warned:
        data.warned.add((file, what))
        tqdm.write(f"warning: {file}: {what}", file=sys.stderr)


def rng_states():
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def save_checkpoint(path, state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    cli.write_file(path, buffer.getvalue(), "--checkpoint_dir")


def curves_png(log):
    """A picture of the run: training loss per step, validation SILog, delta1 and AbsRel per epoch."""
    import matplotlib.pyplot as plt

    import visualize
    steps = [r for r in log if "loss" in r]
    epochs = [r for r in log if "val" in r]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=0.8, label="training SILog (per step)")
    left.plot([r["step"] for r in epochs], [r["val"]["silog"] for r in epochs], "o-", label="validation SILog")
    left.set_xlabel("step")
    left.legend()
    right.plot([r["epoch"] for r in epochs], [r["val"]["a1"] for r in epochs], "o-", label="validation δ1")
    right.plot([r["epoch"] for r in epochs], [r["val"]["abs_rel"] for r in epochs], "s-", label="validation AbsRel")
    right.set_xlabel("epoch")
    right.legend()
    return visualize.figure_png(figure)


RUN_SETTINGS = ("dataset", "train_split", "trainfile", "val_count", "init", "epochs", "batch_size", "lr",
                "weight_decay", "div_factor", "final_div_factor", "grad_clip", "seed", "augment", "bn", "temperature")
# what a run is made of: a resumed run continues only with the same values (the schedule, the optimizer's state and
# the data order depend on them), and the prompts file records them


class Run(NamedTuple):
    """What training builds before its first step, and what the steps change."""
    model: MonoCLIP
    prompts: learned_prompts.LearnedPrompts  # holds the tokens being learned
    parameters: list  # the tokens as the optimizer sees them
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    data: object  # NYUTraining or KITTITraining
    train_idx: list
    val_idx: list
    steps_per_epoch: int


def build(args, device):
    """The frozen CLIP, the tokens (from --init or N(0, 0.02) draws), the data split, AdamW and OneCycleLR as their
    configure_optimizers builds them."""
    torch.manual_seed(args.seed)
    template, depth, object_word, bins, depth_range = layout_settings(args)
    given = read_init(args)
    model = MonoCLIP(args.clip_model, device=device or args.device, precision="fp32",
                     fold_batchnorm=args.bn != "train", runtime=args.runtime,
                     prompts=given if given and given.visual_state and args.bn == "train" else None)
    if given and given.visual_state and args.bn != "train":
        tqdm.write(f"note: --init {args.init}: its BatchNorm statistics are left out with --bn frozen (CLIP as "
                   f"released); --bn train starts from them", file=sys.stderr)
    width = model.clip.token_embedding.weight.shape[1]
    tokens = tokens_from(given, template, depth, object_word, width) if given else \
        initial_tokens(template, depth, object_word, width, args.seed)
    prompts = learned_prompts.LearnedPrompts(template, depth, object_word, bins, tokens, args.temperature,
                                             depth_range=depth_range)
    data = TRAINING_SETS[args.dataset](args)
    data.dataset.normalize = resolve_normalization(args.normalize, model)
    train_idx, val_idx = split_train_val(data.dataset, args.val_count, args.seed)
    steps_per_epoch = math.ceil(len(train_idx) / args.batch_size)
    parameters = [t for t in tokens.values() if t.numel()]
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, cycle_momentum=True, base_momentum=0.85,
        max_momentum=0.95, div_factor=args.div_factor, final_div_factor=args.final_div_factor)
    return Run(model, prompts, parameters, optimizer, scheduler, data, train_idx, val_idx, steps_per_epoch)


def run_settings(args):
    return {key: getattr(args, key) for key in RUN_SETTINGS}


def resume(args, run, last_path):
    """Continue from last_path: the tokens, optimizer, schedule, BatchNorm statistics and random state as the last
    finished epoch left them -> (first epoch, log, best). ValueError when the checkpoint is of another layout or
    backbone, or was made with other settings (naming each flag and both values): OneCycleLR's schedule spans the
    run's steps and cannot be stretched, and a changed rate or batch would leave the file recording what was not
    used."""
    state = read_last(last_path)
    p = run.prompts
    if state["layout"] != [p.template, p.depth, p.object_word, list(p.bins)] or \
            state["backbone"] != run.model.backbone.weights_id():
        raise ValueError(f"--resume: {last_path} is a run of another layout or backbone; give another "
                         f"--checkpoint_dir or leave out --resume")
    recorded = state.get("settings") or {"epochs": state["scheduler"]["total_steps"] // run.steps_per_epoch}
    refuse_changed(args, recorded, last_path, "OneCycleLR schedule")
    with torch.no_grad():
        for name, value in state["tokens"].items():
            run.prompts.tokens[name].copy_(value)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if state.get("visual"):
        run.model.clip.visual.load_state_dict(state["visual"], strict=False)
    torch.set_rng_state(state["rng"]["torch"])
    return state["epoch"] + 1, state["log"], state["best"]


def read_last(path):
    """--resume's checkpoint (train.py's and train_scale.py's); ValueError naming a damaged or truncated file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a disk that filled while it was written, a copy cut short
        reason = str(error).strip().split(". ")[0] or type(error).__name__
        raise ValueError(f"--resume: {path} is damaged or truncated ({reason}); remove it to train from the start, "
                         f"or give another --checkpoint_dir") from None


def refuse_changed(args, recorded, path, schedule):
    """ValueError naming each flag whose value differs from the run being resumed (recorded: {flag: value}), with
    the run's value: the schedule spans the run's epochs and cannot be stretched, and a changed rate or batch would
    leave the written file recording what was not used."""
    changed = [f"--{key} {getattr(args, key)} (the run has {value})" for key, value in recorded.items()
               if getattr(args, key) != value]
    if changed:
        how = (f"; its {schedule} spans {recorded['epochs']} epochs and cannot be extended: to train on, start a new "
               f"run from what it wrote with --init {args.output}") if "--epochs " in " ".join(changed) else ""
        raise ValueError(f"--resume: {path} was made with other settings: {', '.join(changed)}; give the run's "
                         f"values or another --checkpoint_dir{how}")


def batch(args, run, features, ground_truth, augmented, chosen, epoch, flips):
    """This process's share of one step's images -> ((B, hw, C) patch features, grid, (B, 1, H, W) ground truth in
    metres, in the region the model sees), each image mirrored where the epoch's draw says so (--augment flip)."""
    indices = [run.train_idx[i] for i in chosen]
    if not indices:  # a process whose share of a last, small batch is empty (torchrun)
        return torch.zeros(0), None, torch.zeros(0, 1, 1, 1)
    if args.augment == "full":
        return augmented(indices, epoch)
    mirror = flips[chosen] < 0.5 if args.augment == "flip" else torch.zeros(len(indices), dtype=torch.bool)
    patches, grid = features(indices, mirror)
    gt = run.data.model_region(ground_truth(indices), indices).to(run.model.device)
    gt = torch.where(mirror.view(-1, 1, 1, 1).to(gt.device), gt.flip(3), gt)
    return patches, grid, gt


def step(args, run, patches, grid, gt, world, where):
    """One optimizer step as Lightning runs theirs: SILog, zero_grad, backward (token gradients summed over
    processes), gradient-norm clipping, AdamW, OneCycleLR -> (the loss, the learning rate the step used, as their
    LearningRateMonitor logs it); (None, None) when no image of the batch has a valid pixel (then only the schedule
    moves, so that the epochs keep their learning rates)."""
    encoded = run.prompts.encode(run.model.clip, run.model.backbone.tokenize)
    pred = depth_head(patches.float(), grid, encoded) if len(gt) else torch.zeros(0)
    anchor = sum(t.sum() for t in run.parameters)  # an empty share still gives every token a (zero) gradient
    loss = global_silog(pred, gt, gt > MIN_DEPTH, world, anchor)
    if loss is None:
        run.scheduler.step()
        return None, None
    if not torch.isfinite(loss):
        raise ValueError(f"the loss is {loss.item()} at {where}; the last good tokens are in the last checkpoint "
                         f"of --checkpoint_dir {args.checkpoint_dir}, if any; lower --lr")
    rate = run.scheduler.get_last_lr()[0]  # the rate this step uses, as their LearningRateMonitor logs it
    run.optimizer.zero_grad()
    loss.backward()
    for parameter in run.parameters if world > 1 else []:  # each process's part of the whole batch's gradient
        dist.all_reduce(parameter.grad)
    if args.grad_clip:  # 0: none, as Lightning's gradient_clip_val
        torch.nn.utils.clip_grad_norm_(run.parameters, args.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    return loss.item(), rate


class Log:
    """log.jsonl (rank 0), the records in memory for the checkpoint and curves.png, and TensorBoard if asked."""

    def __init__(self, path, records, rank, tensorboard=None):
        self.path, self.records, self.rank = path, records, rank
        self.writer = None
        if tensorboard and rank == 0:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(tensorboard)
        if rank == 0:  # a resumed run: what a killed run logged after its last checkpoint goes
            with open(path, "w") as f:
                f.writelines(json.dumps(record) + "\n" for record in records)

    def add(self, record):
        self.records.append(record)
        if self.rank == 0:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if self.writer and "loss" in record:
            self.writer.add_scalar("train/loss", record["loss"], record["step"])
            self.writer.add_scalar("train/lr", record["lr"], record["step"])
        if self.writer and "val" in record:
            for name in ("silog", "a1", "abs_rel", "rmse"):
                self.writer.add_scalar(f"val/{name}", record["val"][name], record["epoch"])
        if "val" in record and self.rank == 0:
            val = record["val"]
            tqdm.write(f"{'initial tokens' if record['epoch'] == 0 else 'epoch ' + str(record['epoch'])}: validation "
                       f"SILog {val['silog']:.4f}, δ1 {val['a1']:.3f}, AbsRel {val['abs_rel']:.3f}")

    def close(self):
        if self.writer:
            self.writer.close()


def train(args, rank=0, world=1, device=None):
    """The training loop -> (Run, best {'epoch', 'val', 'tokens'}, log records); under torchrun (world > 1) every
    process holds the same tokens and takes its share of each batch, rank 0 writes the logs and checkpoints."""
    run = build(args, device)
    model, dataset = run.model, run.data.dataset
    cache = None
    if args.cache:
        cache = FeatureCache.of(args.cache, model, run.data.name, dataset)
    memo = Memo(args.keep_gb * 2 ** 30)
    features, ground_truth = Features(model, dataset, cache, args.bn, memo), GroundTruth(run.data, memo)
    augmented = Augmented(model, run.data, args.seed, args.bn)
    last_path = os.path.join(args.checkpoint_dir, "last.pt")
    first_epoch, records, best = 0, [], None
    if args.resume and os.path.isfile(last_path):
        first_epoch, records, best = resume(args, run, last_path)
    elif args.resume and rank == 0:
        tqdm.write(f"note: --resume: no checkpoint {last_path} yet; training from the start", file=sys.stderr)
    log = Log(os.path.join(args.checkpoint_dir, "log.jsonl"), records, rank, args.tensorboard)
    validate = lambda: evaluate_val(model, run.prompts, features, ground_truth, run.data, run.val_idx,  # noqa: E731
                                    rank, world)
    if first_epoch == 0:  # where the starting tokens stand, to measure learning against
        log.add({"step": 0, "epoch": 0, "val": validate()})
    for epoch in range(first_epoch, args.epochs):
        order = torch.randperm(len(run.train_idx), generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
        flips = torch.rand(len(run.train_idx), generator=torch.Generator().manual_seed(args.seed * 1000 + epoch + 1))
        bar = tqdm(range(run.steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", unit="step",
                   dynamic_ncols=True, disable=not args.progress or rank != 0)
        started = time.perf_counter()
        for i in bar:
            chosen = order[i * args.batch_size:(i + 1) * args.batch_size][rank::world]  # this process's share
            patches, grid, gt = batch(args, run, features, ground_truth, augmented, chosen, epoch, flips)
            for index, seen in zip(chosen.tolist(), gt.flatten(1).gt(MIN_DEPTH).any(1).tolist()):
                if not seen:
                    warn_once(run.data, run.train_idx[index], "no pixel with valid ground truth in "
                              "the region the model sees: it adds nothing to the loss", rank)
            global_step = epoch * run.steps_per_epoch + i + 1
            loss, rate = step(args, run, patches, grid, gt, world, f"epoch {epoch + 1}, step {i + 1}")
            if loss is None:
                continue  # no image of the batch with ground truth: said above, image by image
            log.add({"step": global_step, "epoch": epoch + 1, "lr": rate, "loss": loss})
            bar.set_postfix(loss=f"{loss:.4f}")
        seconds = time.perf_counter() - started  # the epoch's training steps, data included, validation not
        val = validate()
        log.add({"step": (epoch + 1) * run.steps_per_epoch, "epoch": epoch + 1, "seconds": seconds, "val": val})
        snapshot = {name: t.detach().clone() for name, t in run.prompts.tokens.items()}
        if best is None or val["abs_rel"] < best["val"]["abs_rel"]:
            best = {"epoch": epoch + 1, "val": val, "tokens": snapshot}
        if rank == 0:
            save_checkpoint(last_path, {
                "format": CHECKPOINT_FORMAT, "epoch": epoch, "tokens": snapshot, "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(), "rng": rng_states(), "settings": run_settings(args),
                "layout": [run.prompts.template, run.prompts.depth, run.prompts.object_word, list(run.prompts.bins)],
                "backbone": model.backbone.weights_id(), "log": log.records, "best": best,
                "visual": batchnorm_state(model) if args.bn == "train" else None})
        if world > 1:
            dist.barrier()  # every process resumes from the same checkpoint
    log.close()
    return run, best, log.records


def batchnorm_state(model):
    """The image tower's BatchNorm statistics (running mean, variance, count), as their training adapts them."""
    return {key: value.detach().clone() for key, value in
            learned_prompts.batchnorm_statistics(model.clip.visual.state_dict()).items()}


def config_file(argv):
    """--config's value, read before the whole command line so that their params can set the other flags'
    defaults (the pattern of a config pre-pass: the flag itself is defined with the others, in options.py)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    return pre.parse_known_args(argv)[0].config


def main(argv=None):
    p = options.train_options()
    config = config_file(argv)
    if config:  # their params set the flags' defaults; flags given on the command line win
        try:
            params = learned_prompts.read_params(config, "--config")
        except ValueError as error:
            p.error(str(error))
        strategy, optimizer, basic = params["depthclip"]["lang_strat"], params.get("optimizer", {}), \
            params.get("basic", {})
        p.set_defaults(template=strategy.get("templates"), depth_tokens=strategy.get("depth_tokens"),
                       object_tokens=strategy.get("object_tokens"), bin_set=strategy.get("depth_bin_centres"),
                       epochs=basic.get("max_epochs", DEFAULTS["epochs"]),
                       batch_size=basic.get("batch_size", DEFAULTS["batch_size"]),
                       lr=optimizer.get("lr", DEFAULTS["lr"]), weight_decay=optimizer.get("wd", DEFAULTS["weight_decay"]),
                       div_factor=optimizer.get("div_factor", DEFAULTS["div_factor"]),
                       final_div_factor=optimizer.get("final_div_factor", DEFAULTS["final_div_factor"]),
                       grad_clip=optimizer.get("gradient_clip_val", DEFAULTS["grad_clip"]),
                       dataset=str(basic.get("dataset", "nyu")).upper())
    args = p.parse_args(options.train_argv(argv))
    options.check_train_arguments(p, args)
    args.data_path = args.data_path or (nyu.DEFAULT_DATA_PATH if args.dataset == "NYU" else kitti.DEFAULT_DATA_PATH)
    args.checkpoint_dir = args.checkpoint_dir or os.path.splitext(args.output)[0] + "_run"
    rank, world, device = start_distributed(pick_device(args.device))
    with cli.OutputFile(args.output) if rank == 0 else contextlib.nullcontext() as output, \
            cli.output_dir(args.checkpoint_dir, "--checkpoint_dir") if rank == 0 else contextlib.nullcontext():
        if world > 1:
            dist.barrier()  # the checkpoint folder exists before any process looks into it
        run, best, log = train(args, rank, world, device)
        if rank != 0:
            dist.destroy_process_group()
            return
        p = run.prompts
        chosen = best["tokens"] if best and not args.keep_last else {k: t.detach() for k, t in p.tokens.items()}
        result = learned_prompts.LearnedPrompts(p.template, p.depth, p.object_word, p.bins, chosen, p.temperature,
                                                batchnorm_state(run.model) if args.bn == "train" else None,
                                                p.depth_range)
        listing = train_list(args)
        training = {"training": run_settings(args),
                    "data": {"data_path": os.path.abspath(args.data_path),
                             "split": args.train_split if args.dataset == "NYU" else "eigen_train",
                             "list": listing if listing == "auto" else os.path.abspath(listing)},
                    "validation": best["val"] if best else None, "kept": "last" if args.keep_last else "best",
                    "processes": world}
        output.write(result.file_bytes(run.model.clip_model, run.model.backbone.checkpoint_sha256, training))
        cli.write_file(os.path.join(args.checkpoint_dir, "curves.png"), curves_png(log), "--checkpoint_dir")
    if world > 1:
        dist.destroy_process_group()
    kept = next(r for r in reversed(log) if "val" in r) if args.keep_last else best  # the validation record kept
    print(f"{args.output} written: the {training['kept']} tokens (epoch {kept['epoch']}, validation δ1 "
          f"{kept['val']['a1']:.3f}, AbsRel {kept['val']['abs_rel']:.3f}); log and curves in {args.checkpoint_dir}")


if __name__ == "__main__":
    cli.run(main)
