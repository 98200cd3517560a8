"""Every command-line flag of eval.py, predict.py, demo.py and bench.py, defined once, and what the scripts
build from them (the prompts, the model, the normalization). Sweep files are read by sweep.py with these flags'
meaning; NYU, KITTI and the baselines are eval.py's --dataset and --method."""
import argparse
import os
import sys

import learned_prompts
import open_clip_adapter
import protocols
import rsa
from cli import ArgumentParser, OldSpelling, bounded, require
from clip_runtime import PRECISIONS
from graph_runtime import AUTO_ORDER, RUNTIMES
from datasets import DEFAULT_DATA_PATH, DEFAULT_TEST_LIST, MODEL, NORMALIZATIONS, captions, kitti, zeroshot
from datasets.images import MIN_DEPTH
from datasets.nyu import INPUT_SIZE
from monoclip import BIN_SETS, FEATURES, PROMPT_SETS, TEMPERATURE, DepthPrompts
from visualize import MIN_COLOR_SPAN

METHODS = {
    "monoclip": "DepthCLIP (MonoCLIP): zero-shot depth from CLIP",
    "lower_bound": "every pixel an independent uniform draw in [0, 10] m (the paper's lower bound)",
    "constant": "one constant depth everywhere (--constant_depth), a sanity row",
}
SWEEP_KEYS = ("name", "prompt_set", "depth_classes", "bin_set", "bins", "templates", "objects", "temperature", "prompts",
              "prompts_config")
DATASETS = list(protocols.DEFAULTS)  # eval.py --dataset: each dataset with its default protocol
LONG_SIDE = INPUT_SIZE[1]  # predict.py and the playground: a photo's long side, as NYU's evaluated crop (544)
RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
COUNT = bounded(int, at_least=1)  # images, epochs, rounds
NONNEGATIVE = bounded(int, at_least=0)  # seeds, workers
POSITIVE = bounded(float, more_than=0)  # metres, pixels, rates, temperatures
AT_LEAST_ZERO = bounded(float, at_least=0)  # GiB, gradient norms, weight decay, a decay's end rate


class ListError(argparse.ArgumentTypeError, ValueError):
    """A comma-separated value that cannot be read: argparse shows its message; the playground catches it."""


