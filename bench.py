"""Benchmark: eval.py's loop against the authors' way of evaluating, on a full-size RN50 and NYU-sized images,
and what a prompt sweep and the feature cache save.

    python bench.py [--images 16] [--repeats 3] [--device auto] [--precision auto] [--json bench.json]

No weights or data are needed: a seeded checkpoint with RN50's full geometry and NYU-layout images are
generated in a temporary folder (deleted afterwards). In one process, after a warm-up, it times, in
--repeats alternating rounds whose median (and min, max) it reports,
(a) the authors' loop: batch 1, the image and its mirror as two forward passes, files decoded on the main
    thread, OpenAI's CLIP as loaded (standard memory layout, no folding), fp32 on a CPU (fp16 on a GPU, as they
    ran it);
(b) eval.py's loop: batches holding both views (one image per pass on a CPU), BatchNorm folded into the
    convolutions, channels_last, decoding workers on a GPU, the chosen precision;
and checks that the two give the same metrics. With a precision other than fp32 it also runs (b) in fp32
and reports how far each metric moved. Then, through eval.py itself: one prompt setting against the 8 of
configs/ablations.json as one --sweep, and a cold --cache run against a warm one with another setting.
Timings are measured, never asserted.
"""
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from unittest import mock

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

import cli
import clip
import eval as evaluation
import options
from calculate_error import score
from protocols import NYU_METRICS
from clip_runtime import pick_device, pick_precision
from datasets import NYUDepthV2
from datasets.nyu import INPUT_SIZE
from monoclip import (BIN_SETS, PROMPT_SETS, TEMPERATURE, TEMPLATES, DepthPrompts, EncodedPrompts, MonoCLIP,
                      dense_patch_features, depth_head, encode_tokens)
from synthetic.checkpoint import RN50_GEOMETRY, make_state_dict
from synthetic.nyu_like import write_dataset

ROOT = os.path.dirname(os.path.abspath(__file__))
ABLATIONS = os.path.join(ROOT, "configs", "ablations.json")
WARMUP_IMAGES = 2


def make_inputs(folder, images, geometry=RN50_GEOMETRY):
    """A seeded CLIP checkpoint, `images` NYU-layout pairs to time and a few more to warm up with, under folder."""
    checkpoint = os.path.join(folder, "clip.pt")
    torch.save(make_state_dict(0, **geometry), checkpoint)
    for name, count, seed in [("timed", images, 0), ("warmup", WARMUP_IMAGES, 1)]:
        write_dataset(os.path.join(folder, name), count=count, seed=seed)
    return checkpoint, os.path.join(folder, "timed"), os.path.join(folder, "warmup")


