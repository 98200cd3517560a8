"""Evaluation protocols: one named row per way a source scores a dataset (calculate_error.score follows a row).

A row says where the prediction meets the ground truth (the frame), which pixels count (the valid range, which end
is inclusive, the crop), what is done to the prediction (each view's clamp before the flip average, the clamp before
scoring, what NaN and +-inf become), which alignments it allows, which metrics it reports and in which arithmetic
(calculate_error.errors). eval.py --protocol NAME picks a row; train.py's validation and the zero-shot suite score
through the same rows.

    PROTOCOLS[name]                           the table (print it: python -m protocols)
    resolve(dataset, protocol, ...)           --dataset and --protocol (old spellings included) -> a row
    calculate_error.score(gt, pred, row)      a batch scored as the row says -> {metric: (B,)}

Adding a dataset: its reader in datasets/ (layout, decoding, masks), one row here and its name in DEFAULTS (which
makes it an eval.py --dataset), and a branch in eval.open_dataset (docs/evaluation.md shows it).
"""
import dataclasses
import math
from typing import NamedTuple

import numpy as np

from datasets import kitti, nyu, void, zeroshot
from datasets.images import MIN_DEPTH

ALIGNMENTS = ("none", "median", "lstsq", "lstsq_disparity")  # --align (calculate_error.aligned)
METRICS = ("a1", "a2", "a3", "abs_rel", "log10", "rmse", "rmse_log", "sq_rel", "silog", "i_rmse", "abs_diff")  # every
# metric (calculate_error.errors), in one order: the paper's table first


def ordered(*names):
    """A protocol's metrics in METRICS' order."""
    return tuple(name for name in METRICS if name in names)


class Arithmetic(NamedTuple):
    """The numpy dtypes a source computes its metrics in: the ground truth's and the prediction's values (the
    elementwise work follows numpy's promotion from them), the ratio behind the delta thresholds, and the means."""
    name: str
    gt: type
    pred: type
    ratio: type
    means: type


# The DepthCLIP authors' and BTS's code: float32 tensors; here the means are float64, so neither batching nor pixel
# order moves a digit (their float32 sums differ from these by ~1e-7).
DEPTHCLIP = Arithmetic("float32 values, float64 means", np.float32, np.float32, np.float32, np.float64)
# Marigold (src/util/metric.py): float32 tensors; here float64 but for the thresholds' ratio, float32 as theirs, so a
# pixel at a threshold falls on the same side.
MARIGOLD = Arithmetic("float64 values, float32 ratio", np.float64, np.float64, np.float32, np.float64)
# ZoeDepth (zoedepth/utils/misc.py compute_errors): numpy, the ground truth float64 as its loaders decode it (uint16 /
# 1000.0), the prediction float32; gt / pred and every difference promote to float64, np.log(pred) stays float32.
ZOEDEPTH = Arithmetic("float64 ground truth, float32 prediction (numpy's promotion)", np.float64, np.float32,
                      np.float64, np.float64)
