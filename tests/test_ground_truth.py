"""Ground truth that is not all there (issue #30, class 2): a depth of NaN or +-inf is never a scored pixel, on any
reader or scorer, and an image without a scored pixel is a NaN row that eval.py leaves out of the means and lists
under `unscored`, never a stop. Each reader and scorer against written-out numpy; the alignments' degenerate fits
against their closed forms; an end-to-end DIODE run with one NaN-holed and one all-masked image."""
import contextlib
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import eval as evaluation
from calculate_error import aligned, least_squares, score, score_image
from datasets import zeroshot
from protocols import NYU_METRICS as METRICS, PROTOCOLS, SUITE_METRICS, with_flags
from synthetic.zeroshot_like import write_dataset
from test_zeroshot import expected_ground_truth, small_eth3d, zeroshot_errors  # noqa: F401 (a fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NON_FINITE = np.array([np.nan, np.inf, -np.inf], np.float32)


def holes(shape, everywhere=False):
    """(H, W) float32: NaN, +inf, -inf in turn on a sparse pattern over the bottom quarter (every pixel with
    everywhere), 0 elsewhere; and the (H, W) bool pattern."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    bad = np.ones(shape, bool) if everywhere else ((rows + cols) % 7 == 0) & (rows >= shape[0] * 3 // 4)
    values = np.where(bad, NON_FINITE[(rows + cols) % 3], 0).astype(np.float32)
    return values, bad


def punched(depth, bad, values):
    return np.where(bad, values, depth).astype(np.float32)


@contextlib.contextmanager
def no_warnings():
    """Any warning inside (a division by zero, a mean of nothing) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ---------------------------------------------------------------- the readers
@pytest.mark.parametrize("everywhere", [False, True])
@pytest.mark.parametrize("name", list(zeroshot.PROTOCOLS))
def test_non_finite_depth_is_never_scored_and_nothing_scored_is_no_error(name, everywhere, tmp_path, small_eth3d,
                                                                         monkeypatch):
    """ETH3D's raw float32 and DIODE's .npy can hold NaN and +-inf: written into the files; the PNG readers cannot
    (images.depth_values reads integers), so their decoded values are punched in the same way, to hold every
    reader to the one rule."""
    listing = write_dataset(name, str(tmp_path), count=1)
    data = zeroshot.ZeroShot(name, str(tmp_path), listing)
    entry = data.entries[0]
    expected_gt, expected_scored = expected_ground_truth(name, str(tmp_path), entry)
    values, bad = holes(expected_gt.shape, everywhere)
    path = os.path.join(str(tmp_path), entry[1])
    if name == "ETH3D":
        punched(np.fromfile(path, np.float32).reshape(expected_gt.shape), bad, values).tofile(path)
    elif name == "DIODE":
        np.save(path, punched(np.load(path)[..., 0], bad, values)[..., None])
    else:
        decode = zeroshot.depth_values
        monkeypatch.setattr(zeroshot, "depth_values", lambda *a: punched(decode(*a), bad, values))
    gt, scored = zeroshot.read_ground_truth(name, str(tmp_path), entry)
    np.testing.assert_array_equal(scored, expected_scored & ~bad)
    assert scored.any() != everywhere  # nothing left to score is returned, not raised
    item = data[0][1][0].numpy()
    assert np.isfinite(item).all()
    np.testing.assert_allclose(item, np.where(expected_scored & ~bad, expected_gt, 0), rtol=1e-6)


def test_an_all_false_diode_mask_is_returned_not_raised(tmp_path):
    listing = write_dataset("DIODE", str(tmp_path), count=1)
    entry = zeroshot.ZeroShot("DIODE", str(tmp_path), listing).entries[0]
    np.save(os.path.join(str(tmp_path), entry[2]), np.zeros((48, 64), np.float32))
    gt, scored = zeroshot.read_ground_truth("DIODE", str(tmp_path), entry)
    assert scored.shape == (48, 64) and not scored.any()


