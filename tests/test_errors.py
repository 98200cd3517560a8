"""Every bad input ends with one line on stderr naming the thing and what to do, a non-zero exit status,
no traceback (unless --debug) and no partial results file."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import cli
import eval as evaluation
from monoclip import MonoCLIP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def error_line(capsys, argv, code=1):
    """Run eval.py's main through the same wrapper as the command line; return its single stderr line."""
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda: evaluation.main(argv))
    assert exit_info.value.code == code
    lines = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in lines if not line.startswith("eval:")]  # the progress bar, if it started
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.fixture
def data(nyu_like, tmp_path):
    """A private copy of the NYU-like folder that a test may break."""
    root = tmp_path / "data"
    shutil.copytree(nyu_like, root)
    return root


def split(root):
    return root / "official_splits" / "test"


def median_args(root, *extra):
    return ["--data_path", str(root), "--testfile_nyu", "auto", "--method", "median", "--workers", "0", *extra]


def test_missing_data_path_names_the_expected_folder(capsys, tmp_path):
    line = error_line(capsys, median_args(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere" / "official_splits" / "test") in line and "prepare_nyu.py" in line


def test_missing_listed_files_are_counted_and_auto_suggested(capsys, data, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("bathroom/rgb_00001.jpg bathroom/sync_depth_00001.png\n"
                       "bedroom/rgb_00002.jpg bedroom/sync_depth_00002.png\n"
                       "bedroom/rgb_00003.jpg bedroom/sync_depth_00003.png\n")
    line = error_line(capsys, median_args(data, "--testfile_nyu", str(listing)))
    assert "4 files" in line and "bedroom/rgb_00002.jpg" in line and "--testfile_nyu auto" in line


@pytest.mark.parametrize("workers", ["0", "1"])
@pytest.mark.parametrize("name", ["bathroom/rgb_00022.jpg", "kitchen/sync_depth_00008.png"])
def test_corrupt_or_truncated_file_is_named(capsys, data, tmp_path, name, workers):
    path = split(data) / name
    path.write_bytes(path.read_bytes()[:2000])
    out = tmp_path / "r.json"
    line = error_line(capsys, median_args(data, "--workers", workers, "--output", str(out)))
    assert str(path) in line and "corrupt or truncated" in line
    assert not out.exists() and os.listdir(tmp_path) == ["data"]


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_depth_png_that_is_not_16_bit_is_rejected(capsys, data, mode):
    path = split(data) / "kitchen" / "sync_depth_00008.png"
    Image.new(mode, (640, 480)).save(path)
    line = error_line(capsys, median_args(data))
    assert str(path) in line and "16-bit" in line


def test_rgb_of_the_wrong_size_is_rejected(capsys, data):
    path = split(data) / "kitchen" / "rgb_00008.jpg"
    Image.new("RGB", (800, 600)).save(path)
    line = error_line(capsys, median_args(data))
    assert str(path) in line and "800x600" in line and "640x480" in line


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_grayscale_rgba_and_palette_rgb_are_converted(data, mode, tmp_path):
    path = split(data) / "kitchen" / "rgb_00008.jpg"
    image = Image.open(path).convert(mode)
    image.save(path.with_suffix(".png"))
    os.replace(path.with_suffix(".png"), path)  # a PNG under the .jpg name: PIL reads the content
    results = evaluation.main(median_args(data))
    assert results["count"] == 6


def test_unknown_model_name_lists_the_choices(capsys, data):
    line = error_line(capsys, median_args(data, "--method", "monoclip", "--clip_model", "RN42"))
    assert "RN42" in line and "RN50" in line and "ViT-B/32" in line and "path" in line


def test_output_folder_problems_fail_before_evaluating(capsys, data, tmp_path):
    line = error_line(capsys, median_args(data, "--output", str(tmp_path / "missing" / "r.json")))
    assert str(tmp_path / "missing") in line and "does not exist" in line
    line = error_line(capsys, median_args(data, "--output", str(tmp_path)))
    assert "is a directory" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_folder_fails_before_evaluating(capsys, data, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    line = error_line(capsys, median_args(data, "--output", str(locked / "r.json")))
    assert "not writable" in line


@pytest.mark.parametrize("argv, found", [
    (["--bins", "1,two,3"], "'two' is not a number"),
    (["--depth_classes", "near,,far"], "empty item"),
    (["--prompt_set", "prompt9"], "invalid choice: 'prompt9'"),
    (["--prompt_set", "paper", "--depth_classes", "near,far"], "not both"),
])
def test_command_line_mistakes_are_one_line(capsys, data, argv, found):
    assert found in error_line(capsys, median_args(data, *argv), code=2)


@pytest.mark.parametrize("kwargs, found", [
    (dict(bins=[1.0, 2.0]), "2 bins [1.0, 2.0] for 7 depth words"),
    (dict(depth_classes=[], bins=[]), "depth_classes is empty"),
    (dict(bins=[1, 1.5, 2, 2.25, 2.5, 0, 3]), "bin 0 is not a positive number"),
    (dict(bins=[1, 1.5, 2, 2.25, 2.5, "far", 3]), "bin 'far' is not a positive number"),
    (dict(temperature=0), "temperature 0 must be a number > 0"),
    (dict(temperature=-1.0), "temperature -1.0 must be"),
    (dict(templates=["This {} is close"]), "template 'This {} is close' needs exactly two"),
    (dict(templates=[]), "templates is empty"),
    (dict(objects=[]), "objects is empty"),
    (dict(depth_classes="prompt9"), "unknown prompt set 'prompt9'"),
    (dict(bins="class9"), "unknown bin set 'class9'"),
    (dict(features="pixels"), "unknown features 'pixels'"),
])
def test_invalid_method_settings_are_rejected_at_construction(kwargs, found):
    with pytest.raises(ValueError) as error:
        MonoCLIP("no-checkpoint-needed.pt", device="cpu", **kwargs)
    assert found in str(error.value)


def test_cuda_without_a_gpu_is_an_error_not_a_fallback(capsys, data, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    line = error_line(capsys, median_args(data, "--device", "cuda"))
    assert "no CUDA GPU" in line and "--device cpu" in line


def test_fp16_on_cpu_points_to_fp32_or_bf16(capsys, data, checkpoint):
    line = error_line(capsys, median_args(data, "--method", "monoclip", "--clip_model", checkpoint,
                                          "--device", "cpu", "--precision", "fp16"))
    assert "fp16 needs a CUDA GPU" in line and "fp32 or bf16" in line


def test_command_line_prints_one_line_and_debug_shows_the_traceback(tmp_path):
    command = [sys.executable, os.path.join(ROOT, "eval.py"), "--data_path", str(tmp_path), "--method", "median"]
    plain = subprocess.run(command, capture_output=True, text=True)
    assert plain.returncode == 1 and plain.stdout == ""
    assert plain.stderr.count("\n") == 1 and plain.stderr.startswith("error: no NYU test split")
    debug = subprocess.run(command + ["--debug"], capture_output=True, text=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "DataError" in debug.stderr
