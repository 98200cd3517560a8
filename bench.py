"""Benchmark: eval.py's loop against the authors' way of evaluating, on a full-size RN50 and NYU-sized images.

    python bench.py [--images 16] [--repeats 3] [--device auto] [--precision auto] [--json bench.json]

No weights or data are needed: a seeded checkpoint with RN50's full geometry and NYU-layout images are
generated in a temporary folder (deleted afterwards). In one process, after a warm-up, it times, in
--repeats alternating rounds whose median it reports,
(a) the authors' loop: batch 1, the image and its mirror as two forward passes, files decoded on the main
    thread, standard memory layout, fp32 on a CPU (fp16 on a GPU, as they ran it);
(b) eval.py's loop: batches holding both views (one image per pass on a CPU), channels_last, decoding
    workers on a GPU, the chosen precision;
and checks that the two give the same metrics. With a precision other than fp32 it also runs (b) in fp32
and reports how far each metric moved. Timings are measured, never asserted.
"""
import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

import cli
import eval as evaluation
from calculate_error import NYU_METRICS, per_image_errors_NYU
from datasets import NYUDepthV2
from monoclip import MonoCLIP, pick_device, pick_precision

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from make_checkpoint import make_state_dict  # noqa: E402
from make_nyu_like import write_dataset  # noqa: E402

RN50_GEOMETRY = dict(vision_layers=(3, 4, 6, 3), text_width=512, text_layers=12)  # OpenAI's RN50 shapes
WARMUP_IMAGES = 2


def make_inputs(folder, images, geometry=RN50_GEOMETRY):
    """A seeded CLIP checkpoint, `images` NYU-layout pairs to time and a few more to warm up with, under folder."""
    checkpoint = os.path.join(folder, "clip.pt")
    torch.save(make_state_dict(0, **geometry), checkpoint)
    for name, count, seed in [("timed", images, 0), ("warmup", WARMUP_IMAGES, 1)]:
        write_dataset(os.path.join(folder, name, "official_splits", "test"), count=count, seed=seed)
    return checkpoint, os.path.join(folder, "timed"), os.path.join(folder, "warmup")