def eval_process_peak_rss(checkpoint, data_path, workers, runtime, *extra):
    """Peak resident memory (MiB) of `python eval.py` on the CPU, run as its own process.

    Read from the process's own /proc/self/status (VmHWM) at its end: getrusage of a child would also count
    this process's memory, which the child shares until it loads eval.py.
    """
    argv = ["eval.py", "--clip_model", checkpoint, "--data_path", data_path, "--testfile_nyu", "auto",
            "--device", "cpu", "--precision", "fp32", "--workers", str(workers), "--runtime", runtime, *extra]
    probe = (f"import runpy, sys; sys.argv = {argv!r}; runpy.run_path('eval.py', run_name='__main__'); "
             "print(next(line for line in open('/proc/self/status') if line.startswith('VmHWM')))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True, capture_output=True, text=True)
    return int(result.stdout.strip().splitlines()[-1].split()[1]) / 1024  # 'VmHWM:  123456 kB'


def runtime_startup(checkpoint, device, precision, runtime, folder):
    """Seconds from nothing to a first NYU-sized depth map (MonoCLIP loaded, runtime checked, the image passed
    through): with an empty export cache (cold: the check's graph and this size's exported) and again (warm)."""
    cache = os.path.join(folder, "graphs")
    seconds = {}
    with mock.patch.dict(os.environ, {"DEPTHCLIP_GRAPH_CACHE": cache}):
        for name in ("cold", "warm"):
            start = time.perf_counter()
            model = MonoCLIP(checkpoint, device=device, precision=precision, runtime=runtime)
            model.predict(torch.zeros(1, 3, *INPUT_SIZE))
            seconds[f"{name}_seconds"] = time.perf_counter() - start
    return {"runtime": model.backbone.runtime_name(), **seconds}


def cpu_name():
    """The CPU's model name and the flags that decide bf16 speed (avx512_bf16, amx_bf16), as /proc/cpuinfo says."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
    wanted = [flag for flag in ("avx512f", "avx512_bf16", "amx_bf16") if flag in flags]
    return f"{name} ({', '.join(wanted) or 'no avx512'})"


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class AuthorsModel(torch.nn.Module):
    """The authors' MonoCLIP as they ran it: OpenAI's CLIP as clip.load gives it (no BatchNorm folding, standard
    memory layout), the trunk, the normalization and channel quirk, the head; the paper's prompts."""

    def __init__(self, checkpoint, device, precision):
        super().__init__()
        self.clip, _ = clip.load(checkpoint, device=device)
        if precision == "fp32":
            self.clip.float()
        self.device = device
        self.prompts = EncodedPrompts.of(self.clip, DepthPrompts())

    def forward(self, x):
        return depth_head(*dense_patch_features(self.clip, x, "paper"), self.prompts)


def authors_loop(model, dataset):
    """The authors' evaluation: per image, two forward passes, average, upsample, score. Returns metric rows."""
    rows = []
    for rgb, gt, _ in DataLoader(dataset, batch_size=1, num_workers=0):
        rgb, gt = rgb.to(model.device), gt.to(model.device)
        with torch.no_grad():
            depth = model(rgb)
            depth_flip = model(torch.flip(rgb, [3])).flip(3)
            depth = F.interpolate(0.5 * (depth + depth_flip), size=list(INPUT_SIZE), mode="bilinear", align_corners=True)
        rows.append({name: value.item() for name, value in score(gt, depth, "nyu_depthclip").items()})
    synchronize(model.device)
    return rows


def eval_loop(model, dataset, batch_size, workers):
    """eval.py's evaluate() with eval.py's DataLoader settings. Returns metric rows."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=model.device.type == "cuda",
                        prefetch_factor=4 if workers else None)
    index_of = {rgb: i for i, (rgb, _) in enumerate(dataset.pairs)}
    rows, = evaluation.evaluate(lambda rgb, files, indices: [model.predict(rgb)], loader, index_of, progress=False)
    synchronize(model.device)
    return rows


def timed(loop, *args):
    start = time.perf_counter()
    rows = loop(*args)
    return rows, time.perf_counter() - start


def trunk_gflop(model, height=INPUT_SIZE[0], width=INPUT_SIZE[1]):
    """Floating-point operations (GFLOP) of one image through the image trunk at the evaluation size."""
    x = torch.zeros(1, 3, height, width, device=model.device, dtype=next(model.clip.visual.parameters()).dtype)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.clip.encode_image_dense(x, "trunk" if model.features == "paper" else model.features)
    return counter.get_total_flops() / 1e9


def spread(times):
    """{'min', 'median', 'max'} of a list of seconds."""
    return {"min": min(times), "median": statistics.median(times), "max": max(times)}


def eval_seconds(argv):
    """eval.py's own timing of its evaluation loop (model loading excluded), run in this process, quietly."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return evaluation.main(argv)["timing"]["seconds"]


def experiments(checkpoint, data_path, device, precision, batch_size, workers, folder, repeats, runtime):
    """eval.py timed on one prompt setting against the 8-setting ablation sweep, and a cold --cache run
    against a warm one with a setting the cache has not seen, in alternating rounds."""
    common = ["--clip_model", checkpoint, "--data_path", data_path, "--testfile_nyu", "auto", "--device", str(device),
              "--precision", precision, "--batch_size", str(batch_size), "--workers", str(workers), "--runtime", runtime]
    with open(ABLATIONS) as f:
        settings = len(json.load(f))
    one, sweep, cold, warm = [], [], [], []
    for round_ in range(repeats):
        cache = os.path.join(folder, f"cache{round_}")
        one.append(eval_seconds(common))
        sweep.append(eval_seconds(common + ["--sweep", ABLATIONS]))
        cold.append(eval_seconds(common + ["--cache", cache]))
        warm.append(eval_seconds(common + ["--cache", cache, "--prompt_set", "prompt2", "--temperature", "0.2"]))
    entries = [os.path.join(d, f) for d, _, files in os.walk(os.path.join(folder, "cache0")) for f in files
               if f.endswith(".npy")]
    return {"settings_in_sweep": settings, "one_setting_seconds": spread(one), "sweep_seconds": spread(sweep),
            "sweep_cost_over_one": statistics.median(sweep) / statistics.median(one),
            "cache_cold_seconds": spread(cold), "cache_warm_new_setting_seconds": spread(warm),
            "warm_cache_speedup": statistics.median(cold) / statistics.median(warm),
            "cache_mib_per_image": sum(os.path.getsize(e) for e in entries) / 2 ** 20 / (len(entries) / 2)}


def playground_latency(model, repeats):
    """demo.py's Playground on the bundled example room: seconds for a new image (image tower, text tower, head,
    outputs) and for an edit of the words (text tower, head, outputs)."""
    from demo import EXAMPLES, Playground
    playground = Playground(model)
    settings = dict(words=", ".join(PROMPT_SETS["paper"]), bins=", ".join(map(str, BIN_SETS["paper"])),
                    template=TEMPLATES[0], objects="object", temperature=TEMPERATURE, features="paper", flip=True,
                    focal=500.0)
    room = Image.open(os.path.join(EXAMPLES, "synthetic_room.jpg"))
    first, edits = [], []
    for turn in range(repeats):
        image = room.rotate(90 * (turn + 1), expand=True)  # a new image each round
        first.append(timed(lambda: playground.render(image, **settings))[1])
        for words in ("near, middle, far, very far, remote, distant, unseen", "giant, big, close, near, far, small, "
                      "tiny"):
            edits.append(timed(lambda: playground.render(image, **{**settings, "words": words}))[1])
    return {"first_image_seconds": spread(first), "edit_seconds": spread(edits)}


def text_tower_seconds(model, repeats):
    """The paper's 7 prompts through the text tower: all 77 positions (encode_text) against the positions up to
    the longest prompt's end token (monoclip.encode_tokens, what the language side runs), alternating rounds."""
    tokens = clip.tokenize(DepthPrompts().texts()).to(model.device)
    full, short = [], []
    with torch.inference_mode():
        model.clip.encode_text(tokens), encode_tokens(model.clip, tokens)  # warm-up
        for _ in range(max(repeats, 3) * 5):
            full.append(timed(model.clip.encode_text, tokens)[1])
            short.append(timed(encode_tokens, model.clip, tokens)[1])
    return {"positions": int(tokens.argmax(-1).max()) + 1, "full_seconds": spread(full),
            "shortened_seconds": spread(short), "speedup": statistics.median(full) / statistics.median(short)}


def training_seconds(checkpoint, folder, images, runtime):
    """train.py on `images` generated NYU-sized training rooms (batch 16, their layout): one epoch through the image
    tower (--augment none), the cache's first fill, one epoch from the warm cache; peak RSS and the cache's size."""
    from synthetic.nyu_like import write_dataset
    root = os.path.join(folder, "train_data")
    write_dataset(root, count=images, seed=2)
    os.rename(os.path.join(root, "official_splits", "test"), os.path.join(root, "official_splits", "train"))
    common = [sys.executable, os.path.join(ROOT, "train.py"), "--data_path", root, "--clip_model", checkpoint,
              "--val_count", "1", "--device", "cpu", "--no_progress", "--runtime", runtime]
    probe = "; print(next(line for line in open('/proc/self/status') if line.startswith('VmHWM')))"
    seconds = {}
    for name, extra in [("uncached", []), ("cache_fill", ["--cache", os.path.join(folder, "tcache")]),
                        ("warm_cache", ["--cache", os.path.join(folder, "tcache"), "--epochs", "2"])]:
        out = os.path.join(folder, f"{name}.safetensors")
        argv = common + ["--output", out] + (extra if "--epochs" in extra else extra + ["--epochs", "1"])
        code = (f"import runpy, sys, time; sys.argv = {argv[1:]!r}; t = time.perf_counter(); "
                f"runpy.run_path({argv[1]!r}, run_name='__main__'); print('SECONDS', time.perf_counter() - t)" + probe)
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True)
        lines = result.stdout.splitlines()
        with open(os.path.join(folder, f"{name}_run", "log.jsonl")) as f:
            epochs = [r["seconds"] for r in map(json.loads, f) if "seconds" in r]
        seconds[name] = epochs[0]
        if len(epochs) > 1:  # a later epoch: the features already in memory
            seconds[f"{name}_later_epoch"] = epochs[1]
        seconds[f"{name}_process"] = float(next(line.split()[1] for line in lines if line.startswith("SECONDS")))
        seconds[f"{name}_peak_rss_mib"] = int(next(l for l in lines if l.startswith("VmHWM")).split()[1]) / 1024
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(os.path.join(folder, "tcache"))
               for f in files)
    return {"images": images, **seconds, "warm_over_uncached": seconds["uncached"] / seconds["warm_cache"],
            "later_epoch_over_uncached": seconds["uncached"] / seconds["warm_cache_later_epoch"],
            "cache_mib": size / 2 ** 20}