# ---------------------------------------------------------------- the scorers
def written_out(g, p, cap, median_scale=False):
    """NYU's and KITTI's metrics of one image's valid pixels (N,) in float64 numpy, clamped to [1e-3, cap]."""
    scale = float(np.median(g.astype(np.float32)) / np.median(p.astype(np.float32))) if median_scale else 1.0
    g, p = np.clip(g.astype(np.float64), 1e-3, cap), np.clip(p.astype(np.float64) * scale, 1e-3, cap)
    ratio = np.maximum(g / p, p / g)
    return {"abs_diff": np.mean(np.abs(g - p)), "a1": np.mean(ratio < 1.25), "a2": np.mean(ratio < 1.25 ** 2),
            "a3": np.mean(ratio < 1.25 ** 3), "abs_rel": np.mean(np.abs(g - p) / g),
            "log10": np.mean(np.abs(np.log10(g) - np.log10(p))), "rmse": np.sqrt(np.mean((g - p) ** 2)),
            "rmse_log": np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)), "sq_rel": np.mean((g - p) ** 2 / g),
            "scale": scale}


def assert_rows(errors, expected, names=METRICS):
    for i, row in enumerate(expected):
        for name in names:
            if row is None:
                assert np.isnan(errors[name][i].item()), (i, name)
            else:
                assert errors[name][i].item() == pytest.approx(row[name], rel=1e-5, abs=1e-7), (i, name)


def truth_and_prediction(frame, input_size, seed=0):
    """(gt (3, H, W) with holes in the first, every pixel non-finite in the second, the third all 0; the first's
    pattern), pred (3, 1, *input_size)."""
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0.5, 9.5, (3, *frame)).astype(np.float32)
    values, bad = holes(frame)
    gt[0] = punched(gt[0], bad, values)
    gt[1] = holes(frame, everywhere=True)[0]
    gt[2] = 0
    pred = rng.uniform(0.5, 9.5, (3, 1, *input_size)).astype(np.float32)
    return gt, bad, pred


@pytest.mark.parametrize("median_scale", [False, True])
def test_nyu_scorer_leaves_non_finite_truth_out(median_scale):
    gt, bad, pred = truth_and_prediction((480, 640), (416, 544))
    with no_warnings():
        errors = score(torch.from_numpy(gt)[:, None], torch.from_numpy(pred), "nyu_depthclip",
                       "median" if median_scale else "none")
    frame = np.zeros((480, 640), np.float32)
    frame[56:472, 60:604] = pred[0, 0]
    crop = np.zeros((480, 640), bool)
    crop[45:471, 46:601] = True
    valid = np.isfinite(gt[0]) & (gt[0] > 1e-3) & (gt[0] < 10) & (frame > 1e-3) & crop
    assert (bad & crop).any() and valid.any()
    names = [*METRICS, *(["scale"] if median_scale else [])]
    assert_rows(errors, [written_out(gt[0][valid], frame[valid], 10.0, median_scale), None, None], names)


def test_auty_scorer_leaves_non_finite_truth_out():
    gt, bad, pred = truth_and_prediction((480, 640), (480, 640))
    with no_warnings():
        errors = score(torch.from_numpy(gt)[:, None], torch.from_numpy(pred), "nyu_auty2023")
    crop = np.zeros((480, 640), bool)
    crop[45:471, 41:601] = True
    valid = np.isfinite(gt[0]) & (gt[0] > 1e-3) & (gt[0] <= 10) & crop
    assert_rows(errors, [written_out(gt[0][valid], pred[0, 0][valid], 10.0), None, None])


