"""Train RSA's LanScale (rsa.py) as their train_3d.py does: a caption's CLIP text feature -> the global scale and
shift that make a relative model's inverse depth metric, learned on NYU, KITTI and VOID together.

    python train_scale.py --output scale.safetensors [--clip_model RN50] [--captions THEIR_TEXT_FOLDER]
        --nyu_path NYU_ROOT --nyu_relative DIR --kitti_path KITTI_RAW --kitti_relative DIR
        --void_path VOID_ROOT --void_relative DIR [--datasets NYU,KITTI,VOID] [--relative_kind disparity|depth]
        [--epochs 50] [--batch_size 4] [--lr 3e-5] [--end_lr 1e-5] [--loss Huber] [--val_count 50]
        [--checkpoint_dir DIR] [--resume] [--tensorboard DIR] [--cache DIR]

The relative model runs before training, not in it: its output for each training image is read from
<DIR>/<the image's path in the list, extension replaced by .npy>, float32 at the ground truth's size as their
training sees it (NYU and VOID 480x640, KITTI the 352x1216 benchmark crop), inverse depth (--relative_kind depth:
a relative depth, inverted first). Captions are their text_all files (datasets/captions.py), text features come
from CLIP's text tower once per caption (rsa.CaptionEncoder; --cache keeps them on disk).

Their setting, read from github.com/Adonis-galaxy/RSA at rsa.RSA_COMMIT (train_3d.py, loss.py, utils.py,
configs/arguments_train_3d_dpt.txt), each part a flag:
  * every step takes one batch of each dataset; an epoch ends when any dataset runs out of batches (their loop
    is over NYU's loader and stops when KITTI's is exhausted); NYU and KITTI are shuffled each epoch, VOID is read
    in list order from its start every epoch (their VOID loader has shuffle=False), so only its first images are
    ever seen; a last, smaller batch is kept (drop_last=False);
  * each training image gets one of its 15 captions at random each time it is drawn (their get_text);
  * depth = 1 / (s r + t + 1e-8); the loss (scale_loss) is their L1Loss: Huber (delta 1, their configs; --loss)
    per pixel where 0.2 < gt < max (NYU 10, KITTI 80, VOID 5 m: protocols.PROTOCOLS' *_rsa rows, 0.2 everywhere as their
    change_to_void leaves it), averaged per image, weighted by the image's valid fraction, summed over the batch;
  * NYU's and VOID's losses are divided by their own detached value, KITTI's is not (their loss_kitti / norm
    went to a misspelt name, loss_kittt; --normalize_kitti divides it too); each backpropagated in turn;
  * Adam (lr 3e-5, no weight decay), gradient-norm clipping at 1.0, the learning rate decayed per step as
    (lr - end_lr) (1 - k / total)^0.9 + end_lr after step k, total = epochs x NYU's batches per epoch (so it never
    reaches end_lr: epochs end at KITTI's last batch);
  * NYU's training ground truth is zeroed outside the registered box (rows 45:472, cols 43:608); no flips, crops
    or colour changes (their augmentation is commented out).
Ours, not theirs: --val_count images of each training list are held out and scored each epoch with their evaluation
(calculate_error.score_image, the first caption) instead of choosing the kept weights on the test sets; the kept
weights are those of the epoch their rule would keep (at least half of the compared metrics no worse than the kept
ones'), or the last with --keep_last. Draws come from generators seeded by (seed, epoch), so a resumed run repeats an
uninterrupted one.

    torchrun --nproc_per_node N train_scale.py ...   # each process takes a share of every batch, gradients summed
"""
import contextlib
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import cli
import options
import protocols
import rsa
from calculate_error import score_image
from clip_runtime import FrozenCLIP, pick_device, start_distributed
from datasets import captions, kitti, nyu, void
from train import NYU_PIPELINE, Memo, read_last, refuse_changed, save_checkpoint, split_train_val