def largest_difference(rows_a, rows_b):
    """{metric: the largest per-image |a - b|}."""
    return {name: max(abs(a[name] - b[name]) for a, b in zip(rows_a, rows_b)) for name in NYU_METRICS}


def progress(message):
    """One line on stderr per stage, so that minutes of timing are not silent."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(images, device, precision, batch_size, workers, folder, repeats=3, geometry=RN50_GEOMETRY, train_images=0,
        runtime="auto"):
    """Time (a) and (b) on the same generated images, the median of `repeats` rounds; returns the report."""
    if repeats < 3:
        progress(f"warning: {repeats} round(s): a median of fewer than 3 rounds is not comparable between runs or "
                 f"machines, and min/median/max say little; use --repeats 3 or more for figures to report")
    progress(f"generating a full-size RN50 checkpoint and {images} + {WARMUP_IMAGES} NYU-sized images")
    device = pick_device(device)
    precision = pick_precision(precision, device)
    workers = options.default_workers(device) if workers is None else workers
    checkpoint, data_path, warmup_path = make_inputs(folder, images, geometry)
    timed_set, warmup = NYUDepthV2(data_path, "auto"), NYUDepthV2(warmup_path, "auto")

    authors_precision = pick_precision("auto", device)  # fp16 on a GPU, fp32 on a CPU: as they ran it
    authors_model = AuthorsModel(checkpoint, device, authors_precision)
    startup = runtime_startup(checkpoint, device, precision, runtime, folder)
    model = MonoCLIP(checkpoint, device=device, precision=precision, runtime=runtime)
    progress("warming up both loops")
    authors_loop(authors_model, warmup)
    eval_loop(model, warmup, batch_size, workers)
    authors_times, eval_times = [], []
    for round_ in range(repeats):  # alternating, so that a slow spell of a shared machine hits both loops
        progress(f"round {round_ + 1} of {repeats}: (a) the authors' loop, then (b) eval.py's")
        authors_rows, seconds = timed(authors_loop, authors_model, timed_set)
        authors_times.append(seconds)
        eval_rows, seconds = timed(eval_loop, model, timed_set, batch_size, workers)
        eval_times.append(seconds)
    authors_seconds, loop_seconds = statistics.median(authors_times), statistics.median(eval_times)
    del authors_model
    gflop = trunk_gflop(model)
    report = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                    "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "torch": torch.__version__, "runtime": model.backbone.runtime_name()},
        "startup": startup,
        "images": images, "repeats": repeats, "precision": precision, "batch_size": batch_size, "workers": workers,
        "authors_loop": {"seconds": authors_seconds, "images_per_second": images / authors_seconds,
                         "trunk_gflop_per_second": 2 * images * gflop / authors_seconds, "precision": authors_precision,
                         "rounds": spread(authors_times)},
        "eval_loop": {"seconds": loop_seconds, "images_per_second": images / loop_seconds,
                      "trunk_gflop_per_second": 2 * images * gflop / loop_seconds, "rounds": spread(eval_times)},
        "speedup": authors_seconds / loop_seconds,
        "speedup_per_round": spread([a / b for a, b in zip(authors_times, eval_times)]),
        "trunk_gflop_per_image_pass": gflop,
        "metrics": evaluation.mean_metrics(eval_rows),
        "largest_difference_from_authors_loop": largest_difference(authors_rows, eval_rows),
    }
    progress("memory, sweep, cache and playground timings")
    if precision != "fp32":
        reference = MonoCLIP(checkpoint, device=device, precision="fp32")
        fp32_rows = eval_loop(reference, timed_set, batch_size, workers)
        report["fp32_metrics"] = evaluation.mean_metrics(fp32_rows)
        report["mean_metric_change_from_fp32"] = {name: abs(report["metrics"][name] - report["fp32_metrics"][name])
                                                  for name in NYU_METRICS}
    if device.type == "cuda":
        report["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    elif os.path.exists("/proc/self/status"):  # Linux
        report["eval_process_peak_rss_mib"] = eval_process_peak_rss(checkpoint, data_path, workers, runtime)
        report["sweep_process_peak_rss_mib"] = eval_process_peak_rss(checkpoint, data_path, workers, runtime,
                                                                     "--sweep", ABLATIONS)
    report["experiments"] = experiments(checkpoint, data_path, device, precision, batch_size, workers, folder, repeats,
                                        runtime)
    report["playground"] = playground_latency(model, repeats)
    report["text_tower"] = text_tower_seconds(model, repeats)
    if train_images:
        progress(f"train.py on {train_images} generated training images: uncached, cache fill, warm cache")
        report["training"] = training_seconds(checkpoint, folder, train_images, runtime)
    return report


def print_report(r):
    machine = r["machine"]
    print(f"{r['images']} images, median of {r['repeats']} alternating rounds, on {machine['gpu'] or machine['cpu']} "
          f"({machine['device']}, {machine['threads']} threads), torch {machine['torch']}")
    startup = r["startup"]
    print(f"image tower: {machine['runtime']}; start-up to a first depth map {startup['cold_seconds']:.1f} s with an "
          f"empty export cache, {startup['warm_seconds']:.1f} s warm")
    print(f"{'loop':<36}{'images/s':>10}{'s/image':>10}{'trunk GFLOP/s':>15}")
    for name, loop in [(f"(a) authors' ({r['authors_loop']['precision']}, batch 1)", r["authors_loop"]),
                       (f"(b) eval.py ({r['precision']}, batch {r['batch_size']})", r["eval_loop"])]:
        print(f"{name:<36}{loop['images_per_second']:>10.2f}{loop['seconds'] / r['images']:>10.3f}"
              f"{loop['trunk_gflop_per_second']:>15.1f}")
    rounds = r["speedup_per_round"]
    print(f"speed-up (b)/(a): median {r['speedup']:.2f}x, rounds {rounds['min']:.2f}x to {rounds['max']:.2f}x; "
          f"trunk {r['trunk_gflop_per_image_pass']:.1f} GFLOP per image pass")
    if "eval_process_peak_rss_mib" in r:
        print(f"peak RSS of eval.py {r['eval_process_peak_rss_mib']:.0f} MiB, of the 8-setting sweep "
              f"{r['sweep_process_peak_rss_mib']:.0f} MiB")
    elif "peak_gpu_memory_mib" in r:
        print(f"peak GPU memory {r['peak_gpu_memory_mib']:.0f} MiB")
    print(f"largest per-image metric difference (a) vs (b): {max(r['largest_difference_from_authors_loop'].values()):.2e}")
    if "mean_metric_change_from_fp32" in r:
        print(f"{r['precision']} vs fp32, change of each mean metric: " +
              ", ".join(f"{k} {v:.4f}" for k, v in r["mean_metric_change_from_fp32"].items()))
    e = r["experiments"]
    print(f"eval.py loop seconds (min/median/max): one setting {fmt(e['one_setting_seconds'])}; "
          f"{e['settings_in_sweep']}-setting --sweep {fmt(e['sweep_seconds'])} -> {e['sweep_cost_over_one']:.2f}x one")
    print(f"--cache: cold {fmt(e['cache_cold_seconds'])}; warm, new setting {fmt(e['cache_warm_new_setting_seconds'])} "
          f"-> {e['warm_cache_speedup']:.1f}x faster; {e['cache_mib_per_image']:.2f} MiB per image")
    print(f"playground seconds (min/median/max): new image {fmt(r['playground']['first_image_seconds'])}, "
          f"edit of the words {fmt(r['playground']['edit_seconds'])}")
    if "training" in r:
        t = r["training"]
        print(f"train.py, one epoch over {t['images'] - 1} images (batch 16; steps only): through the image tower "
              f"{t['uncached']:.1f} s, filling the cache {t['cache_fill']:.1f} s, warm cache {t['warm_cache']:.2f} s "
              f"({t['warm_over_uncached']:.1f}x), a later epoch {t['warm_cache_later_epoch']:.2f} s "
              f"({t['later_epoch_over_uncached']:.1f}x); cache {t['cache_mib']:.0f} MiB; peak RSS "
              f"{max(t[k] for k in t if k.endswith('rss_mib')):.0f} MiB")
    t = r["text_tower"]
    print(f"text tower, the paper's 7 prompts (ms, min/median/max): 77 positions "
          f"{fmt({k: 1000 * v for k, v in t['full_seconds'].items()})}, {t['positions']} positions "
          f"{fmt({k: 1000 * v for k, v in t['shortened_seconds'].items()})} -> {t['speedup']:.1f}x")


def fmt(times):
    return "/".join(f"{times[k]:.2f}" for k in ("min", "median", "max"))


def main(argv=None):
    p = options.bench_options()
    args = p.parse_args(argv)
    if min(args.images, args.repeats, args.batch_size) < 1 or (args.workers or 0) < 0:
        p.error("--images, --repeats and --batch_size must be at least 1, --workers at least 0")
    folder = tempfile.mkdtemp(prefix="depthclip-bench-")
    with cli.OutputFile(args.output) if args.output else contextlib.nullcontext() as output:
        try:
            report = run(args.images, args.device, args.precision, args.batch_size, args.workers, folder, args.repeats,
                         train_images=args.train_images, runtime=args.runtime)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print_report(report)
        if output:
            output.write_json(report)
    return report


if __name__ == "__main__":
    cli.run(main)
