"""The zero-shot suite (datasets/zeroshot.py, eval.py --dataset ETH3D|SCANNET|DIODE|IBIMS|SUNRGBD --align): each
dataset's decoding, masks, ranges and box against written-out numpy; the alignments against their closed forms; the
metrics against their formulas; bad files in one line; prepare_zeroshot's --check and --download; the suite's table.
(Our alignment and metrics equal Marigold's alignment.py + metric.py to 4e-7, checked outside the repository.)"""
import dataclasses
import json
import math
import os
import tarfile
import threading
import http.server

import numpy as np
import pytest
from PIL import Image

import cli
import eval as evaluation
import table
from calculate_error import aligned, least_squares, score_image
from datasets import zeroshot
from datasets.prepare_zeroshot import main as prepare
from protocols import PROTOCOLS, SUITE_METRICS
from synthetic.zeroshot_like import write_dataset
from test_errors import documented
from test_kitti import RangeHandler

SMALL_ETH3D = (48, 72)  # rows, cols: ETH3D's files are 4032x6048; the tests write small ones


@pytest.fixture
def small_eth3d(monkeypatch):
    monkeypatch.setattr(zeroshot, "ETH3D_SHAPE", SMALL_ETH3D)


def zeroshot_errors(gt, pred, valid, clip):
    """Marigold's metrics of one image's valid pixels (gt, pred (H, W), valid (H, W) bool), the prediction clipped
    to clip and then to at least 1e-6 (the old calculate_error.zeroshot_errors): a Marigold suite row scoring gt > 0
    (0 outside valid), without a box -> {metric: float} in SUITE_METRICS (the fit's scale and shift left out)."""
    row = dataclasses.replace(PROTOCOLS["scannet_marigold"], valid_range=(0.0, math.inf), clamp=clip)
    scored = score_image(np.where(valid, gt, 0), pred, row)
    return {name: scored[name] for name in SUITE_METRICS}


def written(name, root, count=2):
    return write_dataset(name, str(root), count=count)


def expected_ground_truth(name, root, entry):
    """The sources' decoding, written out with numpy on the files."""
    rgb, depth_file, mask = entry
    path = os.path.join(root, depth_file)
    if name == "ETH3D":
        gt = np.fromfile(path, np.float32).reshape(SMALL_ETH3D)
        gt = np.where(np.isinf(gt), 0, gt)
        return gt, (gt > 1e-5) & (gt < np.inf)
    if name == "SCANNET":
        gt = np.asarray(Image.open(path), np.float32) / 1000
        return gt, (gt > 1e-3) & (gt < 10)
    if name == "DIODE":
        gt = np.load(path)[..., 0]
        return gt, np.load(os.path.join(root, mask)).astype(bool)
    box = np.zeros((480, 640) if name == "IBIMS" else (500, 700), bool)
    box[45:471, 41:601] = True
    if name == "IBIMS":  # float64 as ZoeDepth's loaders decode
        gt = np.asarray(Image.open(path)).astype(np.float64) * 50 / 65535
        invalid, transparent = (np.asarray(Image.open(os.path.join(root, m))) for m in mask)
        valid = invalid * transparent
        gt = np.where(valid, gt, -1)
        return gt, (gt > 0) & (gt < 10) & box
    gt = np.asarray(Image.open(path)).astype(np.float64) / 1000.0
    gt[gt > 8] = -1
    return gt, (gt > 0) & (gt < 8) & box


@pytest.mark.parametrize("name", list(zeroshot.PROTOCOLS))
def test_each_dataset_reads_as_its_source(name, tmp_path, small_eth3d):
    listing = written(name, tmp_path)
    data = zeroshot.ZeroShot(name, str(tmp_path), listing)
    assert len(data) == 2
    for index, entry in enumerate(data.entries):
        rgb, gt, file = data[index]
        expected, scored = expected_ground_truth(name, str(tmp_path), entry)
        assert scored.any() and not scored.all()  # holes, masks, ranges or the box leave some out
        np.testing.assert_allclose(gt[0].numpy(), np.where(scored, expected, 0), rtol=1e-6)
        assert gt.numpy().dtype == expected.dtype  # float64 where ZoeDepth decodes so (iBims, SUN RGB-D)
        assert tuple(gt.shape[1:]) == data.output_size([index]) and max(rgb.shape[1:]) == 544


