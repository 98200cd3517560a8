"""Every command-line flag of eval.py, predict.py and bench.py, defined once; the sweep file's entries, read
with the same meaning and checks as the flags."""
import argparse
import json
import os

from cli import ArgumentParser
from calculate_error import KITTI_CAP, KITTI_CROPS
from datasets import DEFAULT_DATA_PATH, DEFAULT_TEST_LIST, MODEL, NORMALIZATIONS, kitti
from monoclip import BIN_SETS, FEATURES, PRECISIONS, PROMPT_SETS, TEMPERATURE, DepthPrompts, MonoCLIP

METHODS = {
    "monoclip": "DepthCLIP (MonoCLIP): zero-shot depth from CLIP",
    "lower_bound": "every pixel an independent uniform draw in [0, 10] m (the paper's lower bound)",
    "constant": "one constant depth everywhere (--constant_depth), a sanity row",
}
SWEEP_KEYS = ("name", "prompt_set", "depth_classes", "bin_set", "bins", "templates", "objects", "temperature")


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


def parser(prog, description):
    return ArgumentParser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def add_model_arguments(p):
    """MonoCLIP's flags; returns the method and running argument groups."""
    method = p.add_argument_group("method")
    method.add_argument("--clip_model", default="RN50", help="an OpenAI CLIP name (RN50, ViT-B/16, ...), a checkpoint "
                        "path, or open_clip:<model>[@<pretrained tag or file>] (needs open_clip_torch)")
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
                        help="; ".join(f"{k}: {v}" for k, (_, v) in FEATURES.items()))
    method.add_argument("--normalize", default="imagenet", choices=[*NORMALIZATIONS, MODEL],
                        help="RGB mean/std: the authors' ImageNet statistics, OpenAI CLIP's, or the model's own "
                             "(open_clip models say theirs)")
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


def prompts_from(settings):
    """DepthPrompts from flag-named settings (a parsed command line's vars, or a sweep entry over them)."""
    return DepthPrompts(settings["depth_classes"] or settings["prompt_set"] or "paper",
                        settings["bins"] or settings["bin_set"] or "paper",
                        settings["templates"] or DepthPrompts.templates, settings["objects"] or DepthPrompts.objects,
                        settings["temperature"])


def build_monoclip(args, device):
    prompts = prompts_from(vars(args))
    return MonoCLIP(args.clip_model, depth_classes=prompts.depth_classes, bins=prompts.bins,
                    templates=prompts.templates, objects=prompts.objects, temperature=prompts.temperature,
                    device=device, features=args.features, precision=args.precision)


def eval_options():
    p = parser("eval.py", "Evaluate DepthCLIP, or a baseline, on NYU Depth V2 with the authors' protocol (Table 1 of the paper).")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", default="NYU", choices=["NYU", "KITTI"])
    data.add_argument("--data_path", help=f"NYU: the folder holding official_splits/test (default {DEFAULT_DATA_PATH}); "
                      f"KITTI: the raw-data root holding <date>/<drive> (default {kitti.DEFAULT_DATA_PATH})")
    data.add_argument("--testfile_nyu", default=DEFAULT_TEST_LIST,
                      help="list of 'rgb depth' pairs, or 'auto' for every pair found under the data path")
    data.add_argument("--scenes", type=comma_list, help="evaluate only these scene folders (NYU) or drives (KITTI), "
                      "e.g. bathroom,classroom")
    data.add_argument("--limit", type=int, help="evaluate only the first N pairs")
    data.add_argument("--median_scale", action="store_true", help="scale each prediction by median(gt)/median(pred) "
                      "over its valid pixels before scoring (monodepth2's evaluation); the scales go to the JSON")
    outdoor = p.add_argument_group("KITTI (--dataset KITTI)")
    outdoor.add_argument("--gt_path", help="the annotated-depth root holding <drive>/proj_depth/groundtruth "
                         f"(default <data_path>/{kitti.GT_FOLDER})")
    outdoor.add_argument("--testfile_kitti", default=kitti.DEFAULT_TEST_LIST,
                         help="list of 'rgb gt [focal]' lines, gt None where there is none (default: the Eigen "
                              "split's 697), or 'auto' for every pair found")
    outdoor.add_argument("--kitti_protocol", default="bts", choices=["bts", "authors"],
                         help="bts: the prediction pasted into the full frame and scored there (BTS, AdaBins); "
                              "authors: the ground truth cropped to the 352x1216 input box (the DepthCLIP authors')")
    outdoor.add_argument("--cap", type=float, default=KITTI_CAP, help="the largest depth (m) that counts")
    outdoor.add_argument("--eval_crop", default="garg", choices=list(KITTI_CROPS), help="the scored region")

    method, run = add_model_arguments(p)
    method.add_argument("--method", default="monoclip", choices=list(METHODS),
                        help="; ".join(f"{k}: {v}" for k, v in METHODS.items()))
    method.add_argument("--sweep", metavar="FILE", help="a JSON list of prompt settings, each {\"name\": ..., and any "
                        f"of {', '.join(SWEEP_KEYS[1:])}}}, all scored from one pass of the image tower")
    method.add_argument("--seed", type=int, default=0, help="seed of the lower_bound draws")
    method.add_argument("--constant_depth", type=float, default=2.5, help="the constant baseline's depth (m)")

    run.add_argument("--batch_size", type=int, default=8, help="images per step (each also runs mirrored)")
    run.add_argument("-j", "--workers", type=int, help="image-decoding processes (default: 0 on a CPU, "
                     "half the cores up to 8 on a GPU)")
    run.add_argument("--cache", metavar="DIR", help="keep each image's patch features here and reuse them in "
                     "later runs with the same image-side settings (clip_model, features, normalize, precision); "
                     "baselines have none and ignore it")
    run.add_argument("--output", help="write results as JSON to this file")
    run.add_argument("--img_save", metavar="DIR", help="write per image DIR/<scene>_<number>.png (RGB | prediction | "
                     "ground truth) and DIR/<scene>_<number>_depth.png (prediction, uint16 mm, 640x480)")
    run.add_argument("--img_save_bins", metavar="IMAGE", help="also write DIR/<scene>_<number>_bins.png for this image "
                     "(its index or file, e.g. bathroom/rgb_00045.jpg): each depth prompt's softmax weight per patch")

    legacy = p.add_argument_group("accepted for the authors' test.sh, no effect")
    legacy.add_argument("--evaluate", action="store_true")
    legacy.add_argument("--gpu_num", help="use CUDA_VISIBLE_DEVICES or --device instead")
    legacy.add_argument("--encoder")
    legacy.add_argument("--other_method", choices=["MonoCLIP"])
    return p