DATASETS = ("NYU", "KITTI", "VOID")
PIXEL_LOSSES = {"L1": torch.nn.L1Loss, "Huber": torch.nn.HuberLoss, "L2": torch.nn.MSELoss}  # their --loss_type
CHECKPOINT_FORMAT = 2  # 2: the run's settings recorded, checked on --resume
RUN_SETTINGS = ("epochs", "lr", "end_lr", "loss", "grad_clip", "normalize_kitti", "seed", "val_count", "init")
# what a resumed run must share with the run it continues (the schedule, the optimizer's state and the draws)
# the metrics their best-model rule compares, per dataset (train_3d.py: eval_measures indices 1,2,3,6,7,8 for NYU
# and VOID, 1,3,5,6,7,8 for KITTI); the a-metrics are better higher
BEST_RULE = {"NYU": ("abs_rel", "log10", "rmse", "a1", "a2", "a3"),
             "KITTI": ("abs_rel", "rmse", "rmse_log", "a1", "a2", "a3"),
             "VOID": ("abs_rel", "log10", "rmse", "a1", "a2", "a3")}


def scale_loss(depth, gt, min_depth, max_depth, loss="Huber"):
    """Their L1Loss (loss.py): depth (B, H, W), gt (B, 1, H, W) metres -> scalar. Per image: the pixel loss summed
    where min_depth < gt < max_depth, divided by (n + 1e-6) valid pixels, times (n + 1e-6) / (H W); summed over the
    batch (not averaged). Computed in their order of operations."""
    valid = (gt > min_depth) & (gt < max_depth)
    pixel = PIXEL_LOSSES[loss](reduction="none")(depth.unsqueeze(1), gt)
    pixel = torch.where(valid, pixel, torch.zeros_like(pixel)).reshape(len(gt), -1)
    count = valid.reshape(len(gt), -1).sum(dim=-1) + 1e-6
    return (pixel.sum(dim=-1) / count * (count.to(pixel.dtype) / gt[0].numel())).sum()


def poly_lr(step, total, lr, end_lr):
    """The learning rate of training step `step` (1, 2, ...): their first step runs at the optimizer's lr; after
    step k they set (lr - end_lr) (1 - k / total)^0.9 + end_lr for the next."""
    return lr if step == 1 else (lr - end_lr) * (1 - (step - 1) / total) ** 0.9 + end_lr


class TrainingSet:
    """One dataset's training images: image paths as listed (what captions and relative maps are found by) and
    ground-truth files; ground truth as their training loader gives it and as their evaluation reads it."""

    def __init__(self, name, images, depths, relative_dir, captions_dir, kind, memo):
        self.name, self.images, self.depths = name, images, depths
        self.relative_dir, self.captions_dir, self.kind, self.memo = relative_dir, captions_dir, kind, memo
        self.protocol = protocols.PROTOCOLS[protocols.resolve(name, "rsa")]

    def __len__(self):
        return len(self.images)

    def captions(self, index):
        return captions.read_captions(captions.caption_path(self.captions_dir, self.images[index]))

    def eval_depth(self, index):
        """(H, W) float32 metres as their evaluation reads it: NYU and VOID the whole frame, KITTI the benchmark
        crop (their loader's do_kb_crop)."""
        path = self.depths[index]
        if self.name == "NYU":
            return nyu.read_depth_mm(path) / np.float32(nyu.DEPTH_SCALE)
        if self.name == "VOID":
            return void.load_depth(path)
        depth = kitti.read_depth_raw(path) / np.float32(kitti.DEPTH_SCALE)
        return depth[kitti.benchmark_box(*depth.shape)]

    def train_depth(self, index):
        """(H, W) float32 metres as their training loader gives it: their evaluation's, NYU's zeroed outside the
        registered box ("to avoid blank boundaries due to pixel registration")."""
        depth = self.eval_depth(index)
        if self.name == "NYU":
            left, top, right, bottom = NYU_PIPELINE.box(*nyu.IMAGE_SIZE)
            registered = np.zeros_like(depth)
            registered[top:bottom, left:right] = depth[top:bottom, left:right]
            return registered
        return depth

    @property
    def frame(self):
        """(rows, cols) of the training ground truth, which the relative maps must match."""
        return {"NYU": nyu.FRAME, "KITTI": kitti.CROP_SIZE, "VOID": void.FRAME}[self.name]

    def relative_path(self, index):
        return os.path.join(self.relative_dir, os.path.splitext(self.images[index].lstrip("/"))[0] + ".npy")

    def relative(self, index, header_only=False):
        """(H, W) float32 relative map of an image, checked against its training ground truth's size and (unless
        header_only, which reads the .npy header alone) for values LanScale's formula cannot take."""
        path = self.relative_path(index)
        if not os.path.isfile(path):
            raise ValueError(f"no relative map {path} for {self.name} image {self.images[index]}; run the relative "
                             f"model on the list's images first, or give --{self.name.lower()}_relative the folder")
        try:
            relative = np.load(path, mmap_mode="r" if header_only else None)
        except (OSError, ValueError) as error:
            raise ValueError(f"{path} is not a readable .npy ({str(error).splitlines()[0]})") from None
        if relative.shape != tuple(self.frame):
            size = lambda shape: "x".join(map(str, shape))  # noqa: E731
            region = "the 352x1216 benchmark crop" if self.name == "KITTI" else "the whole frame"
            raise ValueError(f"{path} is {size(relative.shape)} but {self.name}'s training ground truth is "
                             f"{size(self.frame)} (rows x cols); cache the relative model's output at that size "
                             f"({region})")
        if header_only:
            return None
        rsa.check_relative(relative, self.kind, path)
        return relative.astype(np.float32)

    def check(self):
        """Before anything is written: every image has its 15 captions and a relative map of the right size (a
        ValueError naming the first that does not; the maps' values are checked when they are read)."""
        for index in range(len(self)):
            self.captions(index)
            self.relative(index, header_only=True)

    def batch(self, indices):
        """-> ((B, H, W) relative, (B, 1, H, W) ground truth), from memory where the memo kept them."""
        keep = lambda key, compute: self.memo((self.name, key), compute, lambda v: v.nbytes)  # noqa: E731
        relative = np.stack([keep(("relative", i), lambda i=i: self.relative(i)) for i in indices])
        gt = np.stack([keep(("depth", i), lambda i=i: self.train_depth(i)) for i in indices])[:, None]
        return torch.from_numpy(relative), torch.from_numpy(gt)


