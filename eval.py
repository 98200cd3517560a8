"""Evaluate DepthCLIP, or a baseline, on NYU Depth V2 with the authors' protocol (Table 1 of the paper), or on
KITTI's Eigen split with BTS's or the authors' protocol (--dataset KITTI).

    python eval.py [--data_path datasets/NYU_Depth_V2] [--clip_model RN50] [--output r.json]
    python eval.py --sweep configs/ablations.json [--cache features/] [--output sweep.json]

Each image: the 544x416 crop and its mirror image through MonoCLIP's image side (or from --cache), then for
each prompt setting (one, or every entry of --sweep) the head, the two depths averaged, upsampled to 416x544,
pasted back into the 480x640 frame and scored inside the Eigen crop (calculate_error.py). The numbers do not
depend on --batch_size, --workers, --cache or the number of processes (torchrun).
"""
import argparse
import contextlib
import dataclasses
import functools
import math
import os
import sys
import time
from collections import defaultdict

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

import cli
import options
import protocols
import relative
import sweep
import visualize
from calculate_error import TABLE_COLUMNS, score
from datasets import (DEFAULT_DATA_PATH, KITTIEigen, NYUDepthV2, drive_of, kitti, mean_std, scene_of, unnormalize,
                      void, zeroshot)
from datasets.images import resolve_normalization
from feature_cache import FeatureCache
from learned_prompts import prompts_from
from monoclip import MonoCLIP
from clip_runtime import pick_device, start_distributed


# ---------------------------------------------------------------- predictors: (rgb, files, indices) -> [pred per run]
def lower_bound(seed, size_of):
    """The paper's lower bound: every pixel of image i an independent U(0, 10) draw, seeded by (seed, i).
    size_of(indices) -> the (rows, cols) predicted."""
    def predict(rgb, files, indices):
        draws = [np.random.default_rng([seed, i]).uniform(0, 10, (1, *size_of(indices))) for i in indices]
        return [torch.from_numpy(np.stack(draws).astype(np.float32))]
    return predict


def constant(depth, size_of):
    def predict(rgb, files, indices):
        return [torch.full((len(files), 1, *size_of(indices)), float(depth))]
    return predict


def depthclip(model, encoded_prompts, flip, cache=None, dataset=None, clamp=None):
    """One image pass per batch (or the cache's stored features: then the loader leaves the RGB undecoded and
    the dataset decodes only what the cache lacks), then the head for each prompt setting (each view's depth
    clamped to clamp=(min, max) first, where a protocol says so)."""
    def predict(rgb, files, indices):
        if cache is None:
            patches, grid = model.view_features(rgb, flip)
        else:
            patches, grid = cache.view_features(model, [os.path.join(dataset.root, f) for f in files],
                                                functools.partial(dataset.load_rgb, normalize=dataset.normalize),
                                                flip)
        size = size_of(dataset, indices)
        return [model.depth_from_features(patches, grid, size, flip, prompts, clamp) for prompts in encoded_prompts]
    return predict


def size_of(dataset, indices):
    """The (rows, cols) a batch's depth is predicted at: the dataset's input size, or (the zero-shot suite, one image
    a batch) its ground truth's."""
    return dataset.output_size(indices) if hasattr(dataset, "output_size") else dataset.input_size


def nyu_errors(gt, pred, indices):
    return score(gt, pred, "nyu_depthclip")


def evaluate(predict, loader, index_of, runs=1, progress=True, pictures=None, errors=nyu_errors):
    """Per run, the per-image metric rows {'file', metric: float} for every image the loader yields.

    errors(gt, pred, indices) -> {metric: (B,)} (NYU's DepthCLIP protocol by default). pictures, if given, is called
    with each batch's (rgb, gt, pred of the first run, files, indices).
    """
    rows = [[] for _ in range(runs)]
    with tqdm(total=len(loader.dataset), desc="eval", unit="image", disable=not progress, dynamic_ncols=True) as bar:
        for rgb, gt, files in loader:
            indices = [index_of[f] for f in files]
            preds = predict(rgb, files, indices)  # each (B, 1, *input size) metres
            if pictures:
                pictures(rgb, gt, preds[0], files, indices)
            gt = gt.to(preds[0].device, non_blocking=True)
            for run_rows, pred in zip(rows, preds):
                scored = errors(gt, pred, indices)
                names = list(scored)  # the metrics, and 'scale' with --median_scale
                values = torch.stack([scored[name] for name in names], dim=1).tolist()  # (B, metrics)
                run_rows += [{"file": f, **dict(zip(names, v))} for f, v in zip(files, values)]
            bar.update(len(files))
    return rows


