"""Evaluate DepthCLIP, or a baseline, on NYU Depth V2 with the authors' protocol (Table 1 of the paper).

    python eval.py [--data_path datasets/NYU_Depth_V2] [--clip_model RN50] [--batch_size 8] [--output r.json]

Each image: the 544x416 crop and its mirror image through MonoCLIP, the two depths averaged, upsampled
to 416x544, pasted back into the 480x640 frame and scored inside the Eigen crop (calculate_error.py).
The numbers do not depend on --batch_size, --workers or the number of processes (torchrun).
"""
import argparse
import math
import os
import time
from collections import defaultdict

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

import cli
import visualize
from calculate_error import NYU_METRICS, per_image_errors_NYU
from datasets import DEFAULT_DATA_PATH, DEFAULT_TEST_LIST, NORMALIZATIONS, NYUDepthV2, scene_of
from monoclip import BIN_SETS, FEATURES, PRECISIONS, PROMPT_SETS, TEMPERATURE, MonoCLIP, pick_device

TABLE_COLUMNS = [("d1", "a1"), ("d2", "a2"), ("d3", "a3"), ("rel", "abs_rel"), ("log10", "log10"), ("rmse", "rmse")]
METHODS = {
    "monoclip": "DepthCLIP (MonoCLIP): zero-shot depth from CLIP",
    "lower_bound": "every pixel an independent uniform draw in [0, 10] m (the paper's lower bound)",
    "median": "a constant depth everywhere (--median_depth), a sanity row",
}


def comma_list(text):
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty item; give comma-separated values")
    return items


def numbers(text):
    values = []
    for item in comma_list(text):
        try:
            values.append(float(item))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not a number") from None
    return values


def default_workers(device):
    """Decoding processes: none on a CPU, where they would take cores from the network (decoding is ~2% of
    the work there); on a GPU half the cores, at most 8, shared among the local torchrun processes."""
    if device.type == "cpu":
        return 0
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, (os.cpu_count() or 2) // 2 // local))


