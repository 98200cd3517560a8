"""Depth metrics: NYU Depth V2 as the DepthCLIP authors computed them, and KITTI's two protocols.

Every metric is computed per image over its valid pixels and then averaged over images, whatever the batch
size. Optionally (median_scale) each prediction is first scaled by median(gt) / median(prediction) over its
valid pixels, as monodepth2's evaluation does, to separate "orders depth correctly" from "knows metres".

Ground truth of NaN or +-inf is never a valid pixel, and an image without a valid pixel (or whose alignment is
undefined: a median prediction of 0) gets a row of NaN, never an exception or a division-by-zero warning;
eval.py's split_unscored leaves such rows out of the means and lists them under `unscored`.
"""
import math

import numpy as np
import torch

from datasets import kitti, nyu
from datasets.images import MIN_DEPTH

METRICS = ["abs_diff", "a1", "a2", "a3", "abs_rel", "log10", "rmse", "rmse_log", "sq_rel"]  # per image, both datasets
NYU_METRICS = METRICS
TABLE_COLUMNS = [("δ1", "a1"), ("δ2", "a2"), ("δ3", "a3"), ("rel", "abs_rel"), ("log10", "log10"),
                 ("rmse", "rmse")]  # the paper's table: each column's title and metric


def score(gt, pred, cap, median_scale=False):
    """gt, pred: (N,) one image's valid pixels -> {metric: scalar} (and 'scale' with median_scale).

    Float64 sums, so neither batching nor pixel order can change a digit; an image with no valid pixel gets
    NaN for every metric, as in the authors' code, and so does one whose median scale is undefined.
    Both are clamped to [MIN_DEPTH = 1e-3, cap] after any scaling.
    """
    scale = median_ratio(gt.cpu().numpy(), pred.cpu().numpy()) if median_scale else None
    if gt.numel() == 0 or (median_scale and math.isnan(scale)):  # a NaN row (a NaN scale alone would leave the
        # thresholds' shares at 0, not NaN)
        metrics = dict.fromkeys(METRICS, torch.tensor(math.nan, dtype=torch.float64, device=gt.device))
    else:
        metrics = mean_errors(gt.clamp(MIN_DEPTH, cap), (pred * scale if median_scale else pred).clamp(MIN_DEPTH, cap))
    if median_scale:
        metrics["scale"] = torch.tensor(scale, dtype=torch.float64)
    return metrics


def mean_errors(gt, pred):
    """gt, pred: (N,) clamped, N > 0 -> {metric: float64 scalar}: each metric's mean over the pixels."""
    def mean(x):
        return x.sum(dtype=torch.float64) / x.numel()

    ratio = torch.maximum(gt / pred, pred / gt)
    diff = gt - pred
    return {
        "abs_diff": mean(diff.abs()),
        "a1": mean(ratio < 1.25),
        "a2": mean(ratio < 1.25 ** 2),
        "a3": mean(ratio < 1.25 ** 3),
        "abs_rel": mean(diff.abs() / gt),
        "log10": mean((torch.log10(gt) - torch.log10(pred)).abs()),
        "rmse": mean(diff ** 2).sqrt(),
        "rmse_log": mean((torch.log(gt) - torch.log(pred)) ** 2).sqrt(),
        "sq_rel": mean(diff ** 2 / gt),
    }


def median_ratio(gt, pred):
    """median(gt) / median(pred) of one image's valid pixels (N,), numpy's float32 medians as monodepth2's; NaN
    when there is no pixel or the prediction's median is 0 (the scale is undefined: no division-by-zero warning,
    a NaN row)."""
    if gt.size == 0:
        return float("nan")
    denominator = np.median(pred)
    return float(np.median(gt) / denominator) if denominator != 0 else float("nan")


def stacked(rows):
    """[{metric: scalar}] per image -> {metric: (B,) tensor}."""
    return {name: torch.stack([row[name] for row in rows]) for name in rows[0]}