@pytest.mark.parametrize("median_scale", [False, True])
def test_kitti_scorers_leave_non_finite_truth_out(median_scale):
    gt, bad, pred = truth_and_prediction((375, 1242), (352, 1216))
    truth = torch.from_numpy(gt)[:, None]
    with no_warnings():
        align = "median" if median_scale else "none"
        bts = score(truth, torch.from_numpy(pred), "kitti_bts", align, [(375, 1242)] * 3)
        authors = score(truth, torch.from_numpy(pred), "kitti_depthclip", align, [(375, 1242)] * 3)
        auty = score(truth, torch.from_numpy(pred), "kitti_auty2023", frame_sizes=[(375, 1242)] * 3)
    names = [*METRICS, *(["scale"] if median_scale else [])]

    def garg(g):
        h, w = g.shape
        box = np.zeros((h, w), bool)
        box[int(0.40810811 * h):int(0.99189189 * h), int(0.03594771 * w):int(0.96405229 * w)] = True
        return np.isfinite(g) & box

    frame = np.zeros((375, 1242), np.float32)
    frame[23:375, 13:1229] = pred[0, 0]
    valid = garg(gt[0]) & (gt[0] > 1e-3) & (gt[0] < 80)
    assert (bad & garg(np.ones_like(gt[0]))).any()  # the holes lie where Garg's crop scores
    assert_rows(bts, [written_out(gt[0][valid], frame[valid], 80.0, median_scale), None, None], names)
    box = gt[0][23:375, 13:1229]
    valid = garg(box) & (box > 1e-3) & (box < 80)
    assert_rows(authors, [written_out(box[valid], pred[0, 0][valid], 80.0, median_scale), None, None], names)
    valid = garg(box) & (box > 1e-3) & (box <= 80)
    assert_rows(auty, [written_out(box[valid], pred[0, 0][valid], 80.0), None, None])


def test_median_scale_of_a_zero_median_prediction_is_a_nan_row():
    gt = np.full((375, 1242), 5.0, np.float32)
    with no_warnings():
        row = score_image(gt, np.zeros((375, 1242), np.float32), with_flags(PROTOCOLS["kitti_depthclip"], None, "none"),
                          "median")
    assert set(row) == {*METRICS, "scale"} and all(np.isnan(row[name]) for name in row)


def test_zeroshot_metrics_leave_non_finite_truth_out():
    rng = np.random.default_rng(1)
    gt = rng.uniform(1, 9, (48, 64)).astype(np.float32)
    pred = rng.uniform(1, 9, (48, 64)).astype(np.float32)
    values, bad = holes(gt.shape)
    holed = punched(gt, bad, values)
    everything = np.ones(gt.shape, bool)
    with no_warnings():
        m = zeroshot_errors(holed, pred, everything, (1e-3, 10.0))
    g, p = gt[~bad].astype(np.float64), pred[~bad].astype(np.float64)
    d = np.log(p) - np.log(g)
    assert m["abs_rel"] == pytest.approx(np.mean(np.abs(p - g) / g), rel=1e-6)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((p - g) ** 2)), rel=1e-6)
    assert m["silog"] == pytest.approx(100 * np.sqrt(np.mean(d ** 2) - np.mean(d) ** 2), rel=1e-5)
    assert m == zeroshot_errors(gt, pred, ~bad, (1e-3, 10.0))  # the same as those pixels masked out
    for how in ("median", "lstsq", "lstsq_disparity"):
        with no_warnings():
            fit = aligned(holed, pred, everything, how)
        expected = aligned(gt, pred, ~bad, how)
        assert fit[1:] == expected[1:], how
        np.testing.assert_array_equal(fit[0], expected[0])


@pytest.mark.parametrize("how", ["none", "median", "lstsq", "lstsq_disparity"])
def test_no_valid_pixel_is_a_nan_row_without_a_warning(how):
    gt = np.full((48, 64), 3.0, np.float32)
    pred = np.full((48, 64), 2.0, np.float32)
    everywhere = np.ones(gt.shape, bool)
    for truth, valid in ((gt, ~everywhere), (holes(gt.shape, everywhere=True)[0], everywhere)):
        with no_warnings():
            depth, scale, shift = aligned(truth, pred, valid, how)
            row = zeroshot_errors(truth, depth, valid, (1e-3, 10.0))
        assert set(row) == set(SUITE_METRICS) and all(np.isnan(v) for v in row.values())
        if how != "none":
            assert np.isnan(scale) and np.isnan(shift) and np.isnan(depth).all()
    # ETH3D's downsampling can leave no valid pixel of a few: the fit is undefined, not (0, 0)
    sparse = np.zeros((4, 2048), bool)
    sparse[0, 1] = True
    with no_warnings():
        assert all(np.isnan(least_squares(np.ones((4, 2048), np.float32), np.ones((4, 2048), np.float32), sparse,
                                          max_resolution=1024)))


def test_median_of_a_zero_prediction_is_undefined():
    gt = np.full((4, 4), 3.0, np.float32)
    with no_warnings():
        depth, scale, shift = aligned(gt, np.zeros((4, 4), np.float32), gt > 0, "median")
    assert np.isnan(scale) and np.isnan(shift) and np.isnan(depth).all()


