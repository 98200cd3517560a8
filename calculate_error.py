"""Depth metrics as each source computes them, the alignments applied before them, and the scoring of a batch as
a protocol's row says (protocols.py: which pixels, crop, clamp and arithmetic). eval.py, train.py's validation, the
zero-shot suite and train_scale.py's validation score through score(). Means over images are plain means of the
per-image rows.

    score(gt, pred, protocol, align)               a batch -> {metric: (B,)}
    errors(gt, pred, names, arithmetic)            one image's valid pixels -> {metric: float}
    aligned(gt, pred, valid, how)                  --align: none, median, lstsq, lstsq_disparity
"""
import dataclasses
import math

import numpy as np
import torch

from datasets import kitti, nyu
from protocols import DEPTHCLIP, METRICS, PROTOCOLS

TABLE_COLUMNS = [("δ1", "a1"), ("δ2", "a2"), ("δ3", "a3"), ("rel", "abs_rel"), ("log10", "log10"),
                 ("rmse", "rmse")]  # the paper's table: each column's title and metric


def errors(gt, pred, names=METRICS, arithmetic=DEPTHCLIP):
    """gt, pred: (N,) metres, one image's valid pixels, clamped as its protocol says -> {metric: float} for names.

    a1..a3: the share of pixels whose max(gt / pred, pred / gt) is below 1.25, 1.25², 1.25³; abs_rel mean(|gt - pred| /
    gt); sq_rel mean((gt - pred)² / gt); rmse; rmse_log; log10 mean(|log10 gt - log10 pred|); silog the standard
    deviation of log pred - log gt, x100 (Marigold's, ZoeDepth's and RSA's); i_rmse in 1/m; abs_diff mean(|gt - pred|)
    in metres. arithmetic: the source's dtypes (see Arithmetic). No pixel: NaN for every metric."""
    if len(gt) == 0:
        return dict.fromkeys(names, math.nan)
    with np.errstate(divide="ignore", invalid="ignore"):  # a prediction of 0 m where a protocol keeps it (ZoeDepth's
        # clamp at 0) makes metrics infinite: eval.py says so once per image, not numpy once per operation
        return metrics_of(np.asarray(gt, dtype=arithmetic.gt), np.asarray(pred, dtype=arithmetic.pred), names,
                          arithmetic)


def metrics_of(gt, pred, names, arithmetic):
    """errors' arithmetic on arrays already in the source's dtypes."""
    def mean(x):
        return np.mean(x, dtype=arithmetic.means)

    def share(below):  # a count over N: exact in float64 whatever the arithmetic
        return np.mean(below, dtype=np.float64)

    ratio_gt, ratio_pred = gt.astype(arithmetic.ratio), pred.astype(arithmetic.ratio)
    ratio = np.maximum(ratio_gt / ratio_pred, ratio_pred / ratio_gt)
    diff = gt - pred
    log_diff = np.log(pred) - np.log(gt)
    everything = {
        "a1": lambda: share(ratio < 1.25),
        "a2": lambda: share(ratio < 1.25 ** 2),
        "a3": lambda: share(ratio < 1.25 ** 3),
        "abs_rel": lambda: mean(np.abs(diff) / gt),
        "log10": lambda: mean(np.abs(np.log10(pred) - np.log10(gt))),
        "rmse": lambda: np.sqrt(mean(diff ** 2)),
        "rmse_log": lambda: np.sqrt(mean(log_diff ** 2)),
        "sq_rel": lambda: mean(diff ** 2 / gt),
        "silog": lambda: np.sqrt(mean(log_diff ** 2) - mean(log_diff) ** 2) * 100,
        "i_rmse": lambda: np.sqrt(mean((1 / pred - 1 / gt) ** 2)),
        "abs_diff": lambda: mean(np.abs(diff)),
    }
    return {name: float(everything[name]()) for name in names}


def median_ratio(gt, pred):
    """median(gt) / median(pred) of one image's valid pixels (N,), numpy's float32 medians as monodepth2's; NaN
    when there is no pixel or the prediction's median is 0 (the scale is undefined: no division-by-zero warning,
    a NaN row)."""
    if gt.size == 0:
        return float("nan")
    denominator = np.median(pred)
    return float(np.median(gt) / denominator) if denominator != 0 else float("nan")


# ---------------------------------------------------------------- alignment (--align), before scoring
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