# ---------------------------------------------------------------- pictures
def picture_name(folder, file, suffix=""):
    """DIR/<scene>_<number><suffix>.png, the number being the NYU file's: kitchen/rgb_00022.jpg -> kitchen_00022."""
    stem = os.path.splitext(os.path.basename(file))[0].replace("rgb_", "")
    return os.path.join(folder, f"{scene_of(file)}_{stem}{suffix}.png")


def panel_writer(folder, normalize):
    """pictures= for evaluate: each image's RGB | prediction | GT panel and its prediction as a 16-bit PNG (in mm, the
    ground truth's format, unless the depth passes 65.535 m: then said on the terminal)."""
    def write(rgb, gt, pred, files, indices):
        for image, truth, depth, file in zip(rgb, gt.numpy(), pred.cpu().float().numpy(), files):
            visualize.save_panel(picture_name(folder, file), unnormalize(image, normalize), depth[0], truth[0])
            path = picture_name(folder, file, "_depth")
            png = visualize.prediction_png(depth[0])
            cli.write_file(path, png.data, "--img_save")
            note = visualize.png_note(path, png)
            if note:
                tqdm.write(note, file=sys.stderr)
    return write


def image_index(dataset, image):
    """--img_save_bins: an index into the evaluated list, or one of its RGB files."""
    files = [rgb for rgb, _ in dataset.pairs]
    if image.isdigit() and int(image) < len(files):
        return int(image)
    if image in files:
        return files.index(image)
    raise ValueError(f"--img_save_bins {image}: neither an index below {len(files)} nor a file of the evaluated "
                     f"list (e.g. {files[0]})")


def save_bin_weights(model, dataset, index, folder):
    """DIR/<scene>_<number>_bins.png: each depth prompt's softmax weight over one image's patches."""
    rgb, _, file = dataset[index]
    with torch.inference_mode():
        weights = model.bin_weights(rgb[None])[0].float().cpu()  # (K, h, w)
    path = picture_name(folder, file, "_bins")
    cli.write_file(path, visualize.bin_weights_png(unnormalize(rgb, dataset.normalize), weights.numpy(),
                                                   model.prompts.column_labels, model.prompts.column_bins))
    return path


# ---------------------------------------------------------------- results
UNSCORED = "no pixel with valid ground truth in the scored region"  # why an image is left out of the means
NOT_FINITE = "a metric is infinite: a prediction of 0 m (or NaN) where the protocol keeps it"


def mean_metrics(rows, names=protocols.NYU_METRICS):
    """{metric: mean over the rows}; None for each when there is no row (nothing could be scored)."""
    return {name: float(np.mean([row[name] for row in rows])) if rows else None for name in names}


def split_unscored(rows):
    """(rows with every metric a number, [{'file', 'reason'}] for the others: every metric NaN when no pixel is
    valid (or the alignment is undefined); some infinite where a protocol scores a prediction of 0 m, as ZoeDepth's
    rows do unaligned, clamping at 0: its means would be infinite, JSON has no infinity)."""
    scored, unscored = [], []
    for row in rows:
        if all(math.isfinite(value) for key, value in row.items() if key != "file"):
            scored.append(row)
            continue
        metrics = [value for key, value in row.items() if key not in ("file", "scale", "shift")]
        unscored.append({"file": row["file"], "reason": NOT_FINITE if any(map(math.isfinite, metrics)) else UNSCORED})
    return scored, unscored


def summarize(rows, scene_of=scene_of, names=protocols.NYU_METRICS):
    """Mean metrics over all images and per scene (NYU; the zero-shot suite's first folder) or drive (KITTI)."""
    by_scene = defaultdict(list)
    for row in rows:
        by_scene[scene_of(row["file"])].append(row)
    per_scene = {scene: {"count": len(r), "metrics": mean_metrics(r, names)} for scene, r in sorted(by_scene.items())}
    return mean_metrics(rows, names), per_scene