def test_alignments_recover_their_closed_forms():
    rng = np.random.RandomState(0)
    gt = rng.uniform(1, 9, (20, 30)).astype(np.float32)
    valid = rng.rand(20, 30) > 0.2
    pred, scale, shift = aligned(gt, (gt - 0.5) / 2, valid, "lstsq")
    assert (scale, shift) == pytest.approx((2.0, 0.5), abs=1e-4)
    np.testing.assert_allclose(pred[valid], gt[valid], rtol=1e-4)
    disparity = (1 / gt - 0.1) / 3  # a prediction whose inverse is an affine map of the truth's inverse
    pred, scale, shift = aligned(gt, 1 / disparity, valid, "lstsq_disparity")
    assert (scale, shift) == pytest.approx((3.0, 0.1), abs=1e-4)
    np.testing.assert_allclose(pred[valid], gt[valid], rtol=1e-3)
    pred, scale, shift = aligned(gt, gt / 4, valid, "median")
    assert (scale, shift) == pytest.approx((4.0, 0.0))
    assert aligned(gt, gt / 4, valid, "none")[1:] == (1.0, 0.0)
    # Marigold's max_resolution hands torch a (1, H, W) tensor: only the width is subsampled (nearest), rows all kept
    wide = rng.uniform(1, 9, (4, 2048)).astype(np.float32)
    noisy = wide * 2 + rng.normal(0, 0.1, wide.shape).astype(np.float32)
    every_other = least_squares(wide[:, ::2], noisy[:, ::2], np.ones((4, 1024), bool))
    assert least_squares(wide, noisy, np.ones_like(wide, bool), max_resolution=1024) == pytest.approx(every_other)


def test_metrics_are_marigolds_formulas():
    gt = np.array([[1.0, 2.0, 4.0, 0.0]], np.float32)
    pred = np.array([[1.1, 2.0, 2.5, 5.0]], np.float32)
    valid = gt > 0
    m = zeroshot_errors(gt, pred, valid, (1e-3, 10.0))
    p, g = np.array([1.1, 2.0, 2.5]), np.array([1.0, 2.0, 4.0])
    d = np.log(p) - np.log(g)
    assert m["abs_rel"] == pytest.approx(np.mean(np.abs(p - g) / g))
    assert m["sq_rel"] == pytest.approx(np.mean((p - g) ** 2 / g))
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((p - g) ** 2)))
    assert m["rmse_log"] == pytest.approx(np.sqrt(np.mean(d ** 2)))
    assert m["log10"] == pytest.approx(np.mean(np.abs(np.log10(p) - np.log10(g))))
    assert (m["a1"], m["a2"], m["a3"]) == pytest.approx((2 / 3, 2 / 3, 1.0))
    assert m["i_rmse"] == pytest.approx(np.sqrt(np.mean((1 / p - 1 / g) ** 2)))
    assert m["silog"] == pytest.approx(100 * np.sqrt(np.mean(d ** 2) - np.mean(d) ** 2))
    assert zeroshot_errors(gt, pred * 100, valid, (1e-3, 10.0))["rmse"] == pytest.approx(
        np.sqrt(np.mean((np.array([10, 10, 10]) - g) ** 2)))  # clipped to the dataset's range first


@pytest.mark.parametrize("name", ["IBIMS", "SUNRGBD"])
def test_zoedepths_rows_compute_as_its_compute_metrics(name):
    """ZoeDepth's misc.py compute_metrics on its iBims / SUN RGB-D configs (min_depth_eval 0, max_depth_eval 10 / 8,
    eigen_crop): the ground truth float64 as its loaders decode it, the prediction float32, clamped to the range
    (+inf -> max) with no floor, its compute_errors in numpy's promotion, written out."""
    rng = np.random.default_rng(4)
    raw = rng.integers(0, 65536 if name == "IBIMS" else 12000, (480, 640)).astype(np.uint16)
    gt = raw.astype(np.float64) * 50 / 65535 if name == "IBIMS" else raw.astype(np.float64) / 1000.0
    high = 10.0 if name == "IBIMS" else 8.0
    pred = rng.uniform(0.05, high + 3, (480, 640)).astype(np.float32)
    pred[::7, ::5] = np.inf
    got = score_image(gt, pred, PROTOCOLS[f"{name.lower()}_zoedepth"])
    p = pred.copy()  # their order: below min -> min, above max -> max, inf -> max, NaN -> min
    p[p < 0] = 0
    p[p > high] = high
    p[np.isinf(p)] = high
    valid = np.logical_and(gt > 0, gt < high)
    box = np.zeros_like(valid)
    box[45:471, 41:601] = True
    g, p = gt[valid & box], p[valid & box]
    assert g.dtype == np.float64 and p.dtype == np.float32 and (p == high).any()
    thresh = np.maximum((g / p), (p / g))
    err = np.log(p) - np.log(g)
    expected = {"a1": (thresh < 1.25).mean(), "a2": (thresh < 1.25 ** 2).mean(), "a3": (thresh < 1.25 ** 3).mean(),
                "abs_rel": np.mean(np.abs(g - p) / g), "sq_rel": np.mean(((g - p) ** 2) / g),
                "rmse": np.sqrt(((g - p) ** 2).mean()), "rmse_log": np.sqrt(((np.log(g) - np.log(p)) ** 2).mean()),
                "silog": np.sqrt(np.mean(err ** 2) - np.mean(err) ** 2) * 100,
                "log10": (np.abs(np.log10(g) - np.log10(p))).mean(),
                "i_rmse": np.sqrt(np.mean((1 / p - 1 / g) ** 2))}  # not theirs: Marigold's formula, in their dtypes
    assert {k: got[k] for k in expected} == {k: float(v) for k, v in expected.items()}
    assert (got["scale"], got["shift"]) == (1.0, 0.0)


