"""Depth metrics as the DepthCLIP authors computed them (NYU Depth V2 and KITTI protocols).

Every metric is computed per image over its valid pixels and then averaged over images, whatever
the batch size. All work is tensor operations on the tensors' own device.
"""
import torch

NYU_METRICS = ["abs_diff", "a1", "a2", "a3", "abs_rel", "log10", "rmse", "rmse_log", "sq_rel"]
KITTI_METRICS = ["abs_diff", "abs_rel", "sq_rel", "a1", "a2", "a3", "rmse", "rmse_log"]
TABLE_COLUMNS = [("δ1", "a1"), ("δ2", "a2"), ("δ3", "a3"), ("rel", "abs_rel"), ("log10", "log10"),
                 ("rmse", "rmse")]  # the paper's table: each column's title and metric

NYU_MAX_DEPTH = 10.0
NYU_PASTE_BOX = (56, 472, 60, 604)  # rows, cols of the 416x544 evaluated crop inside the 480x640 frame
NYU_EIGEN_CROP = (45, 471, 46, 601)  # rows, cols of the standard Eigen evaluation crop


def _per_image(gt, pred, valid):
    """gt, pred, valid: (B, H, W). Each metric as a (B,) tensor over that image's valid pixels."""
    rows = [_metrics(g[v], p[v]) for g, p, v in zip(gt, pred, valid)]
    return {name: torch.stack([row[name] for row in rows]) for name in rows[0]}


def _metrics(gt, pred):
    """gt, pred: (N,) one image's valid pixels. Each metric a scalar; an image with no valid pixel gets NaN, as
    in the authors' code. Float64 sums, so neither batching nor pixel order can change a digit."""
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


def paste_into_frame(pred, height=480, width=640):
    """(B, 1, 416, 544) -> (B, 1, 480, 640): the prediction placed where its crop came from, zeros around."""
    top, bottom, left, right = NYU_PASTE_BOX
    frame = pred.new_zeros(pred.shape[0], 1, height, width)
    frame[:, :, top:bottom, left:right] = pred
    return frame


def per_image_errors_NYU(gt, pred, crop=True):
    """gt (B, 1, 480, 640) metres, pred (B, 1, 416, 544) metres -> {metric: (B,) tensor}.

    The prediction is pasted back into the full frame (zeros elsewhere); a pixel counts where
    1e-3 < gt < 10, pred > 1e-3 and, with crop, inside the Eigen crop; gt and pred are clamped to [1e-3, 10].
    """
    gt, pred = gt[:, 0].float(), paste_into_frame(pred.float())[:, 0]
    if crop:  # no pixel outside the Eigen crop counts: leave it out of the work too
        top, bottom, left, right = NYU_EIGEN_CROP
        gt, pred = gt[:, top:bottom, left:right], pred[:, top:bottom, left:right]
    valid = (gt < NYU_MAX_DEPTH) & (gt > 1e-3) & (pred > 1e-3)
    metrics = _per_image(gt.clamp(1e-3, NYU_MAX_DEPTH), pred.clamp(1e-3, NYU_MAX_DEPTH), valid)
    return {name: metrics[name] for name in NYU_METRICS}


def compute_errors_NYU(gt, pred, crop=True):
    """The batch mean of per_image_errors_NYU, as {metric: float}."""
    return {name: value.mean().item() for name, value in per_image_errors_NYU(gt, pred, crop).items()}


def per_image_errors_KITTI(gt, pred, crop=True, cap=80.0):
    """gt, pred (B, 1, H, W) metres at the same size -> {metric: (B,) tensor}.

    A pixel counts where 1e-3 < gt < cap and, with crop, inside Garg et al.'s crop; both clamped to [1e-3, cap].
    """
    gt, pred = gt[:, 0].float(), pred[:, 0].float()
    valid = (gt < cap) & (gt > 1e-3)
    if crop:
        h, w = gt.shape[-2:]
        garg = torch.zeros_like(valid)
        garg[:, int(0.40810811 * h):int(0.99189189 * h), int(0.03594771 * w):int(0.96405229 * w)] = True
        valid &= garg
    metrics = _per_image(gt.clamp(1e-3, cap), pred.clamp(1e-3, cap), valid)
    return {name: metrics[name] for name in KITTI_METRICS}


def compute_errors(gt, pred, crop=True, cap=80.0):
    """KITTI: the batch mean of per_image_errors_KITTI, as {metric: float}."""
    return {name: value.mean().item() for name, value in per_image_errors_KITTI(gt, pred, crop, cap).items()}