def format_table(rows_by_name):
    """Rows of (name, count, metrics) as an aligned text table in the paper's column order."""
    width = max([14] + [len(name) + 2 for name, _, _ in rows_by_name])
    lines = [f"{'run':<{width}}{'images':>7}" + "".join(f"{title:>8}" for title, _ in TABLE_COLUMNS)]
    for name, count, metrics in rows_by_name:
        lines.append(f"{name:<{width}}{count:>7}" + "".join(f"{metrics[key]:>8.3f}" if metrics[key] is not None
                                                            else f"{'-':>8}" for _, key in TABLE_COLUMNS))
    return "\n".join(lines)


def main(argv=None):
    args = options.parse_eval_args(argv)
    settings = sweep.read(args.sweep, args) if args.sweep else None  # checked before any model or image loads
    with cli.OutputFile(args.output) if args.output else contextlib.nullcontext() as output, \
            cli.output_dir(args.img_save, "--img_save") if args.img_save else contextlib.nullcontext():
        return run(args, settings, output)


# ---------------------------------------------------------------- one evaluation, in stages
@dataclasses.dataclass
class Run:
    """What the stages hand along: the settings, then what each stage adds."""
    args: argparse.Namespace
    settings: list  # [(name, DepthPrompts or None for a baseline, the names the user gave {prompt_set, bin_set})]
    rank: int = 0
    world: int = 1
    device: torch.device = None
    model: object = None  # MonoCLIP, or None for a baseline
    dataset: object = None
    scene_of: object = None  # a file -> its scene (NYU) or drive (KITTI)
    protocol: protocols.Protocol = None  # the row scored (--protocol)
    errors: object = None  # (gt, pred, indices) -> {metric: (B,)}
    dataset_config: dict = None
    cache: FeatureCache = None
    workers: int = 0
    relative: object = None  # relative.Relative for --relative: maps from elsewhere, RSA's language alignment


def run(args, settings, output):
    """settings -> data -> model -> predict and score -> gather -> report.

    The data comes before the model so that a wrong path, list or image name fails in a second, not after a
    checkpoint download; --normalize model is then resolved from the loaded model, in one place.
    """
    r = Run(args, settings or [(relative.run_name(args) if args.relative else args.method, None, {})])
    r.relative = relative.Relative(args) if args.relative else None
    open_dataset(r)
    bins_index = image_index(r.dataset, args.img_save_bins) if args.img_save_bins is not None else None
    r.rank, r.world, r.device = start_distributed(pick_device(args.device))
    if r.relative:
        r.relative.load(r.device)
    elif args.method == "monoclip":
        r.model = MonoCLIP.from_settings(args, prompts_from(vars(args)), r.device)
        r.dataset.normalize = resolve_normalization(args.normalize, r.model)
        r.dataset.stride = r.model.stride  # the zero-shot suite sizes each image for it
        if settings is None:
            name = f"learned:{os.path.basename(args.prompts)}" if args.prompts else args.method  # the table's row
            r.settings = [(name, r.model.prompts, {"prompt_set": args.prompt_set, "bin_set": args.bin_set})]
        if args.cache:
            r.cache = FeatureCache.of(args.cache, r.model, args.dataset, r.dataset)
    rows, views, seconds = predict_and_score(r)
    if r.rank != 0:
        dist.destroy_process_group()
        return None
    report = make_report(r, rows, views, seconds)
    print_report(r, report)
    if output:
        output.write_json(report)
        print(f"results written to {args.output}")
    if args.img_save:
        if bins_index is not None:
            save_bin_weights(r.model, r.dataset, bins_index, args.img_save)
        print(f"pictures written to {args.img_save}")
    if r.world > 1:
        dist.destroy_process_group()
    return report


