"""--dataset KITTI on generated KITTI-like data: both protocols and median scaling against written-out
computations, the list's None lines, bad files, and prepare_kitti against a local HTTP server."""
import http.server
import io
import json
import os
import shutil
import threading
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import eval as evaluation
from calculate_error import score
from datasets import KITTIEigen, prepare_kitti
from protocols import KITTI_PROTOCOLS, NYU_METRICS as METRICS, PROTOCOLS, with_flags
from synthetic.kitti_like import write_dataset
from test_errors import error_line


@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti")
    return str(root), write_dataset(str(root), count=4, seed=0)


def written_out(gt, pred, crop, cap=80.0, scale_by_median=False):
    """The KITTI metrics of one image in numpy: gt, pred (H, W) metres at one size; crop fractions or None."""
    valid = (gt > 1e-3) & (gt < cap)
    if crop:
        h, w = gt.shape
        box = np.zeros_like(valid)
        box[int(crop[0] * h):int(crop[1] * h), int(crop[2] * w):int(crop[3] * w)] = True
        valid &= box
    g, p = gt[valid].astype(np.float64), pred[valid].astype(np.float64)
    scale = np.median(gt[valid]) / np.median(pred[valid]) if scale_by_median else 1.0
    p = np.clip(p * scale, 1e-3, cap)
    g = np.clip(g, 1e-3, cap)
    ratio = np.maximum(g / p, p / g)
    return {"abs_rel": np.mean(np.abs(g - p) / g), "sq_rel": np.mean((g - p) ** 2 / g),
            "rmse": np.sqrt(np.mean((g - p) ** 2)), "rmse_log": np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)),
            "a1": np.mean(ratio < 1.25), "a2": np.mean(ratio < 1.25 ** 2), "a3": np.mean(ratio < 1.25 ** 3),
            "log10": np.mean(np.abs(np.log10(g) - np.log10(p))), "abs_diff": np.mean(np.abs(g - p)), "scale": scale}


GARG = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
EIGEN = (0.3324324, 0.91351351, 0.0359477, 0.96405229)


@pytest.mark.parametrize("protocol", ["bts", "authors"])
@pytest.mark.parametrize("crop, fractions", [("garg", GARG), ("eigen", EIGEN), ("none", None)])
@pytest.mark.parametrize("median_scale", [False, True])
def test_protocols_against_written_out_computations(kitti, protocol, crop, fractions, median_scale):
    root, listing = kitti
    dataset = KITTIEigen(root, test_list=listing, with_rgb=False)
    pred = torch.from_numpy(np.random.default_rng(2).uniform(2, 60, (2, 1, 352, 1216)).astype(np.float32))
    gt = torch.stack([dataset[i][1] for i in range(2)])  # padded frames: 375x1242 and 376x1241 inside
    sizes = [dataset.frame_size(i) for i in range(2)]
    assert sizes == [(375, 1242), (376, 1241)]
    row = with_flags(PROTOCOLS[KITTI_PROTOCOLS[protocol]], 80.0, crop)
    errors = score(gt, pred, row, "median" if median_scale else "none", sizes)
    for i, (h, w) in enumerate(sizes):
        top, left = h - 352, (w - 1216) // 2
        truth = gt[i, 0, :h, :w].numpy()
        if protocol == "bts":  # the prediction pasted into the full frame
            frame = np.zeros((h, w), np.float32)
            frame[top:top + 352, left:left + 1216] = pred[i, 0].numpy()
            expected = written_out(truth, frame, fractions, scale_by_median=median_scale)
        else:  # the ground truth cropped to the prediction's box
            expected = written_out(truth[top:top + 352, left:left + 1216], pred[i, 0].numpy(), fractions,
                                   scale_by_median=median_scale)
        for name in METRICS:
            assert errors[name][i].item() == pytest.approx(expected[name], rel=1e-5, abs=1e-6), (protocol, crop, name)
        if median_scale:
            assert errors["scale"][i].item() == pytest.approx(expected["scale"], rel=1e-6)