def parse_eval_args(argv=None):
    p = eval_options()
    args = p.parse_args(argv)
    check_model_arguments(p, args)
    if args.img_save_bins is not None and (args.img_save is None or args.method != "monoclip"):
        p.error("--img_save_bins needs --img_save DIR and --method monoclip")
    if args.dataset == "KITTI":
        if args.img_save:
            p.error("--img_save draws NYU's panels; for KITTI use predict.py on the images you want to see")
        if not (args.bins or args.bin_set):
            args.bin_set = "kitti_scaled"  # the paper's bins are for rooms; said in the results' config
    if args.cap <= 1e-3:
        p.error("--cap must be more than 0.001 m")
    if args.sweep and (args.method != "monoclip" or args.img_save):
        p.error("--sweep scores DepthCLIP settings: it takes no --method baseline and no --img_save")
    if args.batch_size < 1 or (args.workers or 0) < 0 or (args.limit is not None and args.limit < 1):
        p.error("--batch_size and --limit must be at least 1, --workers at least 0")
    return args


def read_sweep(path, args):
    """[(name, DepthPrompts, the entry's own settings)] from a sweep file; what an entry leaves out comes from
    args. Every entry is checked before anything runs; a bad one is a ValueError naming it and its key."""
    try:
        with open(path) as f:
            entries = json.load(f)
    except OSError as error:
        raise ValueError(f"--sweep {path} cannot be read ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"--sweep {path} is not JSON ({error})") from None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"--sweep {path} must hold a non-empty JSON list of settings, e.g. "
                         f"[{{\"name\": \"paper\"}}, {{\"name\": \"warm\", \"temperature\": 0.2}}]")
    runs, names = [], set()
    for number, entry in enumerate(entries, start=1):
        where = f"--sweep {path}, entry {number}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is a {type(entry).__name__}, not an object of settings")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where} needs a \"name\" (a non-empty string)")
        where += f" ({name!r})"
        if name in names:
            raise ValueError(f"{where}: the name is used twice; give each entry its own")
        names.add(name)
        unknown = [key for key in entry if key not in SWEEP_KEYS]
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r}; an entry takes {', '.join(SWEEP_KEYS)} "
                             f"(image-side flags such as --clip_model are shared, given on the command line)")
        for one, other in [("prompt_set", "depth_classes"), ("bin_set", "bins")]:
            if one in entry and other in entry:
                raise ValueError(f"{where}: give {one!r} or {other!r}, not both")
        for key in ("depth_classes", "templates", "objects"):
            if key in entry and not (isinstance(entry[key], list) and all(isinstance(v, str) for v in entry[key])):
                raise ValueError(f"{where}: {key!r} must be a list of strings")
        if "bins" in entry and not isinstance(entry["bins"], list):
            raise ValueError(f"{where}: 'bins' must be a list of numbers (metres)")
        settings = vars(args).copy()
        if "prompt_set" in entry or "depth_classes" in entry:  # an entry's words replace the command line's
            settings.update(prompt_set=None, depth_classes=None)
        if "bin_set" in entry or "bins" in entry:
            settings.update(bin_set=None, bins=None)
        settings.update((key, value) for key, value in entry.items() if key != "name")
        try:
            prompts = prompts_from(settings)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        runs.append((name, prompts, {"prompt_set": settings["prompt_set"], "bin_set": settings["bin_set"]}))
    return runs


def predict_options():
    p = parser("predict.py", "Depth for your own photos with DepthCLIP: one image or a folder of them.")
    p.add_argument("input", help="an image file or a folder of images")
    p.add_argument("-o", "--out", help="output folder (default: beside each image)")
    p.add_argument("--long_side", type=int, default=544, help="the long side (pixels) the image is resized to")
    p.add_argument("--ply", action="store_true", help="also write <name>_depth.ply, a coloured point cloud "
                   "(pinhole camera, principal point at the image centre)")
    p.add_argument("--focal", type=float, help="focal length in pixels for --ply (default: NYU's colour camera, "
                   "518.86 at 640 wide, scaled to the image's width)")
    add_model_arguments(p)
    return p


def bench_options():
    p = parser("bench.py", "Benchmark: eval.py's loop against the authors' way of evaluating, on a full-size RN50 and "
               "NYU-sized images.")
    p.add_argument("--images", type=int, default=16, help="timed images (plus a warm-up of 2)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="of eval.py's loop; auto: fp16 on CUDA, fp32 on CPU")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds of both loops; the median is reported")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("-j", "--workers", type=int, help="eval.py's default: 0 on a CPU, more on a GPU")
    p.add_argument("--json", help="also write the report to this file")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    return p