# ---------------------------------------------------------------- scoring a protocol's row (protocols.py)
def score(gt, pred, protocol, align="none", frame_sizes=None, fits=None):
    """gt (B, 1, H, W) metres as the dataset gives it (KITTI: frames padded with zeros; frame_sizes [(h, w)] their
    true sizes), pred (B, 1, h, w) metres as predicted -> {metric: (B,) float64 tensor} in protocol.metrics (a Protocol
    or its name), with 'scale' (and 'shift' for fits that have one) when aligned or protocol.reports_fit.

    fits: [(scale, shift)] per image when pred is aligned already (RSA's language alignment). An image without a
    valid pixel, or whose alignment is undefined, gets NaN for every metric (eval.py lists it under `unscored`).
    ValueError when a "same"-placed prediction differs in size from its ground truth, or KITTI's sizes are not given."""
    protocol = PROTOCOLS[protocol] if isinstance(protocol, str) else protocol
    if protocol.dataset == "KITTI" and frame_sizes is None:  # the box is placed by each frame's true size
        raise ValueError(f"{protocol.name} scores padded KITTI frames: give frame_sizes, each frame's (rows, cols)")
    rows = []
    for i, (truth, depth) in enumerate(zip(gt[:, 0], pred[:, 0].float())):
        truth, depth = meet(truth, depth, protocol, frame_sizes[i] if frame_sizes else None)
        rows.append(score_image(truth, depth, protocol, align, fits[i] if fits else None))
    return {name: torch.tensor([row[name] for row in rows], dtype=torch.float64) for name in rows[0]}


def meet(truth, depth, protocol, frame_size=None):
    """One image's ground truth (H, W) and prediction (h, w) tensors -> (truth, prediction) numpy arrays on one
    grid: the row's region of the ground truth, the prediction pasted into it or resized to it."""
    if frame_size:
        truth = truth[:frame_size[0], :frame_size[1]]
    box = kitti.benchmark_box(*truth.shape) if protocol.dataset == "KITTI" else None
    if protocol.truth_region == "kitti_box":
        truth = truth[box]
    if protocol.placement == "paste":  # into the frame, zeros around
        if protocol.dataset == "KITTI":
            frame = depth.new_zeros(truth.shape)
            frame[box] = depth
            depth = frame
        else:
            depth = nyu.paste_into_frame(depth)
    elif protocol.placement == "resize":  # bilinear, align_corners=True, as Auty & Mikolajczyk's
        depth = torch.nn.functional.interpolate(depth[None, None], truth.shape, mode="bilinear",
                                                align_corners=True)[0, 0]
    truth = truth.cpu().numpy()
    return (truth if truth.dtype == np.float64 else truth.astype(np.float32)), depth.cpu().numpy()


def valid_pixels(truth, depth, protocol):
    """(H, W) bool: low < gt < high (<= high where max_inclusive), finite, inside the crop; the prediction above
    prediction_above where the row says so."""
    low, high = protocol.valid_range
    valid = (truth > low) & ((truth <= high) if protocol.max_inclusive else (truth < high)) & np.isfinite(truth)
    if protocol.prediction_above is not None:
        valid &= depth > protocol.prediction_above
    h, w = truth.shape
    box = protocol.crop or (protocol.crop_fractions and tuple(
        int(f * size) for f, size in zip(protocol.crop_fractions, (h, h, w, w))))
    if box:
        top, bottom, left, right = box
        region = np.zeros_like(valid)
        region[top:bottom, left:right] = True
        valid &= region
    return valid


def score_image(truth, depth, protocol, align="none", fit=None):
    """One image on one grid -> {metric: float}: valid pixels, alignment (or the given fit), NaN/inf, clamp,
    calculate_error.errors. ValueError when the two differ in size."""
    if np.shape(depth) != np.shape(truth):
        raise ValueError(f"{protocol.name}: the prediction is {tuple(np.shape(depth))} but the protocol scores it "
                         f"against a {tuple(np.shape(truth))} ground truth")
    truth, depth = np.asarray(truth), np.asarray(depth)
    valid = valid_pixels(truth, depth, protocol)
    if fit is None:
        depth, scale, shift = aligned(truth, depth, valid, align, protocol.align_max_resolution)
    else:
        scale, shift = fit
    if not valid.any() or not (math.isfinite(scale) and math.isfinite(shift)):
        metrics = dict.fromkeys(protocol.metrics, math.nan)
    else:
        depth = depth[valid]
        if protocol.non_finite:
            nan, posinf, neginf = protocol.non_finite
            depth = np.nan_to_num(depth, nan=nan, posinf=posinf, neginf=neginf)
        depth = np.clip(depth, *protocol.clamp).astype(depth.dtype)
        floor = protocol.floor if protocol.floor is not None or align == "none" else protocol.aligned_floor
        if floor is not None:
            depth = np.clip(depth, floor, None)
        truth = np.clip(truth[valid], *protocol.clamp).astype(truth.dtype) if protocol.clamp_truth else truth[valid]
        metrics = errors(truth, depth, protocol.metrics, protocol.arithmetic)
    if protocol.reports_fit or fit is not None:
        return {**metrics, "scale": scale, "shift": shift}
    if align != "none":
        return {**metrics, "scale": scale, **({"shift": shift} if align != "median" else {})}
    return metrics


def compute_errors_NYU(gt, pred, crop=True):
    """gt (B, 1, 480, 640), pred (B, 1, 416, 544) metres -> {metric: float}: the batch mean of the DepthCLIP authors'
    metrics (their calculate_error.py's name; the row nyu_depthclip, or, crop=False, without the Eigen crop)."""
    row = PROTOCOLS["nyu_depthclip"] if crop else dataclasses.replace(PROTOCOLS["nyu_depthclip"], crop=None)
    return {name: value.mean().item() for name, value in score(gt, pred, row).items()}