@pytest.mark.parametrize("how", ["median", "lstsq", "lstsq_disparity"])
def test_a_constant_prediction_or_one_valid_pixel_aligns_to_numpys_minimum_norm_fit(how):
    """median: median(gt) / c; lstsq with every design row (c, 1): the minimum-norm solution of
    c * scale + shift = mean(gt), i.e. (c, 1) * mean(gt) / (c^2 + 1), whose fitted depth is mean(gt); in
    disparity the same on the inverses."""
    rng = np.random.default_rng(2)
    gt = rng.uniform(1, 9, (6, 8)).astype(np.float32)
    constant = np.full_like(gt, 2.5)
    one = np.zeros(gt.shape, bool)
    one[3, 4] = True
    for valid in (np.ones(gt.shape, bool), one):
        with no_warnings():
            depth, scale, shift = aligned(gt, constant, valid, how)
            row = zeroshot_errors(gt, depth, valid, (1e-3, 10.0))
        g = gt[valid].astype(np.float64)
        if how == "median":
            assert (scale, shift) == pytest.approx((np.median(g) / 2.5, 0.0), rel=1e-6)
            fitted = 2.5 * scale
        elif how == "lstsq":
            assert (scale, shift) == pytest.approx((2.5 * g.mean() / 7.25, g.mean() / 7.25), rel=1e-5)
            fitted = g.mean()
        else:
            c, target = 1 / 2.5, np.mean(1 / g)
            assert (scale, shift) == pytest.approx((c * target / (c * c + 1), target / (c * c + 1)), rel=1e-5)
            fitted = 1 / target
        np.testing.assert_allclose(depth, np.full_like(gt, fitted), rtol=1e-5)
        assert row["abs_rel"] == pytest.approx(np.mean(np.abs(fitted - g) / g), rel=1e-5, abs=1e-6)
        assert all(np.isfinite(v) for v in row.values())


# ---------------------------------------------------------------- end to end
def test_eval_scores_a_holed_diode_image_on_its_finite_pixels_and_lists_an_all_masked_one(tmp_path, checkpoint):
    """One image NaN/+-inf under its true mask on rows 35..47 (35 of 48 rows left): scored on its finite pixels, its
    row equal to the same image with those pixels masked out; one image all masked: warned about, listed under
    `unscored`, the run exits 0 and the means are over the other two."""
    data, reference = tmp_path / "data", tmp_path / "reference"
    listing = write_dataset("DIODE", str(data), count=3)
    shutil.copytree(data, reference)
    entries = [line.split() for line in open(listing).read().splitlines()]
    rows = np.arange(48)[:, None] >= 35
    depth_file = data / entries[0][1]
    depth = np.load(depth_file)[..., 0]
    values, _ = holes(depth.shape, everywhere=True)
    np.save(depth_file, np.where(rows, values, depth)[..., None])
    mask_file = reference / entries[0][2]
    np.save(mask_file, np.where(rows, 0, np.load(mask_file)).astype(np.float32))
    np.save(data / entries[1][2], np.zeros((48, 64), np.float32))
    args = ["--dataset", "DIODE", "--clip_model", checkpoint, "--device", "cpu", "--align", "lstsq"]
    run = subprocess.run([sys.executable, "eval.py", *args, "--data_path", str(data), "--testfile", listing,
                          "--output", str(tmp_path / "r.json")], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"warning: {entries[1][0]}: {evaluation.UNSCORED}; left out of the means (monoclip)" in run.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["count"] == 2 and r["unscored"] == [{"file": entries[1][0], "reason": evaluation.UNSCORED}]
    assert [row["file"] for row in r["per_image"]] == [entries[0][0], entries[2][0]]
    for name in SUITE_METRICS:
        assert r["metrics"][name] == pytest.approx(np.mean([row[name] for row in r["per_image"]]), abs=1e-12)
    masked = evaluation.main([*args, "--data_path", str(reference), "--testfile", str(reference / "list.txt")])
    assert masked["per_image"][0] == r["per_image"][0] and masked["per_image"][2] == r["per_image"][1]