# RSA (Adonis-galaxy/RSA utils.compute_errors): numpy float32 throughout, so the numbers are theirs to the last bit.
RSA = Arithmetic("float32 throughout", np.float32, np.float32, np.float32, np.float32)
NYU_METRICS = ordered("abs_diff", "a1", "a2", "a3", "abs_rel", "log10", "rmse", "rmse_log", "sq_rel")  # the authors'
SUITE_METRICS = ordered("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "a1", "a2", "a3", "i_rmse", "silog")
RSA_METRICS = ordered("silog", "abs_rel", "log10", "rmse", "sq_rel", "rmse_log", "a1", "a2", "a3")  # their eval
RSA_MIN_DEPTH = 0.2  # metres, on all three of RSA's datasets: their argparse default is 1e-3, but main() calls
# change_to_void (min_depth_eval = 0.2) before any evaluation and nothing sets it back (Adonis-galaxy/RSA train_3d.py)
MARIGOLD_FLOOR = 1e-6  # metres: the last clip of every prediction in Marigold's eval.py (keeps logs finite)
LEARNED_RANGE = {"NYU": (MIN_DEPTH, nyu.MAX_DEPTH), "KITTI": (MIN_DEPTH, kitti.CAP)}  # Auty & Mikolajczyk's params'
# min/max depth: their tokens' training range, and each view's clamp (learned_prompts records it in its files)


@dataclasses.dataclass(frozen=True)
class Protocol:
    """One source's scoring of one dataset (see the module's docstring)."""
    name: str  # eval.py --protocol NAME
    dataset: str  # the --dataset it scores
    source: str  # whose evaluation this is: paper, repository, file
    model_input: str  # what the model sees (words, for docs and --help)
    ground_truth: str  # how the ground truth is decoded and capped (words; the reader in datasets/ does it)
    valid_range: tuple  # (low, high) metres: a pixel counts where low < gt < high (or <= high, max_inclusive)
    metrics: tuple  # reported, in METRICS' order
    arithmetic: Arithmetic  # the dtypes the source computes its metrics in
    truth_region: str = "frame"  # "frame": the whole ground truth; "kitti_box": cropped to KITTI's 352x1216 box
    placement: str = "same"  # the prediction: "same" size as the region, "paste"d into it (zeros around), "resize"d
    max_inclusive: bool = False
    prediction_above: float = None  # a pixel also needs a prediction above this (the DepthCLIP authors' NYU mask)
    crop: tuple = None  # (top, bottom, left, right) pixel rows/cols scored, or None
    crop_fractions: tuple = None  # the same as fractions of the region (Garg's, Eigen's on KITTI), or None
    view_clamp: tuple = None  # (low, high) metres each view is clamped to before the flip average, or None
    non_finite: tuple = None  # (NaN, +inf, -inf) in the prediction become these metres before the clamp, or None
    clamp: tuple = None  # (low, high) metres the (aligned) prediction is clamped to before scoring
    clamp_truth: bool = False  # the ground truth too (the DepthCLIP authors' clip of both)
    floor: float = None  # then a last clip from below (Marigold's 1e-6, keeping logs finite), or None
    aligned_floor: float = None  # that clip only after an --align fit (ours where the source does not align)
    alignments: tuple = ("none", "median")  # --align values it takes
    reports_fit: bool = False  # every row carries the alignment's scale and shift (else only when aligned)
    align_max_resolution: int = None  # Marigold's --alignment_max_res (ETH3D: 1024)


def depthclip_kitti(name, placement, truth_region, source):
    return Protocol(name, "KITTI", source, "the 352x1216 benchmark crop (its mirror image averaged)",
                    "16-bit PNG / 256 m, 0 = none", (MIN_DEPTH, kitti.CAP), NYU_METRICS, DEPTHCLIP,
                    truth_region=truth_region, placement=placement, crop_fractions=kitti.CROPS["garg"],
                    clamp=(MIN_DEPTH, kitti.CAP), clamp_truth=True)


def their_clamp_order(low, high):
    """non_finite for BTS's lineage of compute_metrics (RSA's, ZoeDepth's): below min -> min, above max -> max, then
    inf -> max and NaN -> min, so -inf ends at min."""
    return low, high, low


def suite(name, reader, arithmetic, floor=None, non_finite=None):
    """A zero-shot suite row: its reader (datasets/zeroshot.py, datasets/void.py) masks the ground truth, outside
    whose valid range and box it gives 0, and says the prediction's clip. Aligned predictions take Marigold's 1e-6
    floor (its alignment's last step) where the source has no floor: ZoeDepth scores metric depth unaligned, and
    clamps at 0."""
    low_high = reader.valid_range or (0.0, math.inf)
    return Protocol(name, reader.name, reader.source, "the image resized to --long_side (544), its depth upsampled "
                    "bilinearly to the ground truth's size", reader.layout, low_high, SUITE_METRICS, arithmetic,
                    crop=reader.box, clamp=reader.clip, non_finite=non_finite, floor=floor,
                    aligned_floor=MARIGOLD_FLOOR, alignments=ALIGNMENTS, reports_fit=True,
                    align_max_resolution=reader.align_max_resolution)


def rsa_row(dataset, high, truth_region="frame", crop_fractions=None):
    return Protocol(f"{dataset.lower()}_rsa", dataset, "Zeng et al. 2024's RSA (Adonis-galaxy/RSA train_3d.py eval, "
                    "eval_void; utils.compute_errors)", "a relative depth (--relative) from elsewhere",
                    "as their loader decodes it", (RSA_MIN_DEPTH, high), RSA_METRICS, RSA, truth_region=truth_region,
                    crop_fractions=crop_fractions, non_finite=their_clamp_order(RSA_MIN_DEPTH, high),
                    clamp=(RSA_MIN_DEPTH, high), alignments=(*ALIGNMENTS, "language"), reports_fit=True)


ROWS = [
    Protocol("nyu_depthclip", "NYU", "the DepthCLIP authors' (Zhang et al. 2022, calculate_error.py)",
             "the 416x544 crop at rows 56:472, cols 60:604 (its mirror image averaged)",
             "16-bit PNG / 1000 m, clipped to 10", (MIN_DEPTH, nyu.MAX_DEPTH), NYU_METRICS, DEPTHCLIP,
             placement="paste", prediction_above=MIN_DEPTH, crop=nyu.EIGEN_CROP, clamp=(MIN_DEPTH, nyu.MAX_DEPTH),
             clamp_truth=True),
    Protocol("nyu_auty2023", "NYU", "Auty & Mikolajczyk 2023's (PromptLearningCLIP-MDE metrics/MetricsPreprocess.py)",
             "the whole 480x640 frame (its mirror image averaged)", "16-bit PNG / 1000 m",
             LEARNED_RANGE["NYU"], NYU_METRICS, DEPTHCLIP, placement="resize", max_inclusive=True,
             crop=nyu.BTS_EIGEN_CROP, view_clamp=LEARNED_RANGE["NYU"],
             non_finite=(MIN_DEPTH, nyu.MAX_DEPTH, nyu.MAX_DEPTH), clamp=LEARNED_RANGE["NYU"], clamp_truth=True,
             alignments=("none",)),
    depthclip_kitti("kitti_bts", "paste", "frame", "BTS's (eval_with_pngs.py), as AdaBins and most follow-ups"),
    depthclip_kitti("kitti_depthclip", "same", "kitti_box", "the DepthCLIP authors' (inherited from their KITTI code)"),
    Protocol("kitti_auty2023", "KITTI", "Auty & Mikolajczyk 2023's (PromptLearningCLIP-MDE)",
             "the 352x1216 benchmark crop (its mirror image averaged)", "16-bit PNG / 256 m, 0 = none",
             LEARNED_RANGE["KITTI"], NYU_METRICS, DEPTHCLIP, truth_region="kitti_box", placement="resize",
             max_inclusive=True, crop_fractions=kitti.CROPS["garg"], view_clamp=LEARNED_RANGE["KITTI"],
             non_finite=(MIN_DEPTH, kitti.CAP, kitti.CAP), clamp=LEARNED_RANGE["KITTI"], clamp_truth=True,
             alignments=("none",)),
    *[suite(f"{name.lower()}_marigold", zeroshot.PROTOCOLS[name], MARIGOLD, floor=MARIGOLD_FLOOR)
      for name in ("ETH3D", "SCANNET", "DIODE")],
    *[suite(f"{name.lower()}_zoedepth", zeroshot.PROTOCOLS[name], ZOEDEPTH,
            non_finite=their_clamp_order(*zeroshot.PROTOCOLS[name].clip)) for name in ("IBIMS", "SUNRGBD")],
    suite("void_range", void.PROTOCOL, MARIGOLD, floor=MARIGOLD_FLOOR),
    rsa_row("NYU", nyu.MAX_DEPTH),
    rsa_row("KITTI", kitti.CAP, "kitti_box", kitti.CROPS["garg"]),
    rsa_row("VOID", void.VALID_RANGE[1]),
]
PROTOCOLS = {row.name: row for row in ROWS}
RSA_ROWS = {row.name: row for row in ROWS if row.name.endswith("_rsa")}  # --relative maps on NYU, KITTI, VOID
RSA_DATASETS = [row.dataset for row in RSA_ROWS.values()]
DEFAULTS = {"NYU": "nyu_depthclip", "KITTI": "kitti_bts", "VOID": "void_range", "ETH3D": "eth3d_marigold",
            "SCANNET": "scannet_marigold", "DIODE": "diode_marigold", "IBIMS": "ibims_zoedepth",
            "SUNRGBD": "sunrgbd_zoedepth"}  # eval.py --dataset: each dataset and the row it is scored by unless
# --protocol says another
FAMILIES = {"depthclip": "the dataset's default", "auty2023": "Auty & Mikolajczyk's", "rsa": "RSA's"}  # --protocol's
# old values: a source, the row chosen by --dataset (and, on KITTI, --kitti_protocol)
KITTI_PROTOCOLS = {"bts": "kitti_bts", "authors": "kitti_depthclip"}  # --kitti_protocol, an old spelling


def resolve(dataset, protocol=None, kitti_protocol=None, relative=False):
    """--dataset and --protocol -> the row's name. protocol: a row's name or an old family name (depthclip: the
    dataset's default row; auty2023; rsa); None: the dataset's default (RSA's with --relative on NYU, KITTI and
    VOID). kitti_protocol: --kitti_protocol bts|authors (KITTI's depthclip rows). ValueError, one line, when the
    row scores another dataset or the family has no row for it."""
    if protocol in PROTOCOLS:
        row = PROTOCOLS[protocol]
        if row.dataset != dataset:
            raise ValueError(f"--protocol {protocol} scores {row.dataset}, not {dataset}; {dataset}'s rows: "
                             f"{', '.join(n for n, r in PROTOCOLS.items() if r.dataset == dataset)}")
        return protocol
    family = protocol or ("rsa" if relative and f"{dataset.lower()}_rsa" in PROTOCOLS else "depthclip")
    if family == "depthclip":
        return KITTI_PROTOCOLS[kitti_protocol or "bts"] if dataset == "KITTI" else DEFAULTS[dataset]
    name = f"{dataset.lower()}_{family}"
    if name not in PROTOCOLS:
        raise ValueError(f"--protocol {family} has no row for {dataset}; {dataset}'s rows: "
                         f"{', '.join(n for n, r in PROTOCOLS.items() if r.dataset == dataset)}")
    return name


def with_flags(row, cap=None, eval_crop=None):
    """KITTI's DepthCLIP rows (kitti_bts, kitti_depthclip) under --cap and --eval_crop (the table holds their
    defaults, 80 m and Garg's); every other row, Auty & Mikolajczyk's and RSA's KITTI rows too, as it is."""
    if row.name not in KITTI_PROTOCOLS.values():
        return row
    cap = row.valid_range[1] if cap is None else cap
    crop = kitti.CROPS[eval_crop] if eval_crop else row.crop_fractions
    return dataclasses.replace(row, valid_range=(row.valid_range[0], cap), clamp=(row.clamp[0], cap),
                               crop_fractions=crop)


def table():
    """The table as text: one row per protocol, its facts."""
    lines = []
    for row in ROWS:
        low, high = row.valid_range
        crop = row.crop or (row.crop_fractions and "fractions " + ", ".join(map(str, row.crop_fractions)))
        lines += [f"{row.name}  ({row.dataset}; {row.source})",
                  f"    input {row.model_input}; ground truth {row.ground_truth}",
                  f"    valid {low} < gt {'<=' if row.max_inclusive else '<'} {high}"
                  + (f", prediction > {row.prediction_above}" if row.prediction_above is not None else "")
                  + f"; crop {crop or 'none'}; view clamp {row.view_clamp}; clamp {row.clamp}"
                  + (" (and the ground truth)" if row.clamp_truth else "")
                  + f"; align {', '.join(row.alignments)}",
                  f"    metrics {', '.join(row.metrics)}; arithmetic {row.arithmetic.name}"]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