def paste_into_frame(pred):
    """(B, 1, 416, 544) -> (B, 1, 480, 640): the prediction placed where its crop came from (nyu.PASTE_BOX), zeros
    around."""
    top, bottom, left, right = nyu.PASTE_BOX
    frame = pred.new_zeros(pred.shape[0], 1, *nyu.FRAME)
    frame[:, :, top:bottom, left:right] = pred
    return frame


def per_image_errors_NYU(gt, pred, crop=True, median_scale=False):
    """gt (B, 1, 480, 640) metres, pred (B, 1, 416, 544) metres -> {metric: (B,) tensor}.

    The prediction is pasted back into the full frame (zeros elsewhere); a pixel counts where
    1e-3 < gt < 10, pred > 1e-3 and, with crop, inside the Eigen crop rows 45:471, cols 46:601 (nyu.EIGEN_CROP, from
    the authors' calculate_error.py); gt and pred are clamped to [1e-3, 10]. A NaN or +-inf gt fails the range
    comparisons (as in the authors' code): that pixel is left out. An image without a valid pixel: NaN in its row.
    """
    gt, pred = gt[:, 0].float(), paste_into_frame(pred.float())[:, 0]
    if crop:  # no pixel outside the Eigen crop counts: leave it out of the work too
        top, bottom, left, right = nyu.EIGEN_CROP
        gt, pred = gt[:, top:bottom, left:right], pred[:, top:bottom, left:right]
    valid = (gt < nyu.MAX_DEPTH) & (gt > MIN_DEPTH) & (pred > MIN_DEPTH)
    return stacked([score(g[v], p[v], nyu.MAX_DEPTH, median_scale) for g, p, v in zip(gt, pred, valid)])


def compute_errors_NYU(gt, pred, crop=True):
    """The batch mean of per_image_errors_NYU, as {metric: float}."""
    return {name: value.mean().item() for name, value in per_image_errors_NYU(gt, pred, crop).items()}


def kitti_errors(gt, pred, crop="garg", cap=kitti.CAP, median_scale=False):
    """gt, pred: (H, W) metres, one image, one size -> {metric: scalar}: a pixel counts where 1e-3 < gt < cap
    (cap finite, so a NaN or +-inf gt fails it, as in BTS's comparisons) and inside the named crop (kitti.CROPS'
    fractions of this frame). No valid pixel: NaN for every metric."""
    valid = (gt > MIN_DEPTH) & (gt < cap)
    if kitti.CROPS[crop]:
        top, bottom, left, right = kitti.CROPS[crop]
        h, w = gt.shape
        box = torch.zeros_like(valid)
        box[int(top * h):int(bottom * h), int(left * w):int(right * w)] = True
        valid &= box
    return score(gt[valid], pred[valid], cap, median_scale)


def per_image_errors_KITTI(gt, pred, frame_sizes, protocol="bts", crop="garg", cap=kitti.CAP, median_scale=False):
    """gt (B, 1, H', W') full frames padded with zeros, pred (B, 1, 352, 1216) metres over the benchmark crop,
    frame_sizes [(H, W)] each frame's true size -> {metric: (B,) tensor}.

    protocol "bts": the prediction pasted into its full frame (zeros elsewhere) and scored there (BTS, AdaBins
    and most follow-ups). protocol "authors": the ground truth cropped to the benchmark box and scored there, the
    crop's fractions taken of that box (the DepthCLIP authors' inherited evaluation).
    """
    rows = []
    for truth, depth, (h, w) in zip(gt[:, 0].float(), pred[:, 0].float(), frame_sizes):
        box = kitti.benchmark_box(h, w)
        if protocol == "bts":
            frame = depth.new_zeros(h, w)
            frame[box] = depth
            rows.append(kitti_errors(truth[:h, :w], frame, crop, cap, median_scale))
        else:
            rows.append(kitti_errors(truth[box], depth, crop, cap, median_scale))
    return stacked(rows)


# ---------------------------------------------------------------- Auty & Mikolajczyk's protocol (--protocol auty2023)
AUTY_DEPTH_RANGE = {"NYU": (MIN_DEPTH, nyu.MAX_DEPTH), "KITTI": (MIN_DEPTH, kitti.CAP)}  # their params' min/max depth