def comma_list(text):
    """'a, b,c' -> ['a', 'b', 'c']; an empty item is a ListError."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise ListError(f"{text!r} has an empty item; give comma-separated values")
    return items


def numbers(text):
    """'1, 2.5' -> [1.0, 2.5]; an item that is not a number is a ListError."""
    values = []
    for item in comma_list(text):
        try:
            values.append(float(item))
        except ValueError:
            raise ListError(f"{item!r} is not a number") from None
        if not values[-1] > 0 or values[-1] == float("inf"):
            raise ListError(f"{item!r} is not a depth: give metres more than 0")
    return values


def default_workers(device):
    """Decoding processes: none on a CPU, where they would take cores from the network (decoding is ~2% of
    the work there); on a GPU half the cores, at most 8, shared among the local torchrun processes."""
    if device.type == "cpu":
        return 0
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, (os.cpu_count() or 2) // 2 // local))


REPOSITORY = os.path.dirname(os.path.abspath(__file__))


def shown(path):
    """A default path as --help shows it: inside the repository as <repository>/..., never the absolute path of the
    machine the help was printed on."""
    inside = isinstance(path, str) and path.startswith(REPOSITORY + os.sep)
    return os.path.join("<repository>", os.path.relpath(path, REPOSITORY)) if inside else path


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default where it has one (a path inside the repository as <repository>/...); a flag whose
    absence means something says so in its help."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        if isinstance(action.default, str) and shown(action.default) != action.default:
            return f"{action.help or ''} (default: {shown(action.default)})".strip()
        return super()._get_help_string(action)


def parser(prog, description):
    return ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)


FLAGS = {  # every flag that more than one script takes, defined once: {name: add_argument's keywords}. A script adds
    # one with flag(), which may set its own default, narrow its choices and say what it is for there; its meaning,
    # type and destination stay these (tests/test_flags.py checks every parser against this table)
    "--dataset": dict(type=str.upper, help="(any capitals)"),
    "--data_path": dict(help="the dataset's folder (docs/data.md)"),
    "--gt_path": dict(help=f"KITTI's annotated-depth root (default <data_path>/{kitti.GT_FOLDER})"),
    "--testfile_kitti": dict(help="a list of 'rgb gt [focal]' lines"),
    "--testfile_nyu": dict(help="a list of 'rgb depth' pairs"),
    "--testfile": dict(help="another split list in the source's format (Marigold's datasets, VOID's)"),
    "--diode_split": dict(default="all", choices=zeroshot.DIODE_SPLITS, help="DIODE's validation images"),
    "--check": dict(action="store_true", help="say whether the data is complete (exit 1 if not)"),
    "--urls": dict(action="store_true", help="print where the data comes from"),
    "--download": dict(action="store_true", help="fetch what is missing"),
    "--clip_model": dict(default="RN50", help="an OpenAI CLIP name (RN50, ViT-B/16, ...) or a checkpoint path"),
    "--normalize": dict(default="imagenet", choices=[*NORMALIZATIONS, MODEL], help="RGB mean/std: the authors' "
                        "ImageNet statistics, OpenAI CLIP's, or the model's own (open_clip models say theirs)"),
    "--temperature": dict(type=POSITIVE, default=TEMPERATURE, help="the softmax over the depth words (bins) "
                          "divides CLIP's logits by this (the paper's and Auty & Mikolajczyk's 0.1)"),
    "--bin_set": dict(help="named bins in metres"),
    "--bins": dict(type=numbers, help="one depth (m) per word, comma-separated (instead of --bin_set)"),
    "--seed": dict(type=NONNEGATIVE, default=0, help="seeds every random draw the run makes"),
    "--batch_size": dict(type=COUNT, help="images per step"),
    "--epochs": dict(type=COUNT, help="passes over the training images"),
    "--lr": dict(type=POSITIVE, help="the learning rate"),
    "--grad_clip": dict(type=AT_LEAST_ZERO, help="gradient-norm clipping (0: none, as Lightning's gradient_clip_val "
                        "0)"),
    "--val_count": dict(type=NONNEGATIVE, default=50, help="training images held out and scored each epoch; "
                        "never the test set"),
    "--init": dict(metavar="FILE", help="start from the parameters in this file instead of fresh ones"),
    "--cache": dict(metavar="DIR", help="keep what the frozen CLIP computes here, reused by later runs with the "
                    "same settings"),
    "--keep_gb": dict(type=AT_LEAST_ZERO, help="data kept in memory up to this many GiB; beyond, read again each step"),
    "--device": dict(default="auto", help="auto, cpu, cuda or cuda:N"),
    "--precision": dict(default="auto", choices=PRECISIONS, help="auto: fp16 on CUDA (the DepthCLIP authors' "
                        "evaluation and RSA's), fp32 on a CPU; bf16 runs under autocast (or a graph runtime's "
                        "bf16)"),
    "--output": dict(metavar="FILE", help="the file to write"),
    "--checkpoint_dir": dict(metavar="DIR", help="per-epoch checkpoint (last.pt), log.jsonl and curves.png "
                             "(default: <output>_run)"),
    "--resume": dict(action="store_true", help="continue from <checkpoint_dir>/last.pt with the run's settings "
                     "(others are refused); without one, say so and start"),
    "--keep_last": dict(action="store_true", help="write the last epoch's parameters, not the best's"),
    "--tensorboard": dict(metavar="DIR", help="also write TensorBoard event files (needs tensorboard)"),
    "--no_progress": dict(dest="progress", action="store_false", help="no progress bars"),
    "--debug": dict(action="store_true", help="show Python tracebacks"),
    "--scale_model": dict(metavar="FILE", help="a LanScale file (RSA; docs/rsa.md): their checkpoint, or a "
                          ".safetensors from train_scale.py"),
    "--relative_kind": dict(default="disparity", choices=rsa.KINDS, help="what relative maps hold: disparity "
                            "(inverse depth, as DPT, MiDaS and Depth Anything output), or depth (inverted first)"),
    "--captions": dict(metavar="DIR", help="RSA's text folder (holding text_all/<nyu|kitti|void>/<split>)"),
    "--long_side": dict(type=bounded(int, at_least=32), default=LONG_SIDE, help="the long side (pixels) an image "
                        "is resized to"),
    "--mirror": dict(help="where the archives are served"),
}


def flag(group, name, *aliases, what=None, **changes):
    """Adds the flag `name` as FLAGS defines it (aliases: other spellings, e.g. -o), with this script's default,
    narrower choices, required=True, and what it is for here (appended to the shared help)."""
    keywords = {**FLAGS[name], **changes}
    if what:
        keywords["help"] = f"{keywords['help']}: {what}"
    return group.add_argument(name, *aliases, **keywords)


def add_model_arguments(p):
    """MonoCLIP's flags; returns the method and running argument groups."""
    method = p.add_argument_group("method")
    flag(method, "--clip_model", what="or open_clip:<model>[@<pretrained tag or file>] (needs open_clip_torch)")
    method.add_argument("--prompt_set", choices=list(PROMPT_SETS),
                        help="named depth words (default: paper): " + "; ".join(f"{k}: {', '.join(v)}"
                                                                                for k, v in PROMPT_SETS.items()))
    method.add_argument("--depth_classes", type=comma_list, help="depth words, nearest first (instead of --prompt_set)")
    flag(method, "--bin_set", choices=list(BIN_SETS), what="one per depth word (default: paper; "
         "kitti_scaled with --dataset KITTI); class1..class4 are the paper's bin ablation rows: " +
         "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in BIN_SETS.items()))
    flag(method, "--bins")
    method.add_argument("--templates", type=comma_list, help="prompt templates with two {} slots: object, depth word "
                        f"(default: {DepthPrompts.templates[0]!r})")
    method.add_argument("--objects", type=comma_list, help="object nouns for the templates "
                        f"(default: {DepthPrompts.objects[0]!r})")
    flag(method, "--temperature")
    method.add_argument("--features", default="paper", choices=list(FEATURES),
                        help="; ".join(f"{k}: {v}" for k, (_, v) in FEATURES.items()))
    flag(method, "--normalize")
    method.add_argument("--prompts", metavar="FILE", help="learned prompt tokens instead of words: a .safetensors "
                        "written by train.py or convert_prompts.py, or a PromptLearningCLIP-MDE .ckpt with "
                        "--prompts_config; each view's depth is clamped to the depth range the tokens were trained "
                        "for (NYU 0.001-10 m, KITTI 0.001-80 m) before the flip average, as their code does")
    method.add_argument("--prompts_config", metavar="PARAMS.yaml", help="the params YAML a --prompts .ckpt was "
                        "trained with (their params/*.yaml)")
    method.add_argument("--no_flip", action="store_true", help="skip averaging with the mirrored image")
    return method, add_running_arguments(p)


def add_running_arguments(p):
    """--device, --precision, --debug: every script that runs the model."""
    run = p.add_argument_group("running")
    flag(run, "--device")
    flag(run, "--precision", what="train.py trains in fp32 as Auty & Mikolajczyk's training does and takes "
         "auto or fp32 only")
    run.add_argument("--runtime", default="auto", choices=RUNTIMES, help="what runs the image tower on a CPU: auto: "
                     + ", else ".join(RUNTIME_NAMES[name] for name in AUTO_ORDER) + ", the first installed that "
                     "passes a check against PyTorch at load (bf16: OpenVINO), else PyTorch (one line says why); "
                     "GPUs, fp16 and train.py --bn train keep PyTorch")
    flag(run, "--debug")
    return run


def add_batch_arguments(group):
    """--batch_size and --workers: eval.py's loader, and bench.py's copy of it."""
    flag(group, "--batch_size", default=8, what="each also runs mirrored")
    group.add_argument("-j", "--workers", type=NONNEGATIVE, help="image-decoding processes (default: 0 on a CPU, "
                       "half the cores up to 8 on a GPU)")


def add_long_side(p):
    flag(p, "--long_side")


def check_model_arguments(p, args):
    if args.prompt_set and args.depth_classes:
        p.error("give --prompt_set or --depth_classes, not both")
    if args.bin_set and args.bins:
        p.error("give --bin_set or --bins, not both")
    try:
        if args.clip_model.startswith(open_clip_adapter.PREFIX):
            require("open_clip", f"--clip_model {args.clip_model}", "open_clip_torch")
        learned_prompts.prompts_from(vars(args))  # words, bins, templates and their length, before any data or model
    except ValueError as error:
        p.error(str(error))


def eval_options():
    p = parser("eval.py", "Evaluate DepthCLIP, or a baseline, on NYU Depth V2 (the authors' protocol, Table 1 of the "
               "paper) or KITTI's Eigen split (BTS's or the authors' protocol).")
    data = p.add_argument_group("data")
    flag(data, "--dataset", default="NYU", choices=DATASETS, what="NYU, KITTI, or the zero-shot suite: "
         "ETH3D, SCANNET, DIODE (Marigold's), IBIMS, SUNRGBD (ZoeDepth's), VOID (RSA's)")
    flag(data, "--data_path", what=f"NYU: the folder holding official_splits/test (default "
         f"{shown(DEFAULT_DATA_PATH)}); KITTI: the raw-data root holding <date>/<drive> (default "
         f"{shown(kitti.DEFAULT_DATA_PATH)}); the zero-shot suite: the dataset's folder")
    flag(data, "--testfile_nyu", default=DEFAULT_TEST_LIST, what="or 'auto' for every pair found under the data path")
    data.add_argument("--scenes", type=comma_list, help="evaluate only these scene folders (NYU) or drives (KITTI), "
                      "e.g. bathroom,classroom")
    data.add_argument("--limit", type=COUNT, help="evaluate only the first N pairs")
    data.add_argument("--align", choices=[*protocols.ALIGNMENTS, "language"], help="per image before scoring: none "
                      "(default); median: x median(gt)/median(pred) (monodepth2's); lstsq: scale and shift by least squares in "
                      "depth (Marigold's); lstsq_disparity: the same in inverse depth (MiDaS, Depth Anything). lstsq "
                      "and lstsq_disparity: the zero-shot suite and --relative; language: RSA's scale and shift from "
                      "the image's caption (--relative, --scale_model)")
    data.add_argument("--median_scale", action="store_true", help="--align median: scale each prediction by "
                      "median(gt)/median(pred) "
                      "over its valid pixels before scoring (monodepth2's evaluation); the scales go to the JSON")
    data.add_argument("--protocol", metavar="NAME", choices=[*protocols.PROTOCOLS, *protocols.FAMILIES],
                      help="the evaluation protocol, one row of protocols.py (python -m protocols prints them): "
                      + ", ".join(protocols.PROTOCOLS) + ". Default: the dataset's (" + ", ".join(
                          f"{d} {n}" for d, n in protocols.DEFAULTS.items()) + "; RSA's with --relative). Old "
                      "spellings: depthclip (the dataset's default), auty2023 (nyu_auty2023, kitti_auty2023), rsa")
    suite = p.add_argument_group("the zero-shot suite (--dataset ETH3D|SCANNET|DIODE|IBIMS|SUNRGBD; docs/data.md)")
    flag(suite, "--testfile", what="default: the list shipped in datasets/lists")
    flag(suite, "--diode_split")
    add_long_side(suite)
    add_relative_arguments(p, "a folder of .npy maps, one per image mirroring the list (DIR/<image path without "
                           "extension>.npy)")
    outdoor = p.add_argument_group("KITTI (--dataset KITTI)")
    flag(outdoor, "--gt_path", what="holding <drive>/proj_depth/groundtruth")
    flag(outdoor, "--testfile_kitti", default=kitti.DEFAULT_TEST_LIST, what="gt None where there is "
         "none (default: the Eigen split's 697), or 'auto' for every pair found")
    outdoor.add_argument("--kitti_protocol", choices=list(protocols.KITTI_PROTOCOLS),
                         help="an old spelling of --protocol: bts is kitti_bts (the prediction pasted into the full "
                              "frame and scored there: BTS, AdaBins; the default), authors is kitti_depthclip (the "
                              "ground truth cropped to the 352x1216 input box: the DepthCLIP authors')")
    outdoor.add_argument("--cap", type=bounded(float, more_than=MIN_DEPTH), default=kitti.CAP, help="the largest depth (m) that counts")
    outdoor.add_argument("--eval_crop", default="garg", choices=list(kitti.CROPS), help="the scored region")

    method, run = add_model_arguments(p)
    method.add_argument("--method", default="monoclip", choices=list(METHODS),
                        help="; ".join(f"{k}: {v}" for k, v in METHODS.items()))
    method.add_argument("--sweep", metavar="FILE", help="a JSON list of prompt settings, each {\"name\": ..., and any "
                        f"of {', '.join(SWEEP_KEYS[1:])}}}, all scored from one pass of the image tower")
    flag(method, "--seed", what="the lower_bound baseline's")
    method.add_argument("--constant_depth", type=POSITIVE, default=2.5, help="the constant baseline's depth (m)")

    add_batch_arguments(run)
    flag(run, "--cache", what="each image's patch features, reused by later runs with the same "
         "image-side settings (the weights' SHA256, features, precision, device type, dataset, input size, "
         "normalization); baselines have none and ignore it")
    flag(run, "--output", what="the results as JSON")
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


def add_relative_arguments(p, npy, caption_folder=True):
    """RSA's flags (docs/rsa.md): a relative depth from elsewhere, and the language that sets its scale
    (caption_folder: eval.py's --captions DIR; predict.py takes --caption TEXT instead)."""
    group = p.add_argument_group("relative depth and RSA's language alignment (docs/rsa.md)")
    group.add_argument("--relative", metavar="SOURCE", type=relative_source, help=f"npy:PATH: {npy}; depthclip: "
                       "DepthCLIP's own map (a depth). Scored after --align")
    flag(group, "--relative_kind", what="the .npy maps'")
    flag(group, "--scale_model", what="for --align language")
    if caption_folder:
        flag(group, "--captions", what="--align language's (or a folder holding <image path without "
         f"extension>.txt; line 0 read; default {shown(captions.DEFAULT_ROOT)}; python -m "
         "datasets.prepare_captions --download)")
    return group


RELATIVE_DEPTHCLIP, RELATIVE_NPY = "depthclip", "npy:"  # --relative's two sources


def relative_source(text):
    """--relative: 'npy:PATH' -> ('npy', PATH), 'depthclip' -> ('depthclip', None); anything else is one line."""
    if text == RELATIVE_DEPTHCLIP:
        return RELATIVE_DEPTHCLIP, None
    if text.startswith(RELATIVE_NPY) and len(text) > len(RELATIVE_NPY):
        return "npy", text[len(RELATIVE_NPY):]
    raise argparse.ArgumentTypeError(f"{text!r}: give npy:DIR (one .npy per image; predict.py: npy:FILE) or "
                                     f"depthclip")


def check_relative_arguments(p, args):
    """--relative and --align language across flags, before anything loads."""
    if args.align == "language" and not args.relative:
        p.error("--align language sets the scale of a relative depth: give --relative npy:DIR (or depthclip)")
    if args.align == "language" and not args.scale_model:
        p.error("--align language needs --scale_model FILE (a LanScale: RSA's checkpoint or train_scale.py's)")
    if args.scale_model and args.align != "language":
        p.error("--scale_model is for --align language")
    if args.relative and args.relative[0] == RELATIVE_DEPTHCLIP and args.relative_kind != "disparity":
        p.error("--relative depthclip is a depth already; leave out --relative_kind")


def parse_eval_args(argv=None):
    p = eval_options()
    args = p.parse_args(argv)
    check_model_arguments(p, args)
    check_relative_arguments(p, args)
    if args.img_save_bins is not None and (args.img_save is None or args.method != "monoclip"):
        p.error("--img_save_bins needs --img_save DIR and --method monoclip")
    if args.dataset == "KITTI":
        if args.img_save:
            p.error("--img_save draws NYU's panels; for KITTI use predict.py on the images you want to see")
        if not (args.bins or args.bin_set or args.prompts):
            args.bin_set = "kitti_scaled"  # the paper's bins are for rooms; said in the results' config
    if args.median_scale and args.align not in (None, "median"):
        p.error("--median_scale is --align median; give one of them")
    args.align = "median" if args.median_scale else args.align or "none"
    args.median_scale = args.align == "median"
    if args.relative:
        return check_relative_run(p, args)
    if args.protocol == "rsa" or args.protocol in protocols.RSA_ROWS:
        p.error("--protocol rsa scores relative maps: give --relative npy:DIR (or depthclip) and --align")
    scored_as(p, args)
    args.protocol = args.protocol or "depthclip"
    if args.dataset in zeroshot.PROTOCOLS or args.dataset == "VOID":
        if not args.data_path:
            p.error(f"--dataset {args.dataset} needs --data_path (docs/data.md says where to get it"
                    f"{'; VOID: docs/rsa.md' if args.dataset == 'VOID' else ''})")
        if args.img_save or args.scenes:
            p.error("--img_save and --scenes are NYU's and KITTI's; the zero-shot suite scores as its sources do")
        args.batch_size = 1  # the images differ in size
    row = protocols.PROTOCOLS[args.scored_as]
    if "auty2023" in row.name and (args.median_scale or args.img_save):
        p.error("--protocol auty2023 scores as Auty & Mikolajczyk did: without --median_scale, and without "
                "--img_save (its panels are the DepthCLIP crop's)")
    if args.align not in row.alignments:
        p.error(f"--align {args.align} is the zero-shot suite's (ETH3D, SCANNET, DIODE, IBIMS, SUNRGBD) and "
                f"--relative's; NYU and KITTI take none or median")
    if args.sweep and (args.method != "monoclip" or args.img_save):
        p.error("--sweep scores DepthCLIP settings: it takes no --method baseline and no --img_save")
    return args


def check_relative_run(p, args):
    """eval.py --relative: RSA's protocol by default on its datasets (NYU, KITTI, VOID), the suite's own elsewhere."""
    rsa_datasets = protocols.RSA_DATASETS  # NYU, KITTI, VOID
    if args.sweep or args.img_save or args.method != "monoclip":
        p.error("--relative takes no --sweep, --img_save or --method baseline")
    given = args.protocol
    args.protocol = args.protocol or ("rsa" if args.dataset in rsa_datasets else "depthclip")
    if args.protocol == "rsa" and args.dataset not in rsa_datasets:
        p.error(f"--protocol rsa scores RSA's datasets, NYU, KITTI and VOID; {args.dataset} is scored as its source "
                f"does (leave out --protocol)")
    rsa_row = args.protocol == "rsa" or args.protocol in protocols.RSA_ROWS
    if not rsa_row and args.dataset in rsa_datasets:
        p.error(f"--relative on {args.dataset} is scored by --protocol rsa (the whole frame the map covers)")
    scored_as(p, args, given, relative=True)
    if args.dataset not in ("NYU", "KITTI"):
        if not args.data_path:
            p.error(f"--dataset {args.dataset} needs --data_path (docs/data.md; VOID: docs/rsa.md)")
        args.batch_size = 1  # the suite's images differ in size
    return args


def scored_as(p, args, protocol=None, relative=False):
    """args.scored_as: the protocols.py row --dataset, --protocol (or the old --kitti_protocol) name."""
    try:
        args.scored_as = protocols.resolve(args.dataset, protocol or args.protocol, args.kitti_protocol, relative)
    except ValueError as error:
        p.error(str(error))


def check_train_arguments(p, args):
    """train.py's checks across flags, and the optional packages its flags need, before anything loads."""
    if args.dataset == "KITTI" and args.train_split != "train":
        p.error("--train_split is NYU's; KITTI trains on BTS's Eigen list (--trainfile for another)")
    if args.cache and args.augment == "full":
        p.error("--augment full changes every image every step: its features cannot be cached; leave out --cache")
    if args.cache and args.bn == "train":
        p.error("--cache stores features of CLIP as released; with --bn train the image tower changes every step: "
                "leave out --cache or use --bn frozen")
    if args.val_count == 0:
        p.error("--val_count 0: train.py keeps the best epoch's tokens by validation; hold out at least 1 image")
    if args.precision not in ("auto", "fp32"):
        p.error(f"--precision {args.precision}: train.py trains in fp32, as Auty & Mikolajczyk's training does; give "
                f"auto or fp32")
    if args.init and args.init.endswith(".ckpt") and not args.config:
        p.error(f"--init {args.init} is their Lightning checkpoint: give the params YAML it was trained with as "
                f"--config PARAMS.yaml")
    try:
        if args.tensorboard:
            require("tensorboard", "--tensorboard")
    except ValueError as error:
        p.error(str(error))


def predict_options():
    p = parser("predict.py", "Depth for your own photos with DepthCLIP: one image or a folder of them.")
    p.add_argument("input", help="an image file or a folder of images")
    p.add_argument("-o", "--output_dir", dest="output", metavar="DIR", help="output folder, created if needed "
                   "(default: beside each image)")
    for old in ("--output", "--out"):  # a folder here, a file elsewhere: renamed
        p.add_argument(old, dest="output", action=OldSpelling, new="--output_dir")
    add_long_side(p)
    p.add_argument("--npy", action="store_true", help="also write <name>_depth.npy: float32 metres at the image's "
                   "own size, exact")
    p.add_argument("--ply", action="store_true", help="also write <name>_depth.ply, a coloured point cloud "
                   "(pinhole camera, principal point at the image centre; x right, y down, z forward, metres)")
    p.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    p.add_argument("--min_color_span", type=POSITIVE, default=MIN_COLOR_SPAN,
                   help="metres: the coloured picture spreads its colours over at least this depth range, so that a "
                        "flat prediction looks flat")
    p.add_argument("--focal", type=POSITIVE, help="focal length in pixels for --ply (default: NYU's colour camera, "
                   "518.86 at 640 wide, scaled to the image's width)")
    group = add_relative_arguments(p, "the image's .npy map at its size (for a folder of images: a folder of "
                                   "<image name without extension>.npy)", caption_folder=False)
    group.add_argument("--caption", metavar="TEXT", help="with --relative: a description of the scene; RSA turns it "
                       "into the map's scale and shift (printed)")
    add_model_arguments(p)
    return p


def check_predict_relative(p, args):
    """predict.py --relative: RSA's language alignment needs a scale model and a caption."""
    if args.relative and not (args.scale_model and args.caption):
        p.error("--relative puts the map into metres with RSA's language alignment: give --scale_model FILE and "
                "--caption TEXT")
    if not args.relative and (args.scale_model or args.caption):
        p.error("--scale_model and --caption go with --relative npy:FILE (or depthclip)")
    if args.relative and args.relative[0] == RELATIVE_DEPTHCLIP and args.relative_kind != "disparity":
        p.error("--relative depthclip is a depth already; leave out --relative_kind")
    if args.caption is not None and not args.caption.strip():
        p.error("--caption is empty; describe the scene in a sentence")


def bench_options():
    p = parser("bench.py", "Benchmark: eval.py's loop against the authors' way of evaluating, on a full-size RN50 and "
               "NYU-sized images.")
    p.add_argument("--images", type=COUNT, default=16, help="timed images (plus a warm-up of 2)")
    p.add_argument("--repeats", type=COUNT, default=3, help="timed rounds of both loops; the median is reported "
                   "(fewer than 3 are not comparable)")
    flag(p, "--output", "--json", what="also the report, as JSON")
    p.add_argument("--train_images", type=NONNEGATIVE, default=0, help="also time train.py on this many generated NYU-sized "
                   "training images: an epoch through the image tower, the cache's first fill, and an epoch with a "
                   "warm cache (0: skip)")
    add_batch_arguments(add_running_arguments(p))
    return p


def demo_options():
    p = parser("demo.py", "Playground: type depth words, watch the depth change (a Gradio page).")
    p.add_argument("--port", type=bounded(int, at_least=0, at_most=65535), default=7860,
                   help="the page's port (0: any free one)")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    flag(p, "--scale_model", what="the page gets a caption box whose scale and shift put "
         "DepthCLIP's map, inverted, into metres")
    add_long_side(p)
    add_model_arguments(p)
    return p


def train_options():
    d = learned_prompts.TRAINING_DEFAULTS
    p = parser("train.py", "Learn DepthCLIP's prompt tokens with CLIP frozen (Auty & Mikolajczyk 2023's prompt "
                           "learning); writes a --prompts file.")
    data = p.add_argument_group("data")
    flag(data, "--dataset", default="NYU", choices=["NYU", "KITTI"])
    flag(data, "--data_path", what=f"NYU: the folder holding official_splits/train or sync (default "
         f"{shown(DEFAULT_DATA_PATH)}); KITTI: the raw-data root holding <date>/<drive> (default "
         f"{shown(kitti.DEFAULT_DATA_PATH)})")
    data.add_argument("--train_split", default="train", choices=["train", "sync"], help="NYU: train: "
                      "official_splits/train, the 795 labeled images; sync: BTS's 24,231 frames (their published "
                      "runs' data, docs/data.md)")
    data.add_argument("--trainfile", "--trainfile_nyu", help="a list of 'rgb depth' pairs (default: NYU train: "
                      "'auto', every pair found; NYU sync: BTS's list, shipped; KITTI: BTS's Eigen training list, "
                      "shipped)")
    flag(data, "--gt_path")
    flag(data, "--val_count", what="scored with DepthCLIP's protocol; at least 1, the best epoch's tokens are kept")
    layout = p.add_argument_group("the prompt layout (their lang_strat names; --config sets them from their YAML)")
    layout.add_argument("--config", metavar="PARAMS.yaml", help="their params YAML: the layout and the optimizer's "
                        "settings as defaults, flags given here win; a key their code does not know is refused")
    flag(layout, "--init", what="the tokens of a prompts file instead of N(0, 0.02) draws: a .safetensors of this "
         "repository, or their Lightning .ckpt with --config PARAMS.yaml (its BatchNorm statistics come along with --bn "
         "train); its token counts and width must fit the layout")
    layout.add_argument("--template", default=d["template"], help="paper, paper-v1, learned-static-1o1d, "
                        "learned-static-1o2d, learned-static-4o4d")
    layout.add_argument("--depth_tokens", default=d["depth_tokens"], help="learned-static-N (N learned tokens) or "
                        "words: paper, size-7, depth-7, colour-7")
    layout.add_argument("--object_tokens", default=d["object_tokens"], help="paper ('object') or learned-static-1")
    flag(layout, "--bin_set", default=d["bins"], what="their depth_bin_centres presets: "
         "dset-even-N, dset-log-N (over the dataset's range), const80-log-N, or paper (the paper's bins)")
    flag(layout, "--bins", what="fixed bin centres instead of --bin_set")
    flag(layout, "--temperature")
    fit = p.add_argument_group("optimization (their defaults)")
    flag(fit, "--epochs", default=d["epochs"], what="OneCycleLR's schedule spans them all")
    flag(fit, "--batch_size", default=d["batch_size"], what="over all processes under torchrun")
    flag(fit, "--lr", default=d["lr"], what="AdamW's and OneCycleLR's maximum")
    fit.add_argument("--weight_decay", type=AT_LEAST_ZERO, default=d["weight_decay"], help="AdamW's")
    fit.add_argument("--div_factor", type=POSITIVE, default=d["div_factor"], help="OneCycleLR's")
    fit.add_argument("--final_div_factor", type=POSITIVE, default=d["final_div_factor"], help="OneCycleLR's")
    flag(fit, "--grad_clip", default=d["grad_clip"])
    flag(fit, "--seed", what="token initialization (without --init), validation split and data order")
    fit.add_argument("--augment", default="none", choices=["none", "flip", "full"], help="none: the evaluation "
                     "crop (NYU 416x544, KITTI 352x1216); flip: and a random horizontal flip (the cache holds both "
                     "views); full: their pipeline (NYU: registered box, rotation +-2.5 deg, random 416x544 crop; "
                     "KITTI: benchmark crop, +-1 deg, random 352x704; then flip, gamma/brightness/colour), the image "
                     "tower every step")
    fit.add_argument("--bn", default="frozen", choices=["frozen", "train"], help="frozen: CLIP exactly as released "
                     "(features cacheable); train: their setting, BatchNorm in train mode over each step's batch "
                     "(one pass of the image tower), statistics adapted and written into the prompts file")
    run = add_running_arguments(p)
    flag(run, "--clip_model")
    flag(run, "--normalize")
    flag(run, "--cache", what="eval.py's feature cache: with --bn frozen the image tower runs once per "
         "image for the whole training")
    flag(run, "--keep_gb", default=8.0, what="cached features and ground truth (795 NYU images: 1.6 GiB with RN50)")
    flag(run, "--output", required=True, what="the .safetensors prompts file")
    for name in ("--checkpoint_dir", "--resume", "--keep_last", "--tensorboard", "--no_progress"):
        flag(run, name)
    return p


def train_argv(argv):
    """train.py's old spelling --bins PRESET (a preset string, before --bins meant metres as in eval.py) read as
    --bin_set PRESET, with a note."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, item in enumerate(argv):
        name, equals, value = item.partition("=")
        value = value if equals else (argv[i + 1] if i + 1 < len(argv) else "")
        if name == "--bins" and value and not value[:1].isdigit():
            print(f"note: train.py --bins {value} is spelled --bin_set {value} now (--bins takes metres, as in "
                  f"eval.py); it works as before", file=sys.stderr)
            argv[i] = "--bin_set" + (f"={value}" if equals else "")
    return argv