def eval_process_peak_rss(checkpoint, data_path, workers):
    """Peak resident memory (MiB) of `python eval.py` on the CPU, run as its own process.

    Read from the process's own /proc/self/status (VmHWM) at its end: getrusage of a child would also count
    this process's memory, which the child shares until it loads eval.py.
    """
    argv = ["eval.py", "--clip_model", checkpoint, "--data_path", data_path, "--testfile_nyu", "auto",
            "--device", "cpu", "--precision", "fp32", "--workers", str(workers)]
    probe = (f"import runpy, sys; sys.argv = {argv!r}; runpy.run_path('eval.py', run_name='__main__'); "
             "print(next(line for line in open('/proc/self/status') if line.startswith('VmHWM')))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True, capture_output=True, text=True)
    return int(result.stdout.strip().splitlines()[-1].split()[1]) / 1024  # 'VmHWM:  123456 kB'


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def authors_loop(model, dataset):
    """The authors' evaluation: per image, two forward passes, average, upsample, score. Returns metric rows."""
    rows = []
    for rgb, gt, _ in DataLoader(dataset, batch_size=1, num_workers=0):
        rgb, gt = rgb.to(model.device), gt.to(model.device)
        with torch.no_grad():
            depth = model(rgb)
            depth_flip = model(torch.flip(rgb, [3])).flip(3)
            depth = F.interpolate(0.5 * (depth + depth_flip), size=[416, 544], mode="bilinear", align_corners=True)
        rows.append({name: value.item() for name, value in per_image_errors_NYU(gt, depth).items()})
    synchronize(model.device)
    return rows


def eval_loop(model, dataset, batch_size, workers):
    """eval.py's evaluate() with eval.py's DataLoader settings. Returns metric rows."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=model.device.type == "cuda",
                        prefetch_factor=4 if workers else None)
    index_of = {rgb: i for i, (rgb, _) in enumerate(dataset.pairs)}
    rows = evaluation.evaluate(lambda rgb, _: model.predict(rgb), loader, index_of, progress=False)
    synchronize(model.device)
    return rows


def timed(loop, *args):
    start = time.perf_counter()
    rows = loop(*args)
    return rows, time.perf_counter() - start


def trunk_gflop(model, height=416, width=544):
    """Floating-point operations (GFLOP) of one image through the image trunk at the evaluation size."""
    x = torch.zeros(1, 3, height, width, device=model.device, dtype=next(model.clip.visual.parameters()).dtype)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.clip.encode_image_dense(x, "trunk" if model.features == "paper" else model.features)
    return counter.get_total_flops() / 1e9


def largest_difference(rows_a, rows_b):
    """{metric: the largest per-image |a - b|}."""
    return {name: max(abs(a[name] - b[name]) for a, b in zip(rows_a, rows_b)) for name in NYU_METRICS}


def run(images, device, precision, batch_size, workers, folder, repeats=3, geometry=RN50_GEOMETRY):
    """Time (a) and (b) on the same generated images, the median of `repeats` rounds; returns the report."""
    device = pick_device(device)
    precision = pick_precision(precision, device)
    workers = evaluation.default_workers(device) if workers is None else workers
    checkpoint, data_path, warmup_path = make_inputs(folder, images, geometry)
    timed_set, warmup = NYUDepthV2(data_path, "auto"), NYUDepthV2(warmup_path, "auto")

    authors_precision = pick_precision("auto", device)  # fp16 on a GPU, fp32 on a CPU: as they ran it
    authors_model = MonoCLIP(checkpoint, device=device, precision=authors_precision)
    authors_model.clip.visual.to(memory_format=torch.contiguous_format)  # the authors' memory layout
    model = MonoCLIP(checkpoint, device=device, precision=precision)
    authors_loop(authors_model, warmup)
    eval_loop(model, warmup, batch_size, workers)
    authors_times, eval_times = [], []
    for _ in range(repeats):  # alternating, so that a slow spell of a shared machine hits both loops
        authors_rows, seconds = timed(authors_loop, authors_model, timed_set)
        authors_times.append(seconds)
        eval_rows, seconds = timed(eval_loop, model, timed_set, batch_size, workers)
        eval_times.append(seconds)
    authors_seconds, eval_seconds = statistics.median(authors_times), statistics.median(eval_times)
    del authors_model
    gflop = trunk_gflop(model)
    report = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                    "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "torch": torch.__version__},
        "images": images, "repeats": repeats, "precision": precision, "batch_size": batch_size, "workers": workers,
        "authors_loop": {"seconds": authors_seconds, "images_per_second": images / authors_seconds,
                         "trunk_gflop_per_second": 2 * images * gflop / authors_seconds, "precision": authors_precision},
        "eval_loop": {"seconds": eval_seconds, "images_per_second": images / eval_seconds,
                      "trunk_gflop_per_second": 2 * images * gflop / eval_seconds},
        "speedup": authors_seconds / eval_seconds,
        "trunk_gflop_per_image_pass": gflop,
        "metrics": evaluation.mean_metrics(eval_rows),
        "largest_difference_from_authors_loop": largest_difference(authors_rows, eval_rows),
    }
    if precision != "fp32":
        reference = MonoCLIP(checkpoint, device=device, precision="fp32")
        fp32_rows = eval_loop(reference, timed_set, batch_size, workers)
        report["fp32_metrics"] = evaluation.mean_metrics(fp32_rows)
        report["mean_metric_change_from_fp32"] = {name: abs(report["metrics"][name] - report["fp32_metrics"][name])
                                                  for name in NYU_METRICS}
    if device.type == "cuda":
        report["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    elif os.path.exists("/proc/self/status"):  # Linux
        report["eval_process_peak_rss_mib"] = eval_process_peak_rss(checkpoint, data_path, workers)
    return report


def print_report(r):
    machine = r["machine"]
    print(f"{r['images']} images, median of {r['repeats']} rounds, on {machine['gpu'] or machine['cpu']} ({machine['device']}, {machine['threads']} "
          f"threads), torch {machine['torch']}")
    print(f"{'loop':<36}{'images/s':>10}{'s/image':>10}{'trunk GFLOP/s':>15}")
    for name, loop in [(f"(a) authors' ({r['authors_loop']['precision']}, batch 1)", r["authors_loop"]),
                       (f"(b) eval.py ({r['precision']}, batch {r['batch_size']})", r["eval_loop"])]:
        print(f"{name:<36}{loop['images_per_second']:>10.2f}{loop['seconds'] / r['images']:>10.3f}"
              f"{loop['trunk_gflop_per_second']:>15.1f}")
    memory = (f"eval.py peak RSS {r['eval_process_peak_rss_mib']:.0f} MiB" if "eval_process_peak_rss_mib" in r
              else f"peak GPU memory {r['peak_gpu_memory_mib']:.0f} MiB" if "peak_gpu_memory_mib" in r
              else "peak memory not measured here")
    print(f"speed-up (b)/(a): {r['speedup']:.2f}x; trunk {r['trunk_gflop_per_image_pass']:.1f} GFLOP per image "
          f"pass; {memory}")
    print(f"largest per-image metric difference (a) vs (b): {max(r['largest_difference_from_authors_loop'].values()):.2e}")
    if "mean_metric_change_from_fp32" in r:
        print(f"{r['precision']} vs fp32, change of each mean metric: " +
              ", ".join(f"{k} {v:.4f}" for k, v in r["mean_metric_change_from_fp32"].items()))


def main(argv=None):
    p = cli.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--images", type=int, default=16, help="timed images (plus a warm-up of 2)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="of eval.py's loop; auto: fp16 on CUDA, fp32 on CPU")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds of both loops; the median is reported")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("-j", "--workers", type=int, help="eval.py's default: 0 on a CPU, more on a GPU")
    p.add_argument("--json", help="also write the report to this file")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    args = p.parse_args(argv)
    if min(args.images, args.repeats, args.batch_size) < 1 or (args.workers or 0) < 0:
        p.error("--images, --repeats and --batch_size must be at least 1, --workers at least 0")
    if args.json:
        cli.check_writable_file(args.json, "--json")
    folder = tempfile.mkdtemp(prefix="depthclip-bench-")
    try:
        report = run(args.images, args.device, args.precision, args.batch_size, args.workers, folder, args.repeats)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print_report(report)
    if args.json:
        cli.write_json(args.json, report)
    return report


if __name__ == "__main__":
    cli.run(main)