def training_sets(args, memo):
    """{name: TrainingSet} of --datasets, in that order; their lists by default."""
    sets = {}
    for name in args.datasets:
        folder = captions.split_folder(args.captions, name, "train")
        relative = getattr(args, f"{name.lower()}_relative")
        if not relative:
            raise ValueError(f"--datasets has {name}: give --{name.lower()}_relative, the folder of its relative maps")
        if name == "NYU":
            pairs = nyu.read_pairs(args.nyu_path, args.nyu_list, "sync", "--nyu_list")
            root = os.path.join(args.nyu_path, nyu.split_folder("sync"))
            images, depths = [rgb for rgb, _ in pairs], [os.path.join(root, d) for _, d in pairs]
        elif name == "KITTI":
            gt_path = args.kitti_gt_path or os.path.join(args.kitti_path, kitti.GT_FOLDER)
            pairs, _ = kitti.read_pairs(args.kitti_path, gt_path, args.kitti_list, "--kitti_list")
            images, depths = [rgb for rgb, _ in pairs], [os.path.join(gt_path, d) for _, d in pairs]
        else:
            if not args.void_list:
                raise ValueError("--datasets has VOID: give --void_list, their data_splits/void/train_image.txt (the "
                                 "repository ships VOID's test list only)")
            entries = void.read_entries(args.void_path, args.void_list)  # their order: VOID is not shuffled
            images, depths = [image for image, _ in entries], [os.path.join(args.void_path, d) for _, d in entries]
        sets[name] = TrainingSet(name, images, depths, relative, folder, args.relative_kind, memo)
        sets[name].check()
    return sets


def epoch_plan(sizes, batch_size, seed, epoch):
    """The steps of one epoch: [{dataset: indices into its training list}], their order: NYU and KITTI shuffled by
    a generator seeded with (seed, epoch), VOID from the start of its list; as many steps as the shortest dataset
    has batches (the last batch may be smaller)."""
    steps = min(math.ceil(n / batch_size) for n in sizes.values())
    orders = {name: np.arange(n) if name == "VOID" else np.random.RandomState([seed, epoch, DATASETS.index(name)])
              .permutation(n) for name, n in sizes.items()}
    return [{name: orders[name][s * batch_size:(s + 1) * batch_size].tolist() for name in sizes}
            for s in range(steps)]


def caption_draws(sets, plan, seed, epoch):
    """One caption per image and step of the plan: their get_text's rng.randint(0, 14), from a generator seeded
    with (seed, epoch) instead of Python's global one."""
    rng = random.Random(f"{seed}-{epoch}")
    return [{name: [captions.pick_caption(sets[name].captions(i), "train", rng) for i in step[name]]
             for name in step} for step in plan]