def per_image_errors_auty(gt, pred, dataset="NYU", frame_sizes=None):
    """gt (B, 1, H, W) metres, pred (B, 1, h, w) metres (each view clamped to the depth range before the flip
    average, as their validation_step) -> {metric: (B,) tensor}, as their metrics/MetricsPreprocess.py scores:
    pred upsampled bilinearly (align_corners=True) to the ground truth, NaN -> min and +-inf -> max depth, a pixel
    counting where min < gt <= max (their cap is inclusive; a NaN or +-inf gt fails it) and inside NYU's crop rows
    45:471, cols 41:601, or, on KITTI, Garg's fractions of the 352x1216 benchmark box that their loader crops the
    ground truth to. Their rmse_log running average has no square root; here rmse_log is the root, as everywhere
    else. No valid pixel: NaN for every metric."""
    low, high = AUTY_DEPTH_RANGE[dataset]
    rows = []
    for i, (truth, depth) in enumerate(zip(gt[:, 0].float(), pred.float())):
        if dataset == "KITTI":
            truth = truth[kitti.benchmark_box(*frame_sizes[i])]
        depth = torch.nn.functional.interpolate(depth[None], truth.shape, mode="bilinear", align_corners=True)[0, 0]
        depth = depth.nan_to_num(nan=low, posinf=high, neginf=high)
        valid = (truth > low) & (truth <= high)
        region = torch.zeros_like(valid)
        h, w = truth.shape
        if dataset == "NYU":
            top, bottom, left, right = nyu.BTS_EIGEN_CROP
            region[top:bottom, left:right] = True
        else:
            top, bottom, left, right = kitti.CROPS["garg"]
            region[int(top * h):int(bottom * h), int(left * w):int(right * w)] = True
        valid &= region
        rows.append(score(truth[valid], depth[valid], high))
    return stacked(rows)