def test_a_prediction_of_zero_is_infinite_on_zoedepths_rows_unless_aligned(recwarn):
    """ZoeDepth clamps at its min_depth_eval of 0 and takes the log: an unaligned prediction of 0 m makes log10,
    rmse_log and silog infinite or NaN, as theirs (without numpy's warnings); eval.py leaves that image out of the
    means with its own reason. An --align fit ends with Marigold's 1e-6 floor, as the Marigold rows always do."""
    gt = np.full((480, 640), 3.0)
    pred = np.full((480, 640), 2.5, np.float32)
    pred[100, 100] = -1.0  # below 0: clamped to 0
    row = PROTOCOLS["sunrgbd_zoedepth"]
    unaligned = score_image(gt, pred, row)
    assert unaligned["a1"] == 1 - 1 / (426 * 560)  # the 0 m pixel's ratio is infinite; the box holds 426 x 560
    assert math.isinf(unaligned["rmse_log"]) and not math.isfinite(unaligned["silog"])
    assert not recwarn.list
    scored, unscored = evaluation.split_unscored([{"file": "a.jpg", **unaligned}])
    assert scored == [] and unscored == [{"file": "a.jpg", "reason": evaluation.NOT_FINITE}]
    fit = score_image(gt, pred, row, "median")  # scale 1.2: the pixel is -1.2 m, clipped to 0, then floored
    floored = np.where(np.arange(pred.size).reshape(pred.shape) == 100 * 640 + 100, 1e-6, 3.0)
    box = np.zeros(pred.shape, bool)
    box[45:471, 41:601] = True
    assert fit["rmse_log"] == pytest.approx(np.sqrt(np.mean(np.log(3.0 / floored[box]) ** 2)), rel=1e-6)
    assert evaluation.split_unscored([{"file": "a.jpg", **dict.fromkeys(fit, math.nan), "scale": 1.0}])[1][0][
        "reason"] == evaluation.UNSCORED


@pytest.mark.parametrize("name", ["eth3d", "ScanNet", "diode", "IBIMS", "sunrgbd"])
def test_eval_scores_each_dataset_with_the_alignment_in_every_row(name, tmp_path, checkpoint, small_eth3d):
    listing = written(name.upper(), tmp_path / "data")
    out = tmp_path / "r.json"
    evaluation.main(["--dataset", name, "--data_path", str(tmp_path / "data"), "--clip_model", checkpoint,
                     "--device", "cpu", "--align", "lstsq", "--output", str(out),
                     *(["--testfile", listing] if listing else [])])
    results = json.loads(out.read_text())
    assert results["dataset"] == name.upper() and results["count"] == 2
    assert results["config"]["align"] == "lstsq" and results["config"]["source"] in ("Marigold", "ZoeDepth")
    source = "zoedepth" if name.upper() in ("IBIMS", "SUNRGBD") else "marigold"
    assert results["config"]["scored_as"] == f"{name.lower()}_{source}"
    for row in results["per_image"]:
        assert {"scale", "shift", "abs_rel", "a1", "silog", "i_rmse"} <= set(row)
    assert results["metrics"]["abs_rel"] == pytest.approx(np.mean([r["abs_rel"] for r in results["per_image"]]))