def test_eval_skips_and_reports_none_lines_and_scores_per_drive(kitti, checkpoint, tmp_path):
    root, listing = kitti
    out = tmp_path / "r.json"
    evaluation.main(["--dataset", "KITTI", "--data_path", root, "--testfile_kitti", listing, "--clip_model", checkpoint,
                     "--median_scale", "--workers", "0", "--batch_size", "3", "--output", str(out)])
    r = json.loads(out.read_text())
    assert r["count"] == 4 and r["skipped"]["count"] == 1 and r["skipped"]["files"][0].endswith("0000000045.png")
    assert set(r["per_scene"]) == {"2011_09_26_drive_0002_sync", "2011_09_30_drive_0016_sync"}
    assert r["config"]["bin_set"] == "kitti_scaled" and r["config"]["bins"] == [8.0, 12.0, 16.0, 18.0, 20.0, 22.0, 24.0]
    assert r["config"]["kitti_protocol"] == "bts" and r["config"]["eval_crop"] == "garg" and r["config"]["median_scale"]
    assert r["config"]["scored_as"] == "kitti_bts"
    dataset = KITTIEigen(root, test_list=listing)
    from monoclip import MonoCLIP
    model = MonoCLIP(checkpoint, device="cpu", bins="kitti_scaled")
    for index, row in enumerate(r["per_image"]):  # each row is the protocol applied to the model's prediction
        rgb, gt, file = dataset[index]
        assert row["file"] == file
        with torch.inference_mode():
            pred = model.predict(rgb[None])  # (1, 1, 352, 1216)
        expected = score(gt[None], pred, "kitti_bts", "median", [dataset.frame_size(index)])
        for name in [*METRICS, "scale"]:
            assert row[name] == pytest.approx(expected[name][0].item(), rel=1e-5), name


@pytest.fixture
def broken(kitti, tmp_path):
    root, listing = kitti
    copy = tmp_path / "kitti"
    shutil.copytree(root, copy)
    return copy, str(copy / "test_list.txt")


def kitti_args(root, listing, *extra):
    return ["--dataset", "KITTI", "--data_path", str(root), "--testfile_kitti", listing, "--method", "constant",
            "--workers", "0", *extra]


def test_missing_files_are_one_line(capsys, broken):
    root, listing = broken
    os.remove(root / "data_depth_annotated/2011_09_30_drive_0016_sync/proj_depth/groundtruth/image_02/0000000015.png")
    line = error_line(capsys, kitti_args(root, listing))
    assert "1 files named in test_list.txt are missing" in line and "0000000015.png" in line
    assert "prepare_kitti --check" in line


def test_8_bit_depth_png_is_one_line(capsys, broken):
    root, listing = broken
    path = root / "data_depth_annotated/2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000005.png"
    Image.new("L", (1242, 375)).save(path)
    line = error_line(capsys, kitti_args(root, listing))
    assert line == f"error: {path} is 8-bit grayscale, not 16-bit: KITTI depth must be a 16-bit PNG holding depth x 256"


def test_an_image_without_valid_depth_is_left_out_of_the_means(capsys, broken):
    """The rule of NYU and the zero-shot suite: warned about, listed under `unscored`, the means over the rest."""
    root, listing = broken
    path = root / "data_depth_annotated/2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000005.png"
    Image.fromarray(np.zeros((375, 1242), np.uint16)).save(path)
    r = evaluation.main(kitti_args(root, listing, "--median_scale"))
    file = "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000005.png"
    assert r["unscored"] == [{"file": file, "reason": evaluation.UNSCORED}] and r["count"] == 3
    assert f"warning: {file}: {evaluation.UNSCORED}; left out of the means (constant)" in capsys.readouterr().err
    for name in METRICS:
        assert r["metrics"][name] == pytest.approx(np.mean([row[name] for row in r["per_image"]]), abs=1e-12)