def step_losses(model, encoder, sets, chosen, texts, kind, loss):
    """{dataset: this process's part of the batch's loss} (a zero with the graph where its share is empty)."""
    losses = {}
    for name, indices in chosen.items():
        if not indices:
            losses[name] = sum(p.sum() for p in model.parameters()) * 0
            continue
        relative, gt = sets[name].batch(indices)
        scale, shift = model(encoder(texts[name]))
        device = scale.device
        depth = rsa.metric_depth(relative.to(device), scale, shift, kind, eps=rsa.TRAIN_EPS)
        losses[name] = scale_loss(depth, gt.to(device), *sets[name].protocol.valid_range, loss)
    return losses


def normalized(losses, world, normalize_kitti):
    """What their three backward calls take, in their order: NYU's and VOID's losses divided by their batch total
    (detached, + 1e-8, in float32 as theirs), KITTI's as it is unless normalize_kitti; under torchrun the totals
    are all-reduced first, so each process's part is divided by the whole batch's loss.
    -> ([loss to backpropagate per dataset], {dataset: the whole batch's loss})."""
    totals = torch.stack([value.detach() for value in losses.values()])
    if world > 1:
        dist.all_reduce(totals)
    parts = [value / (total.abs() + rsa.TRAIN_EPS) if name != "KITTI" or normalize_kitti else value
             for (name, value), total in zip(losses.items(), totals)]
    return parts, dict(zip(losses, totals.tolist()))


def validate(model, encoder, sets, held_out, kind, rank=0, world=1):
    """{dataset: mean metrics} over the held-out images, scored as their evaluation (calculate_error.score_image, first
    caption, no eps); each process scores its share under torchrun."""
    results = {}
    with torch.no_grad():
        for name, indices in held_out.items():
            if not indices:
                continue
            data, rows = sets[name], []
            for start in range(0, len(indices[rank::world]), 8):
                part = indices[rank::world][start:start + 8]
                scale, shift = model(encoder([captions.pick_caption(data.captions(i), "eval") for i in part]))
                relative = torch.from_numpy(np.stack([data.relative(i) for i in part])).to(scale.device)
                depth = rsa.metric_depth(relative, scale, shift, kind).cpu().numpy()
                rows += [score_image(data.eval_depth(i), d, data.protocol) for i, d in zip(part, depth)]
            if world > 1:
                gathered = [None] * world
                dist.all_gather_object(gathered, rows)
                rows = [row for part in gathered for row in part]
            rows = [row for row in rows if all(math.isfinite(v) for v in row.values())]
            if rows:
                results[name] = {metric: float(np.mean([row[metric] for row in rows])) for metric in data.protocol.metrics}
    return results


def keeps(val, best):
    """Their rule for a new best (train_3d.py: is_best >= 9 of 18): at least half of the compared metrics no worse
    than the kept ones'."""
    compared = [(name, metric) for name in val if name in best for metric in BEST_RULE[name]]
    no_worse = sum(val[n][m] >= best[n][m] if m.startswith("a") else val[n][m] <= best[n][m] for n, m in compared)
    return no_worse * 2 >= len(compared)


def curves_png(log):
    """Training losses per step and dataset; validation AbsRel and delta1 per epoch and dataset."""
    import matplotlib.pyplot as plt

    import visualize
    steps, epochs = [r for r in log if "losses" in r], [r for r in log if r.get("val")]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    colour = {name: f"C{k}" for k, name in enumerate(DATASETS)}  # one per dataset in both panels
    for name in (steps[0]["losses"] if steps else []):
        left.plot([r["step"] for r in steps], [r["losses"][name] for r in steps], lw=0.8, color=colour[name],
                  label=f"{name} training loss")
    left.set_xlabel("step")
    left.set_yscale("log")
    for name in (epochs[-1]["val"] if epochs else []):
        right.plot([r["epoch"] for r in epochs], [r["val"][name]["abs_rel"] for r in epochs], "s-",
                   color=colour[name], label=f"{name} AbsRel")
        right.plot([r["epoch"] for r in epochs], [r["val"][name]["a1"] for r in epochs], "o--", color=colour[name],
                   label=f"{name} δ1")
    right.set_xlabel("epoch")
    for axes in (left, right):
        if axes.lines:
            axes.legend(fontsize=7)
    return visualize.figure_png(figure)