def open_dataset(r):
    """The evaluated dataset (its list read and checked), its scene function, the protocol's row, the per-image errors
    and what the results' config says of them (with --relative, relative.Relative adds its alignment)."""
    args = r.args
    normalize = args.normalize
    with_rgb = r.relative.with_rgb if r.relative else \
        bool(args.img_save) or (args.method == "monoclip" and not args.cache)  # who reads the pixels
    r.protocol = protocols.with_flags(protocols.PROTOCOLS[args.scored_as], args.cap, args.eval_crop)
    if args.dataset == "NYU":  # the model sees the authors' crop, pasted back, or the whole frame
        data_path = args.data_path or DEFAULT_DATA_PATH
        r.dataset = NYUDepthV2(data_path, args.testfile_nyu, scenes=args.scenes, limit=args.limit,
                               normalize=normalize, with_rgb=with_rgb, whole_frame=r.protocol.placement != "paste")
        r.scene_of = scene_of
        r.dataset_config = {"data_path": os.path.abspath(data_path), "testfile_nyu": list_config(args.testfile_nyu)}
    elif args.dataset in zeroshot.PROTOCOLS:
        listing = args.testfile or zeroshot.default_list(args.dataset, args.diode_split)
        r.dataset = zeroshot.ZeroShot(args.dataset, args.data_path, listing, normalize, args.long_side,
                                      limit=args.limit)
        r.scene_of = zeroshot.scene_of
        r.dataset_config = {"data_path": os.path.abspath(args.data_path), "source": r.dataset.protocol.source,
                            "list": list_config(listing) if listing else None, "long_side": args.long_side,
                            **suite_config(r.protocol, args.align)}
    elif args.dataset == "VOID":  # RSA's third dataset, scored in its range as the suite scores (datasets/void.py)
        r.dataset = void.VOID(args.data_path, args.testfile, normalize, args.long_side, limit=args.limit,
                              with_rgb=with_rgb)
        r.scene_of = void.scene_of
        r.dataset_config = {"data_path": os.path.abspath(args.data_path), "source": void.PROTOCOL.source,
                            "list": list_config(args.testfile or void.DEFAULT_TEST_LIST), "long_side": args.long_side,
                            **suite_config(r.protocol, args.align)}
        del r.dataset_config["box"], r.dataset_config["align_max_resolution"]
    else:
        data_path = args.data_path or kitti.DEFAULT_DATA_PATH
        r.dataset = KITTIEigen(data_path, args.gt_path, args.testfile_kitti, scenes=args.scenes, limit=args.limit,
                               normalize=normalize, with_rgb=with_rgb)
        r.scene_of = drive_of
        r.dataset_config = {"data_path": os.path.abspath(data_path), "gt_path": os.path.abspath(r.dataset.gt_root),
                            "testfile_kitti": list_config(args.testfile_kitti)}
        if r.protocol.name in protocols.KITTI_PROTOCOLS.values():
            r.dataset_config.update(kitti_protocol="authors" if r.protocol.name == "kitti_depthclip" else "bts",
                                    eval_crop=args.eval_crop, cap=args.cap)
    frame_sizes = (lambda indices: [r.dataset.frame_size(i) for i in indices]) if args.dataset == "KITTI" else \
        (lambda indices: None)
    fits = r.relative.fits if r.relative else (lambda indices: None)  # --align language's, found when predicting
    r.errors = lambda gt, pred, indices: score(gt, pred, r.protocol, args.align, frame_sizes(indices), fits(indices))
    if r.relative:
        r.relative.scored_with(r)


def suite_config(protocol, align):
    """What the results' config says of a zero-shot suite row."""
    return {"valid_range": json_bounds(protocol.valid_range if protocol.dataset != "DIODE" else None),
            "prediction_clip": json_bounds(protocol.clamp), "box": protocol.crop, "align": align,
            "align_max_resolution": protocol.align_max_resolution}


def json_bounds(bounds):
    """(min, max) with an infinite bound as None (JSON has no infinity); None stays None."""
    return bounds and [None if math.isinf(b) else b for b in bounds]


def list_config(test_list):
    return test_list if test_list == "auto" else os.path.abspath(test_list)


def predictor(r):
    """(rgb, files, indices) -> [prediction per setting]: DepthCLIP's, or the baseline's."""
    if r.relative:
        return r.relative.predict
    sizes = functools.partial(size_of, r.dataset)
    if r.model is None:
        return lower_bound(r.args.seed, sizes) if r.args.method == "lower_bound" else constant(r.args.constant_depth,
                                                                                               sizes)
    encoded = [r.model.encode_prompts(prompts) for _, prompts, _ in r.settings]
    return depthclip(r.model, encoded, not r.args.no_flip, r.cache, r.dataset, r.protocol.view_clamp)