# ---------------------------------------------------------------- prepare_kitti against a local server
class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder, honouring 'Range: bytes=N-' (as the real mirror does); records the ranges asked."""
    ranges = []

    def do_GET(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            return self.send_error(404)
        data = open(path, "rb").read()
        start = int(self.headers["Range"][len("bytes="):-1]) if self.headers.get("Range") else 0
        RangeHandler.ranges.append((self.path, start))
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(kitti, tmp_path):
    """The generated data as the KITTI mirror serves it: drive zips and data_depth_annotated.zip (train/val)."""
    root, _ = kitti
    served = tmp_path / "served"
    for date, drive in [("2011_09_26", "2011_09_26_drive_0002_sync"), ("2011_09_30", "2011_09_30_drive_0016_sync")]:
        (served / "raw_data" / drive[:-5]).mkdir(parents=True)
        with zipfile.ZipFile(served / "raw_data" / drive[:-5] / f"{drive}.zip", "w") as z:
            for name in os.listdir(os.path.join(root, date, drive, "image_02", "data")):
                z.write(os.path.join(root, date, drive, "image_02", "data", name), f"{date}/{drive}/image_02/data/{name}")
    with zipfile.ZipFile(served / "data_depth_annotated.zip", "w") as z:
        for part, drive in [("train", "2011_09_26_drive_0002_sync"), ("val", "2011_09_30_drive_0016_sync")]:
            folder = os.path.join(root, "data_depth_annotated", drive, "proj_depth", "groundtruth", "image_02")
            for name in os.listdir(folder):
                z.write(os.path.join(folder, name), f"{part}/{drive}/proj_depth/groundtruth/image_02/{name}")
        z.writestr("train/2011_10_03_drive_0042_sync/proj_depth/groundtruth/image_02/0000000001.png", b"not tested")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: RangeHandler(*a, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    RangeHandler.ranges = []
    yield f"http://127.0.0.1:{server.server_port}", served
    server.shutdown()


def test_check_urls_and_download_into_the_layout_eval_reads(kitti, mirror, tmp_path, capsys):
    root, listing = kitti
    url, served = mirror
    target = tmp_path / "fresh"
    present, missing, missing_gt = prepare_kitti.main(["--check", "--data_path", str(target), "--testfile_kitti",
                                                       listing])
    assert present == 0 and missing == ["2011_09_26_drive_0002_sync", "2011_09_30_drive_0016_sync"] and missing_gt
    assert "missing drives (2 of 2)" in capsys.readouterr().out
    prepare_kitti.main(["--urls", "--testfile_kitti", listing, "--mirror", url])
    assert capsys.readouterr().out.split() == [
        f"{url}/raw_data/2011_09_26_drive_0002/2011_09_26_drive_0002_sync.zip",
        f"{url}/raw_data/2011_09_30_drive_0016/2011_09_30_drive_0016_sync.zip", f"{url}/data_depth_annotated.zip"]
    partial = target / "2011_09_26_drive_0002_sync.zip.part"  # an earlier, interrupted download
    target.mkdir()
    whole = (served / "raw_data/2011_09_26_drive_0002/2011_09_26_drive_0002_sync.zip").read_bytes()
    partial.write_bytes(whole[:1000])
    present, missing, missing_gt = prepare_kitti.main(["--download", "--data_path", str(target), "--testfile_kitti",
                                                       listing, "--mirror", url])
    assert (present, missing, missing_gt) == (5, [], False)
    assert ("/raw_data/2011_09_26_drive_0002/2011_09_26_drive_0002_sync.zip", 1000) in RangeHandler.ranges
    assert sorted(os.listdir(target / "data_depth_annotated")) == ["2011_09_26_drive_0002_sync",
                                                                   "2011_09_30_drive_0016_sync"]
    assert not [f for f in os.listdir(target) if f.endswith((".zip", ".part"))]
    fresh = evaluation.main(kitti_args(target, listing))
    original = evaluation.main(kitti_args(root, listing))
    assert fresh["per_image"] == original["per_image"]


def test_interrupted_download_keeps_its_part_and_says_so(kitti, mirror, tmp_path, monkeypatch):
    root, listing = kitti
    url, _ = mirror
    import urllib.request

    class Cut(io.BytesIO):
        headers = {"Content-Length": "5000"}
        status = 200
    monkeypatch.setattr(urllib.request, "urlopen", lambda request: Cut(b"x" * 1000))
    with pytest.raises(RuntimeError, match=r"closed after 1000 of 5000 bytes\) \(1000 bytes kept in .*\.part: run "
                                           r"again to resume\)"):
        prepare_kitti.main(["--download", "--data_path", str(tmp_path / "k"), "--testfile_kitti", listing,
                            "--mirror", url])
    assert os.path.getsize(tmp_path / "k" / "2011_09_26_drive_0002_sync.zip.part") == 1000