def one_line(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda: evaluation.main(argv))
    assert exit_info.value.code in (1, 2)
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("eval:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    line = lines[0][len("error: "):]
    assert documented(line.split(" (see eval.py --help)")[0]), line
    return line


def test_bad_files_are_one_line_each(tmp_path, checkpoint, capsys):
    args = ["--clip_model", checkpoint, "--device", "cpu", "--method", "constant"]
    scannet = write_dataset("SCANNET", str(tmp_path / "s"), count=1)
    depth = tmp_path / "s" / open(scannet).read().split()[1]
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(depth)  # 8-bit, not 16
    assert "is 8-bit grayscale, not 16-bit" in one_line(capsys, ["--dataset", "scannet", "--data_path",
                                                                 str(tmp_path / "s"), "--testfile", scannet, *args])
    diode = write_dataset("DIODE", str(tmp_path / "d"), count=1)
    mask = tmp_path / "d" / open(diode).read().split()[2]
    np.save(mask, np.ones((10, 10), np.float32))
    assert "a mask must be the size of its depth" in one_line(capsys, ["--dataset", "diode", "--data_path",
                                                                       str(tmp_path / "d"), "--testfile", diode, *args])
    write_dataset("IBIMS", str(tmp_path / "i"), count=1)
    os.remove(tmp_path / "i" / "mask_transp" / "room_00.png")
    assert "1 IBIMS files are missing" in one_line(capsys, ["--dataset", "ibims", "--data_path", str(tmp_path / "i"),
                                                            *args])
    assert "needs --data_path" in one_line(capsys, ["--dataset", "sunrgbd", *args])
    assert "is the zero-shot suite's" in one_line(capsys, ["--align", "lstsq", *args])


@pytest.fixture
def marigold_server(tmp_path):
    """Marigold's evaluation tar for ScanNet, served from 127.0.0.1 as their server lays it out."""
    source = tmp_path / "source"
    write_dataset("SCANNET", str(source), count=2)
    served = tmp_path / "served" / "scannet"
    served.mkdir(parents=True)
    with tarfile.open(served / "scannet_val_sampled_800_1.tar", "w") as tar:
        for scene in sorted(os.listdir(source)):
            if scene.startswith("scene"):
                tar.add(source / scene, f"./{scene}")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             lambda *a: RangeHandler(*a, directory=str(tmp_path / "served")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", str(source / "list.txt")
    server.shutdown()


def test_check_and_download(marigold_server, tmp_path, capsys):
    url, listing = marigold_server
    target = tmp_path / "scannet"
    with pytest.raises(SystemExit) as exit_info:
        prepare(["scannet", "--check", "--data_path", str(target), "--testfile", listing])
    assert exit_info.value.code == 1
    assert capsys.readouterr().out.strip().startswith(f"no SCANNET data at {target}")
    prepare(["scannet", "--download", "--data_path", str(target), "--testfile", listing, "--mirror", url])
    assert capsys.readouterr().out.strip().endswith(f"SCANNET: 2 images complete under {target}")
    assert sorted(os.listdir(target)) == ["scene0000_00", "scene0001_00"]  # unpacked, the tar gone
    os.remove(target / "scene0001_00" / "depth" / "000001.png")
    with pytest.raises(SystemExit):
        prepare(["scannet", "--check", "--data_path", str(target), "--testfile", listing])
    assert "1 SCANNET files are missing" in capsys.readouterr().out
    prepare(["ibims", "--urls"])
    assert "no download here" in capsys.readouterr().out


def test_suite_table_ranks_settings_per_dataset(tmp_path):
    def results(setting, dataset, abs_rel, a1):
        path = tmp_path / setting / f"{dataset}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"dataset": dataset, "metrics": {"abs_rel": abs_rel, "a1": a1}}))
        return str(path)
    paths = [results("words", "SCANNET", 0.30, 0.50), results("learned", "SCANNET", 0.20, 0.60),
             results("words", "DIODE", 0.40, 0.45), results("learned", "DIODE", 0.45, 0.40)]
    lines = table.suite_table(paths).splitlines()
    assert lines[0] == "| setting | SCANNET AbsRel | SCANNET δ1 | DIODE AbsRel | DIODE δ1 | avg. rank |"
    assert lines[2] == "| learned | 0.200 | 0.600 | 0.450 | 0.400 | 1.5 |"  # ranks 1, 1, 2, 2
    assert lines[3] == "| words | 0.300 | 0.500 | 0.400 | 0.450 | 1.5 |"
