"""datasets/prepare_nyu.py on a small labeled file written here in nyu_depth_v2_labeled.mat's HDF5 layout."""
import io
import os
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, optional
from datasets import DataError, prepare_nyu

h5py = optional("h5py")
scipy_io = optional("scipy.io")

SCENES = ["bathroom", "kitchen", "bathroom", "living_room"]  # image i (1-based) is SCENES[i - 1]
TEST, TRAIN = [2, 4], [1, 3]
TOP, BOTTOM = (200, 40, 40), (30, 60, 220)  # RGB of the frame's upper and lower half, to catch transposes


def write_labeled(path):
    """images (N, 3, 640, 480) uint8, rawDepths (N, 640, 480) metres, sceneTypes (1, N) refs to uint16 strings."""
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:240], frame[240:] = TOP, BOTTOM
    depth = np.full((480, 640), 2.0, np.float32)
    depth[100, 200] = 1.2345  # -> 1234 mm: truncated, not rounded
    depth[300, 500] = 0.0  # no reading
    with h5py.File(path, "w") as f:
        f["images"] = np.stack([frame.T] * len(SCENES))
        f["rawDepths"] = np.stack([depth.T * (i + 1) for i in range(len(SCENES))])
        refs = [f.create_dataset(f"refs/{i}", data=np.array([[ord(c)] for c in s], np.uint16)).ref
                for i, s in enumerate(SCENES)]
        f.create_dataset("sceneTypes", data=np.array([refs], dtype=h5py.ref_dtype))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepare")
    write_labeled(root / "labeled.mat")
    scipy_io.savemat(root / "splits.mat", {"testNdxs": np.array(TEST, np.uint16)[:, None],
                                           "trainNdxs": np.array(TRAIN, np.uint16)[:, None]})
    (root / "list.txt").write_text("".join(f"{SCENES[i - 1]}/rgb_{i - 1:05d}.jpg {SCENES[i - 1]}/sync_depth_{i - 1:05d}.png\n"
                                           for i in TEST))
    out = root / "NYU"
    prepare_nyu.main(["--mat", str(root / "labeled.mat"), "--splits_mat", str(root / "splits.mat"),
                      "--test_list", str(root / "list.txt"), "--data_path", str(out)])
    return root, out


def test_split_scene_folders_and_names(prepared):
    _, out = prepared
    written = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, files in os.walk(out) for f in files)
    assert written == sorted(["official_splits/test/kitchen/rgb_00001.jpg", "official_splits/test/kitchen/sync_depth_00001.png",
                       "official_splits/test/living_room/rgb_00003.jpg",
                       "official_splits/test/living_room/sync_depth_00003.png",
                       "official_splits/train/bathroom/rgb_00000.jpg", "official_splits/train/bathroom/sync_depth_00000.png",
                       "official_splits/train/bathroom/rgb_00002.jpg", "official_splits/train/bathroom/sync_depth_00002.png"])


def test_depth_is_uint16_millimetres_truncated(prepared):
    _, out = prepared
    depth = np.asarray(Image.open(out / "official_splits/test/kitchen/sync_depth_00001.png"))  # image 2: depths x2
    assert depth.dtype == np.uint16 and depth.shape == (480, 640)
    assert depth[0, 0] == 4000 and depth[100, 200] == 2469 and depth[300, 500] == 0  # 2 x 1.2345 m = 2469.0 mm


def test_rgb_upright_with_black_border(prepared):
    _, out = prepared
    rgb = np.asarray(Image.open(out / "official_splits/test/kitchen/rgb_00001.jpg")).astype(int)
    assert rgb.shape == (480, 640, 3)
    assert np.abs(rgb[120, 320] - TOP).max() <= 3 and np.abs(rgb[360, 320] - BOTTOM).max() <= 3
    assert rgb[:3].max() <= 8 and rgb[-3:].max() <= 8 and rgb[:, :3].max() <= 8 and rgb[:, -5:].max() <= 8


def test_eval_reads_the_prepared_split(prepared):
    import eval
    root, out = prepared
    results = eval.main(["--data_path", str(out), "--testfile_nyu", str(root / "list.txt"), "--method", "constant",
                         "--workers", "0"])
    assert results["count"] == 2
    assert [row["file"] for row in results["per_image"]] == ["kitchen/rgb_00001.jpg", "living_room/rgb_00003.jpg"]


def test_incomplete_split_is_reported(prepared, tmp_path):
    root, out = prepared
    listed = tmp_path / "list.txt"
    listed.write_text("bathroom/rgb_00045.jpg bathroom/sync_depth_00045.png\n")
    with pytest.raises(DataError, match="2 of the 2 files in list.txt were not written"):
        prepare_nyu.main(["--mat", str(root / "labeled.mat"), "--splits_mat", str(root / "splits.mat"),
                          "--test_list", str(listed), "--data_path", str(out)])


def test_missing_file_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "datasets.prepare_nyu",
                             "--mat", str(tmp_path / "nope.mat"), "--data_path", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nope.mat'} does not exist; pass --mat with its path, or --download to fetch it from "
        f"{prepare_nyu.URL}"]
    assert not (tmp_path / "out").exists()


def test_not_hdf5_is_named(tmp_path):
    (tmp_path / "bad.mat").write_bytes(b"MATLAB 5.0 MAT-file, not HDF5")
    with pytest.raises(DataError, match="bad.mat is not a MATLAB v7.3"):
        prepare_nyu.main(["--mat", str(tmp_path / "bad.mat"), "--data_path", str(tmp_path / "out")])


def test_without_h5py_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(RuntimeError, match="pip install h5py scipy"):
        prepare_nyu.main(["--mat", str(tmp_path / "x.mat"), "--data_path", str(tmp_path / "out")])


def test_interrupted_download_leaves_no_file(tmp_path, monkeypatch):
    class Dropped(io.BytesIO):
        headers = {"Content-Length": str(3 << 20)}

        def read(self, size=-1):
            if self.tell() >= 1 << 20:
                raise ConnectionResetError("connection reset")
            return super().read(size)

    monkeypatch.setattr(urllib.request, "urlopen", lambda url: Dropped(b"x" * (3 << 20)))
    target = tmp_path / "nyu_depth_v2_labeled.mat"
    with pytest.raises(RuntimeError, match=f"could not download {prepare_nyu.URL}.*pass --mat"):
        prepare_nyu.main(["--mat", str(target), "--download", "--data_path", str(tmp_path / "out")])
    assert os.listdir(tmp_path) == []


def test_download_cut_short_is_not_kept(tmp_path, monkeypatch):
    class ClosedEarly(io.BytesIO):
        headers = {"Content-Length": str(3 << 20)}

    monkeypatch.setattr(urllib.request, "urlopen", lambda url: ClosedEarly(b"x" * (1 << 20)))
    with pytest.raises(RuntimeError, match="closed after 1048576 of 3145728 bytes"):
        prepare_nyu.main(["--mat", str(tmp_path / "nyu_depth_v2_labeled.mat"), "--download", "--data_path", str(tmp_path / "o")])
    assert os.listdir(tmp_path) == []