def train(args, rank=0, world=1, device=None):
    """The training loop -> (model, best, log, settings of the run); rank 0 writes the logs and checkpoints."""
    backbone = FrozenCLIP(args.clip_model, device=device or args.device, precision=args.precision)
    encoder = rsa.CaptionEncoder(backbone, args.cache)
    if args.init:
        model, _ = rsa.load_scale_model(args.init, encoder.width, "--init")
    else:
        torch.manual_seed(args.seed)  # PyTorch's initialization, drawn from the seed alone
        model = rsa.LanScale(encoder.width)
    model = model.to(backbone.device).train()
    sets = training_sets(args, Memo(args.keep_gb * 2 ** 30))
    split = {name: split_train_val(data.images, args.val_count, args.seed) for name, data in sets.items()}
    train_idx = {name: s[0] for name, s in split.items()}
    held_out = {name: s[1] for name, s in split.items()}
    first = args.datasets[0]  # their schedule's length: epochs x NYU's batches
    total_steps = args.epochs * math.ceil(len(train_idx[first]) / args.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    run = {"datasets": list(args.datasets), "clip": backbone.weights_id(), "relative_kind": args.relative_kind,
           "batch_size": args.batch_size, "sizes": {name: len(data) for name, data in sets.items()},
           "settings": {key: getattr(args, key) for key in RUN_SETTINGS}}
    first_epoch, log, best, global_step = 0, [], None, 0
    last_path, log_path = os.path.join(args.checkpoint_dir, "last.pt"), os.path.join(args.checkpoint_dir, "log.jsonl")
    if args.resume and os.path.isfile(last_path):
        state = read_last(last_path)
        refuse_changed(args, state["run"].get("settings", {}), last_path, "learning-rate decay")
        if state["run"] != run:
            raise ValueError(f"--resume: {last_path} is a run of other data, CLIP, relative kind or batch size; give "
                             f"another --checkpoint_dir or leave out --resume")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first_epoch, log, best, global_step = state["epoch"] + 1, state["log"], state["best"], state["global_step"]
        if rank == 0:
            with open(log_path, "w") as f:  # what a killed run logged after its last checkpoint goes
                f.writelines(json.dumps(record) + "\n" for record in log)
    elif args.resume and rank == 0:
        tqdm.write(f"note: --resume: no checkpoint {last_path} yet; training from the start", file=sys.stderr)
    say = tqdm.write if rank == 0 else (lambda text: None)

    def record(entry):
        log.append(entry)
        if rank == 0:
            with open(log_path, "a" if len(log) > 1 else "w") as f:
                f.write(json.dumps(entry) + "\n")

    writer = None
    if args.tensorboard and rank == 0:  # the package was asked for when the flags were read
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(args.tensorboard)
    if first_epoch == 0 and args.val_count:  # where the initial weights stand, to measure learning against
        record({"step": 0, "epoch": 0, "val": validate(model, encoder, sets, held_out, args.relative_kind, rank,
                                                       world)})
    for epoch in range(first_epoch, args.epochs):
        plan = epoch_plan({name: len(idx) for name, idx in train_idx.items()}, args.batch_size, args.seed, epoch)
        plan = [{name: [train_idx[name][i] for i in step[name]] for name in step} for step in plan]
        texts = caption_draws(sets, plan, args.seed, epoch)
        bar = tqdm(range(len(plan)), desc=f"epoch {epoch + 1}/{args.epochs}", unit="step", dynamic_ncols=True,
                   disable=not args.progress or rank != 0)
        started = time.perf_counter()
        for s in bar:
            global_step += 1
            chosen = {name: indices[rank::world] for name, indices in plan[s].items()}  # this process's share
            mine = {name: words[rank::world] for name, words in texts[s].items()}
            losses = step_losses(model, encoder, sets, chosen, mine, args.relative_kind, args.loss)
            parts, totals = normalized(losses, world, args.normalize_kitti)
            if not all(math.isfinite(v) for v in totals.values()):
                raise ValueError(f"the loss is {totals} at epoch {epoch + 1}, step {s + 1}; the last good weights are "
                                 f"in {last_path if os.path.isfile(last_path) else 'no checkpoint yet'}; lower --lr")
            optimizer.zero_grad()
            for part in parts:  # one backward per dataset, as theirs: the same gradient sums, in their order
                part.backward()
            for parameter in model.parameters() if world > 1 else []:  # each process's part of the batch's gradient
                dist.all_reduce(parameter.grad)
            if args.grad_clip:  # 0: none, as train.py's
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            lr = poly_lr(global_step, total_steps, args.lr, args.end_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            record({"step": global_step, "epoch": epoch + 1, "lr": lr, "loss": sum(totals.values()), "losses": totals})
            if writer:
                for name, value in totals.items():
                    writer.add_scalar(f"train/loss_{name}", value, global_step)
                writer.add_scalar("train/lr", lr, global_step)
            bar.set_postfix(loss=f"{sum(totals.values()):.4f}")
        seconds = time.perf_counter() - started
        val = validate(model, encoder, sets, held_out, args.relative_kind, rank, world) if args.val_count else {}
        record({"step": global_step, "epoch": epoch + 1, "seconds": seconds, "val": val})
        if writer:
            for name, metrics in val.items():
                for metric in ("abs_rel", "a1", "rmse"):
                    writer.add_scalar(f"val/{name}_{metric}", metrics[metric], epoch + 1)
        say(f"epoch {epoch + 1}: " + "; ".join(f"{name} AbsRel {m['abs_rel']:.3f}, δ1 {m['a1']:.3f}"
                                               for name, m in val.items()) if val else f"epoch {epoch + 1} done")
        weights = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
        if val and (best is None or keeps(val, best["val"])):
            best = {"epoch": epoch + 1, "val": val, "model": weights}
        if rank == 0:
            save_checkpoint(last_path, {"format": CHECKPOINT_FORMAT, "epoch": epoch, "global_step": global_step,
                                        "model": weights, "optimizer": optimizer.state_dict(), "log": log,
                                        "best": best, "run": run})
        if world > 1:
            dist.barrier()  # every process resumes from the same checkpoint
    if writer:
        writer.close()
    return model, best, log, run


def train_scale_options():
    p = options.parser("train_scale.py", "Train RSA's LanScale (a caption -> the scale and shift of a relative "
                       "depth model's inverse depth) as their train_3d.py does; writes a .safetensors for rsa.py.")
    data = p.add_argument_group("data (their training sets; docs/rsa.md)")
    data.add_argument("--datasets", type=options.comma_list, default=list(DATASETS),
                      help="which of NYU, KITTI, VOID, comma-separated; the first sets the schedule's length")
    options.flag(data, "--captions", default=captions.DEFAULT_ROOT, what="their training captions")
    options.flag(data, "--relative_kind", what="the relative maps'")
    data.add_argument("--nyu_path", default=nyu.DEFAULT_DATA_PATH, help="the folder holding BTS's sync/")
    data.add_argument("--nyu_list", default=nyu.BTS_TRAIN_LIST, help="their NYU training list (BTS's, shipped)")
    data.add_argument("--nyu_relative", metavar="DIR", help="NYU's relative maps, <DIR>/<scene>/rgb_XXXXX.npy")
    data.add_argument("--kitti_path", default=kitti.DEFAULT_DATA_PATH, help="the raw-data root holding <date>/<drive>")
    data.add_argument("--kitti_gt_path", help=f"the annotated-depth root (default <kitti_path>/{kitti.GT_FOLDER})")
    data.add_argument("--kitti_list", default=kitti.TRAIN_LIST, help="their KITTI training list (BTS's Eigen list)")
    data.add_argument("--kitti_relative", metavar="DIR", help="KITTI's relative maps of the benchmark crop, "
                      "<DIR>/<date>/<drive>/image_02/data/XXXXXXXXXX.npy")
    data.add_argument("--void_path", default=void.DEFAULT_DATA_PATH, help="the folder holding void_1500/")
    data.add_argument("--void_list", help="their data_splits/void/train_image.txt (each ground truth is the image's "
                      "path with /image/ replaced by /ground_truth/, as their train_ground_truth.txt lists them)")
    data.add_argument("--void_relative", metavar="DIR", help="VOID's relative maps, <DIR>/void_1500/data/<scene>/"
                      "image/<stamp>.npy")
    options.flag(data, "--val_count", what="of each training list, scored with their evaluation "
                 "(0: none, the last weights are kept)")
    fit = p.add_argument_group("optimization (their configs/arguments_train_3d_dpt.txt)")
    options.flag(fit, "--epochs", default=50, what="theirs")
    options.flag(fit, "--batch_size", default=4, what="of each dataset (their DPT config; 8 for Depth "
                 "Anything, 5 for MiDaS)")
    options.flag(fit, "--lr", default=3e-5, what="Adam's first")
    fit.add_argument("--end_lr", type=options.AT_LEAST_ZERO, default=1e-5, help="where the 0.9-power decay would end")
    fit.add_argument("--loss", default="Huber", choices=list(PIXEL_LOSSES), help="the pixel loss (their --loss_type)")
    options.flag(fit, "--grad_clip", default=1.0)
    fit.add_argument("--normalize_kitti", action="store_true", help="divide KITTI's loss by its value as NYU's and "
                     "VOID's are (their code meant to, but a misspelt name left it out)")
    options.flag(fit, "--seed", what="initial weights, held-out images, data order, captions")
    options.flag(fit, "--init", what="LanScale weights (theirs or ours) instead of PyTorch's initialization")
    run = p.add_argument_group("running")
    options.flag(run, "--clip_model", what="the CLIP whose text tower encodes the captions (theirs: RN50)")
    options.flag(run, "--device")
    options.flag(run, "--precision", what="the text tower's")
    options.flag(run, "--cache", what="each caption's text feature")
    options.flag(run, "--keep_gb", default=4.0, what="relative maps and ground truth (2.4 MB a NYU image)")
    options.flag(run, "--output", required=True, what="the .safetensors (rsa.load_scale_model reads it)")
    options.flag(run, "--checkpoint_dir")
    options.flag(run, "--resume")
    options.flag(run, "--keep_last")
    options.flag(run, "--tensorboard")
    options.flag(run, "--no_progress")
    options.flag(run, "--debug")
    return p


def main(argv=None):
    p = train_scale_options()
    args = p.parse_args(argv)
    args.datasets = [name.upper() for name in args.datasets]
    unknown = [name for name in args.datasets if name not in DATASETS]
    if unknown or len(set(args.datasets)) != len(args.datasets):
        p.error(f"--datasets takes each of {', '.join(DATASETS)} at most once; got {','.join(args.datasets)}")
    if args.tensorboard:
        try:
            cli.require("tensorboard", "--tensorboard")
        except ValueError as error:
            p.error(str(error))
    args.checkpoint_dir = args.checkpoint_dir or os.path.splitext(args.output)[0] + "_run"
    rank, world, device = start_distributed(pick_device(args.device))
    with cli.OutputFile(args.output) if rank == 0 else contextlib.nullcontext(), \
            cli.output_dir(args.checkpoint_dir, "--checkpoint_dir") if rank == 0 else contextlib.nullcontext():
        if world > 1:
            dist.barrier()  # the checkpoint folder exists before any process looks into it
        model, best, log, run = train(args, rank, world, device)
        if rank != 0:
            dist.destroy_process_group()
            return
        kept = "best" if best and not args.keep_last else "last"
        if kept == "best":
            model.load_state_dict(best["model"])
        settings = {"source": "train_scale.py", "rsa_commit": rsa.RSA_COMMIT, "clip_model": args.clip_model,
                    "clip_weights": run["clip"], "relative_kind": args.relative_kind,
                    "training": {key: getattr(args, key) for key in ("datasets", "epochs", "batch_size", "lr", "end_lr",
                                                                     "loss", "grad_clip", "normalize_kitti", "seed",
                                                                     "val_count", "init")},
                    "data": {name: {"images": run["sizes"][name], "relative": os.path.abspath(getattr(
                        args, f"{name.lower()}_relative"))} for name in args.datasets},
                    "captions": os.path.abspath(args.captions), "kept": kept,
                    "epoch": best["epoch"] if kept == "best" else args.epochs,
                    "validation": best["val"] if kept == "best" else (log[-1].get("val") or None), "processes": world}
        rsa.save_scale_model(model.cpu(), args.output, settings)  # whole or not at all, as OutputFile's
        cli.write_file(os.path.join(args.checkpoint_dir, "curves.png"), curves_png(log), "--checkpoint_dir")
    if world > 1:
        dist.destroy_process_group()
    print(f"{args.output} written: the {kept} weights (epoch {settings['epoch']}); log and curves in "
          f"{args.checkpoint_dir}")


if __name__ == "__main__":
    cli.run(main)