def add_model_arguments(p):
    """MonoCLIP's flags, shared by eval.py and predict.py; returns the method argument group."""
    method = p.add_argument_group("method")
    method.add_argument("--clip_model", default="RN50", help="a CLIP model name or a checkpoint path")
    method.add_argument("--prompt_set", choices=list(PROMPT_SETS),
                        help="named depth words: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in PROMPT_SETS.items()))
    method.add_argument("--depth_classes", type=comma_list, help="depth words, nearest first (instead of --prompt_set)")
    method.add_argument("--bin_set", choices=list(BIN_SETS),
                        help="named bins (m): " + "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in BIN_SETS.items()))
    method.add_argument("--bins", type=numbers, help="one depth (m) per word, comma-separated (instead of --bin_set)")
    method.add_argument("--templates", type=comma_list, help="prompt templates with two {} slots: object, depth word")
    method.add_argument("--objects", type=comma_list, help="object nouns for the templates")
    method.add_argument("--temperature", type=float, default=TEMPERATURE)
    method.add_argument("--features", default="paper", choices=list(FEATURES),
                        help="; ".join(f"{k}: {v}" for k, v in FEATURES.items()))
    method.add_argument("--no_flip", action="store_true", help="skip averaging with the mirrored image")
    run = p.add_argument_group("running")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--precision", default="auto", choices=PRECISIONS,
                     help="auto: fp16 on CUDA (the authors' setting), fp32 on CPU; bf16 runs under autocast")
    run.add_argument("--debug", action="store_true", help="show Python tracebacks")
    return method, run


def check_model_arguments(p, args):
    if args.prompt_set and args.depth_classes:
        p.error("give --prompt_set or --depth_classes, not both")
    if args.bin_set and args.bins:
        p.error("give --bin_set or --bins, not both")


def build_monoclip(args, device):
    return MonoCLIP(args.clip_model, depth_classes=args.depth_classes or args.prompt_set,
                    bins=args.bins or args.bin_set, templates=args.templates, objects=args.objects,
                    temperature=args.temperature, device=device, features=args.features, precision=args.precision)


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--dataset", default="NYU", choices=["NYU"])
    data.add_argument("--data_path", default=DEFAULT_DATA_PATH, help="folder holding official_splits/test")
    data.add_argument("--testfile_nyu", default=DEFAULT_TEST_LIST,
                      help="list of 'rgb depth' pairs, or 'auto' for every pair found under the data path")
    data.add_argument("--scenes", type=comma_list, help="evaluate only these scene folders, e.g. bathroom,classroom")
    data.add_argument("--limit", type=int, help="evaluate only the first N pairs")
    data.add_argument("--normalize", default="imagenet", choices=list(NORMALIZATIONS),
                      help="RGB mean/std: the authors' ImageNet statistics or CLIP's own")

    method, run = add_model_arguments(p)
    method.add_argument("--method", default="monoclip", choices=list(METHODS),
                        help="; ".join(f"{k}: {v}" for k, v in METHODS.items()))
    method.add_argument("--seed", type=int, default=0, help="seed of the lower_bound draws")
    method.add_argument("--median_depth", type=float, default=2.5, help="the median baseline's constant (m)")

    run.add_argument("--batch_size", type=int, default=8, help="images per step (each also runs mirrored)")
    run.add_argument("-j", "--workers", type=int, help="image-decoding processes (default: 0 on a CPU, "
                     "half the cores up to 8 on a GPU)")
    run.add_argument("--output", help="write results as JSON to this file")
    run.add_argument("--img_save", metavar="DIR", help="write per image DIR/<scene>_<index>.png (RGB | prediction | "
                     "ground truth) and DIR/<scene>_<index>_depth.png (prediction, uint16 mm, 640x480)")
    run.add_argument("--img_save_bins", metavar="IMAGE", help="also write DIR/<scene>_<index>_bins.png for this image "
                     "(its index or file, e.g. bathroom/rgb_00045.jpg): each depth prompt's softmax weight per patch")

    legacy = p.add_argument_group("accepted for the authors' test.sh, no effect")
    legacy.add_argument("--evaluate", action="store_true")
    legacy.add_argument("--gpu_num", help="use CUDA_VISIBLE_DEVICES or --device instead")
    legacy.add_argument("--encoder")
    legacy.add_argument("--other_method", choices=["MonoCLIP"])
    args = p.parse_args(argv)

    check_model_arguments(p, args)
    if args.img_save_bins is not None and (args.img_save is None or args.method != "monoclip"):
        p.error("--img_save_bins needs --img_save DIR and --method monoclip")
    if args.batch_size < 1 or (args.workers or 0) < 0 or (args.limit is not None and args.limit < 1):
        p.error("--batch_size and --limit must be at least 1, --workers at least 0")
    return args


def start_distributed(device):
    """(rank, world size, device) under torchrun (WORLD_SIZE > 1), else (0, 1, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def lower_bound(seed):
    """The paper's lower bound: every pixel of image i an independent U(0, 10) draw, seeded by (seed, i)."""
    def predict(rgb, indices):
        draws = [np.random.default_rng([seed, i]).uniform(0, 10, (1, *rgb.shape[-2:])) for i in indices]
        return torch.from_numpy(np.stack(draws).astype(np.float32))
    return predict


def constant(depth):
    def predict(rgb, indices):
        return torch.full((rgb.shape[0], 1, *rgb.shape[-2:]), float(depth))
    return predict


def evaluate(predict, loader, index_of, progress=True, pictures=None):
    """Per-image metric rows, {'index', 'file', metric: float}, for every image the loader yields.

    pictures, if given, is called with each batch's (rgb, gt, pred, files, indices).
    """
    rows = []
    for rgb, gt, files in tqdm(loader, desc="eval", unit="batch", disable=not progress, dynamic_ncols=True):
        indices = [index_of[f] for f in files]
        pred = predict(rgb, indices)  # (B, 1, 416, 544) metres
        if pictures:
            pictures(rgb, gt, pred, files, indices)
        errors = per_image_errors_NYU(gt.to(pred.device, non_blocking=True), pred)
        values = torch.stack([errors[name] for name in NYU_METRICS], dim=1).tolist()  # (B, metrics)
        rows += [{"index": i, "file": f, **dict(zip(NYU_METRICS, v))} for i, f, v in zip(indices, files, values)]
    return rows


def picture_name(folder, file, index, suffix=""):
    """DIR/<scene>_<index><suffix>.png, index being the image's position in the evaluated list."""
    return os.path.join(folder, f"{scene_of(file)}_{index:05d}{suffix}.png")


def panel_writer(folder, normalize):
    """pictures= for evaluate: each image's RGB | prediction | GT panel and its prediction as a 16-bit PNG."""
    mean, std = NORMALIZATIONS[normalize]

    def write(rgb, gt, pred, files, indices):
        for image, truth, depth, file, index in zip(rgb, gt.numpy(), pred.cpu().float().numpy(), files, indices):
            visualize.save_panel(picture_name(folder, file, index), visualize.unnormalize(image, mean, std),
                                 depth[0], truth[0])
            visualize.save_prediction_png(picture_name(folder, file, index, "_depth"), depth[0])
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
    """DIR/<scene>_<index>_bins.png: each depth prompt's softmax weight over one image's patches."""
    rgb, _, file = dataset[index]
    with torch.inference_mode():
        weights = model.bin_weights(rgb[None])[0].float().cpu()  # (K, h, w)
    labels = [word if len(model.objects) == 1 else f"{word} / {obj}"
              for word in model.depth_classes for obj in model.objects]
    mean, std = NORMALIZATIONS[dataset.normalize]
    path = picture_name(folder, file, index, "_bins")
    visualize.save_bin_weights(path, visualize.unnormalize(rgb, mean, std), weights.numpy(), labels,
                               model.bins.tolist())
    return path


def mean_metrics(rows):
    return {name: float(np.mean([row[name] for row in rows])) for name in NYU_METRICS}


def summarize(rows):
    """Mean metrics over all images and per scene."""
    by_scene = defaultdict(list)
    for row in rows:
        by_scene[scene_of(row["file"])].append(row)
    per_scene = {scene: {"count": len(r), "metrics": mean_metrics(r)} for scene, r in sorted(by_scene.items())}
    return mean_metrics(rows), per_scene


def format_table(rows_by_name):
    """Rows of (name, count, metrics) as an aligned text table in the paper's column order."""
    header = f"{'method':<14}{'images':>7}" + "".join(f"{title:>8}" for title, _ in TABLE_COLUMNS)
    lines = [header]
    for name, count, metrics in rows_by_name:
        lines.append(f"{name:<14}{count:>7}" + "".join(f"{metrics[key]:>8.3f}" for _, key in TABLE_COLUMNS))
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.output:
        cli.check_writable_file(args.output)
    if args.img_save:
        cli.check_writable_dir(args.img_save, "--img_save")
    dataset = NYUDepthV2(args.data_path, args.testfile_nyu, scenes=args.scenes, limit=args.limit,
                         normalize=args.normalize)
    index_of = {rgb: i for i, (rgb, _) in enumerate(dataset.pairs)}
    bins_index = image_index(dataset, args.img_save_bins) if args.img_save_bins is not None else None
    rank, world, device = start_distributed(pick_device(args.device))
    workers = default_workers(device) if args.workers is None else args.workers

    if args.method == "monoclip":
        model = build_monoclip(args, device)
        config = model.config()

        def predict(rgb, indices):
            return model.predict(rgb, flip=not args.no_flip)
    else:
        config = {"seed": args.seed} if args.method == "lower_bound" else {"median_depth": args.median_depth}
        predict = lower_bound(args.seed) if args.method == "lower_bound" else constant(args.median_depth)
    config.update(method=args.method, data_path=args.data_path, testfile_nyu=args.testfile_nyu, scenes=args.scenes,
                  limit=args.limit, normalize=args.normalize, flip=not args.no_flip, prompt_set=args.prompt_set,
                  bin_set=args.bin_set, batch_size=args.batch_size, workers=workers, world_size=world)

    shard = Subset(dataset, range(rank, len(dataset), world))  # each image exactly once across processes
    loader = DataLoader(shard, batch_size=args.batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None)
    if world > 1:
        dist.barrier()
    start = time.perf_counter()
    pictures = panel_writer(args.img_save, args.normalize) if args.img_save else None
    rows = evaluate(predict, loader, index_of, progress=rank == 0, pictures=pictures)
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, rows)
        rows = [row for part in gathered for row in part]
    seconds = time.perf_counter() - start
    if rank != 0:
        dist.destroy_process_group()
        return None

    rows.sort(key=lambda row: row.pop("index"))
    metrics, per_scene = summarize(rows)
    results = {"dataset": args.dataset, "count": len(rows), "metrics": metrics, "per_scene": per_scene,
               "per_image": rows, "config": config,
               "timing": {"seconds": seconds, "images_per_second": len(rows) / seconds if seconds else math.inf}}
    print(format_table([(args.method, len(rows), metrics)]))
    print(f"{len(rows)} images in {seconds:.1f} s ({results['timing']['images_per_second']:.2f} images/s)")
    if args.output:
        cli.write_json(args.output, results)
        print(f"results written to {args.output}")
    if args.img_save:
        if bins_index is not None:
            save_bin_weights(model, dataset, bins_index, args.img_save)
        print(f"pictures written to {args.img_save}")
    if world > 1:
        dist.destroy_process_group()
    return results


if __name__ == "__main__":
    cli.run(main)