def predict_and_score(r):
    """This process's share of the images through the predictor and the metrics; every process's rows gathered on
    rank 0, sorted as the list is. -> (rows per setting, cache counts or None, seconds)."""
    r.workers = workers = options.default_workers(r.device) if r.args.workers is None else r.args.workers
    shard = Subset(r.dataset, range(r.rank, len(r.dataset), r.world))  # each image exactly once across processes
    loader = DataLoader(shard, batch_size=r.args.batch_size, shuffle=False, num_workers=workers,
                        pin_memory=r.device.type == "cuda", prefetch_factor=4 if workers else None)
    index_of = {rgb: i for i, (rgb, _) in enumerate(r.dataset.pairs)}
    predict = predictor(r)
    if r.world > 1:
        dist.barrier()
    start = time.perf_counter()
    pictures = panel_writer(r.args.img_save, r.dataset.normalize) if r.args.img_save else None
    rows = evaluate(predict, loader, index_of, len(r.settings), progress=r.rank == 0, pictures=pictures,
                    errors=r.errors)
    views = {"views_read": r.cache.hits, "views_computed": r.cache.misses} if r.cache else None
    if r.world > 1:
        gathered = [None] * r.world
        dist.all_gather_object(gathered, (rows, views))
        rows = [[row for part, _ in gathered for row in part[i]] for i in range(len(r.settings))]
        views = views and {key: sum(counts[key] for _, counts in gathered) for key in views}
    order = {file: i for i, file in enumerate(index_of)}
    rows = [sorted(setting_rows, key=lambda row: order[row["file"]]) for setting_rows in rows]
    return rows, views, time.perf_counter() - start


def run_config(r, prompts, names):
    """One setting's results config: the model's and the prompts' settings (or the baseline's), then the data's."""
    args = r.args
    data = {"dataset": args.dataset, "protocol": args.protocol, "scored_as": r.protocol.name, **r.dataset_config,
            "scenes": args.scenes, "limit": args.limit,
            "median_scale": args.median_scale, "normalize": args.normalize, "flip": not args.no_flip,
            "batch_size": args.batch_size, "workers": r.workers, "world_size": r.world}
    if r.relative:
        return {**r.relative.config(), **data, "method": "relative"}
    if r.model is None:
        baseline = {"seed": args.seed} if args.method == "lower_bound" else {"constant_depth": args.constant_depth}
        return {**baseline, **data, "method": args.method}
    return {**r.model.config(prompts), **names, **data, "normalize_mean_std": mean_std(r.dataset.normalize),
            "method": args.method}


def make_report(r, rows, views, seconds):
    results = []
    for (name, prompts, names), setting_rows in zip(r.settings, rows):
        scored, unscored = split_unscored(setting_rows)
        metrics, per_scene = summarize(scored, r.scene_of, r.protocol.metrics)
        results.append({"name": name, "count": len(scored), "metrics": metrics, "per_scene": per_scene,
                        "per_image": scored, "config": run_config(r, prompts, names)})
        if unscored:
            results[-1]["unscored"] = unscored
    count = len(rows[0])
    timing = {"seconds": seconds, "images_per_second": count / seconds if seconds else None}
    if r.args.sweep:
        report = {"runs": results, "timing": timing}
    else:
        report = {"dataset": r.args.dataset, **{k: v for k, v in results[0].items() if k != "name"}, "timing": timing}
    if getattr(r.dataset, "skipped", None):
        report["skipped"] = {"reason": "no ground truth in the list (None)", "count": len(r.dataset.skipped),
                             "files": r.dataset.skipped}
    if views:
        report["cache"] = views
    return report


def print_report(r, report):
    results = report.get("runs") or [{"name": r.settings[0][0], **report}]
    for one in results:
        for row in one.get("unscored", []):
            print(f"warning: {row['file']}: {row['reason']}; left out of the means ({one['name']})", file=sys.stderr)
    print(format_table([(one["name"], one["count"], one["metrics"]) for one in results]))
    timing, views = report["timing"], report.get("cache")
    count = sum(len(one["per_image"]) + len(one.get("unscored", [])) for one in results[:1])
    print(f"{count} images in {timing['seconds']:.1f} s ({timing['images_per_second'] or 0:.2f} images/s)"
          + (f"; {len(results)} prompt settings from one image pass" if r.args.sweep else "")
          + (f"; cache: {views['views_read']} views read, {views['views_computed']} computed" if views else ""))


if __name__ == "__main__":
    cli.run(main)