# ---------------------------------------------------------------- the zero-shot suite (datasets/zeroshot.py)
ALIGNMENTS = ("none", "median", "lstsq", "lstsq_disparity")  # --align
ZEROSHOT_METRICS = ["abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "a1", "a2", "a3", "i_rmse", "silog"]
MARIGOLD_FLOOR = 1e-6  # metres: the last clip of every prediction in Marigold's eval.py (keeps logs finite)
DISPARITY_FLOOR = 1e-3  # Marigold's clip of an aligned disparity before inverting it ("avoid 0 disparity")


def least_squares(gt, pred, valid, max_resolution=None):
    """(scale, shift) minimizing |scale * pred + shift - gt| over valid pixels: Marigold's align_depth_least_square
    (src/util/alignment.py), numpy's lstsq in the arrays' float32. max_resolution: as theirs, a nearest-neighbour
    downsampling by min(max_resolution / (H, W)) before the fit; their call hands torch a (1, H, W) tensor, which
    torch reads as one row of H channels, so only the width shrinks: kept so, as ETH3D's published numbers were
    aligned so.

    (nan, nan) when no valid pixel is left (after any downsampling): the fit is undefined (numpy's lstsq would
    return (0, 0) without a word). One pixel, or a constant prediction, is numpy's minimum-norm fit: finite, the
    fitted depth the truth's mean (Marigold's call gives the same)."""
    if max_resolution is not None:
        factor = np.min(max_resolution / np.array(gt.shape[-2:]))
        if factor < 1:
            shrink = lambda a: torch.nn.functional.interpolate(  # noqa: E731
                torch.as_tensor(a)[None], scale_factor=float(factor), mode="nearest")
            gt, pred, valid = shrink(gt).numpy(), shrink(pred).numpy(), shrink(valid.astype(np.float32)).bool().numpy()
    if not valid.any():
        return float("nan"), float("nan")
    design = np.concatenate([pred[valid].reshape(-1, 1), np.ones_like(pred[valid].reshape(-1, 1))], axis=-1)
    scale, shift = np.linalg.lstsq(design, gt[valid].reshape(-1, 1), rcond=None)[0]
    return float(scale[0]), float(shift[0])


def aligned(gt, pred, valid, how, max_resolution=None):
    """gt, pred: (H, W) float32 metres; valid: (H, W) bool -> (prediction after --align, scale, shift).

    none; median: pred * median(gt) / median(pred) (monodepth2's, today's --median_scale); lstsq: scale and shift
    in depth (Marigold's least_square); lstsq_disparity: in inverse depth (Marigold's least_square_disparity, the
    MiDaS / Depth Anything convention), on pixels where gt and pred are positive, the aligned disparity clipped at
    1e-3 before inverting. Marigold feeds a relative model's disparity output to that fit; DepthCLIP predicts
    depth, so its inverse goes in.

    A pixel whose gt is NaN or +-inf is left out of the fit (our extension: Marigold fits whatever its mask lets
    through; the readers already leave such pixels out, datasets.zeroshot.read_ground_truth). Where the fit is
    undefined (no valid pixel; median: a median prediction of 0) -> (pred all NaN, nan, nan), which scores as a
    NaN row."""
    if how == "none":
        return pred, 1.0, 0.0
    valid = valid & np.isfinite(gt)
    if how == "median":
        scale, shift = median_ratio(gt[valid], pred[valid]), 0.0
    elif how == "lstsq":
        scale, shift = least_squares(gt, pred, valid, max_resolution)
    else:
        gt_disparity, pred_disparity = inverse(gt), inverse(pred)
        scale, shift = least_squares(gt_disparity, pred_disparity, valid & (gt > 0) & (pred > 0), max_resolution)
    if not (math.isfinite(scale) and math.isfinite(shift)):
        return np.full_like(pred, np.nan), float("nan"), float("nan")
    if how != "lstsq_disparity":
        return pred * np.float32(scale) + np.float32(shift), scale, shift  # median: shift 0, an exact no-op
    disparity = np.clip(pred_disparity * np.float32(scale) + np.float32(shift), DISPARITY_FLOOR, None)
    return inverse(disparity), scale, shift


def inverse(depth):
    """1 / depth where depth > 0, else 0: Marigold's depth2disparity (and disparity2depth)."""
    out = np.zeros_like(depth)
    positive = depth > 0
    out[positive] = 1.0 / depth[positive]
    return out


def zeroshot_errors(gt, pred, valid, clip):
    """gt, pred: (H, W) metres (pred aligned), valid: (H, W) bool, clip: the dataset's (min, max) -> {metric: float}:
    Marigold's metrics (src/util/metric.py; ZoeDepth's compute_errors are the same per image) over the valid pixels
    of one image, after the prediction is clipped to the dataset's range and then to at least 1e-6, as their
    eval.py does. silog is x100 as theirs; i_rmse is in 1/m. A pixel whose gt is NaN or +-inf is left out (our
    extension, as in aligned); no valid pixel: NaN for every metric (Marigold's sums over 0 pixels are NaN too)."""
    valid = valid & np.isfinite(gt)
    if not valid.any():
        return dict.fromkeys(ZEROSHOT_METRICS, float("nan"))
    pred = np.clip(np.clip(pred, *clip), MARIGOLD_FLOOR, None)
    g, p = torch.from_numpy(gt[valid]).double(), torch.from_numpy(np.ascontiguousarray(pred[valid])).double()
    ratio = torch.maximum(p.float() / g.float(), g.float() / p.float())  # float32 as theirs: a pixel at a
    # threshold falls on the same side
    log_diff = torch.log(p) - torch.log(g)
    return {
        "abs_rel": ((p - g).abs() / g).mean().item(),
        "sq_rel": ((p - g) ** 2 / g).mean().item(),
        "rmse": ((p - g) ** 2).mean().sqrt().item(),
        "rmse_log": (log_diff ** 2).mean().sqrt().item(),
        "log10": (torch.log10(p) - torch.log10(g)).abs().mean().item(),
        "a1": (ratio < 1.25).double().mean().item(),
        "a2": (ratio < 1.25 ** 2).double().mean().item(),
        "a3": (ratio < 1.25 ** 3).double().mean().item(),
        "i_rmse": ((1 / p - 1 / g) ** 2).mean().sqrt().item(),
        "silog": (((log_diff ** 2).mean() - log_diff.mean() ** 2).sqrt() * 100).item(),
    }
