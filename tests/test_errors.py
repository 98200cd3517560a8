"""Every bad input ends with one line on stderr naming the thing and what to do, a non-zero exit status,
no traceback (unless --debug) and nothing half-written; every such line is quoted in docs/troubleshooting.md."""
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image

import cli
import eval as evaluation
from conftest import ROOT
from datasets import NYUDepthV2, normalized
from datasets.nyu import RGB_CROP_BOX
from monoclip import MonoCLIP


def documented_patterns():
    """The messages quoted in docs/troubleshooting.md's tables, as regular expressions ('…' matches anything)."""
    with open(os.path.join(ROOT, "docs", "troubleshooting.md")) as f:
        cells = [line.split(" | ")[0].lstrip("| ") for line in f if line.startswith("| `")]
    quoted = [text for cell in cells for text in re.findall(r"`([^`]+)`", cell)]
    return [re.compile(".*".join(re.escape(part) for part in text.split("…"))) for text in quoted]


PATTERNS = documented_patterns()


def documented(message):
    """True if the message (without 'error: ') is quoted in docs/troubleshooting.md."""
    return any(pattern.fullmatch(message) for pattern in PATTERNS)


def error_line(capsys, argv, code=1):
    """Run eval.py's main through the same wrapper as the command line; return its single stderr line,
    after checking that docs/troubleshooting.md quotes it."""
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda: evaluation.main(argv))
    assert exit_info.value.code == code
    lines = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in lines if not line.startswith("eval:")]  # the progress bar, if it started
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert documented(lines[0][len("error: "):]), f"not quoted in docs/troubleshooting.md: {lines[0]}"
    return lines[0]


@pytest.fixture
def data(nyu_like, tmp_path):
    """A private copy of the NYU-like folder that a test may break."""
    root = tmp_path / "data"
    shutil.copytree(nyu_like, root)
    return root


def split(root):
    return root / "official_splits" / "test"


def constant_args(root, *extra):
    """The constant baseline: the quickest run, which reads the depth files but not the RGB."""
    return ["--data_path", str(root), "--testfile_nyu", "auto", "--method", "constant", "--workers", "0", *extra]


def depthclip_args(root, checkpoint, *extra):
    """DepthCLIP, which reads the RGB too."""
    return constant_args(root, "--method", "monoclip", "--clip_model", checkpoint, *extra)


def test_missing_data_path_names_the_expected_folder(capsys, tmp_path):
    line = error_line(capsys, constant_args(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere" / "official_splits" / "test") in line and "datasets.prepare_nyu" in line


def test_missing_listed_files_are_counted_and_auto_suggested(capsys, data, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("bathroom/rgb_00001.jpg bathroom/sync_depth_00001.png\n"
                       "bedroom/rgb_00002.jpg bedroom/sync_depth_00002.png\n"
                       "bedroom/rgb_00003.jpg bedroom/sync_depth_00003.png\n")
    line = error_line(capsys, constant_args(data, "--testfile_nyu", str(listing)))
    assert "4 files" in line and "bedroom/rgb_00002.jpg" in line and "--testfile_nyu auto" in line


def test_python_api_errors_name_the_argument_too(data, tmp_path):
    from datasets import DataError, NYUDepthV2
    with pytest.raises(DataError, match=r"test_list='auto'"):
        NYUDepthV2(str(data), str(tmp_path / "no-list.txt"))


def test_malformed_list_line_is_given_by_number(capsys, data, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("bathroom/rgb_00001.jpg bathroom/sync_depth_00001.png\n\nkitchen/rgb_00008.jpg\n")
    line = error_line(capsys, constant_args(data, "--testfile_nyu", str(listing)))
    assert line == f"error: {listing}, line 3: 'kitchen/rgb_00008.jpg' should name an RGB file and a depth file, " \
                   f"separated by a space"

@pytest.mark.parametrize("workers", ["0", "1"])
@pytest.mark.parametrize("name", ["bathroom/rgb_00022.jpg", "kitchen/sync_depth_00008.png"])
def test_corrupt_or_truncated_file_is_named(capsys, data, checkpoint, tmp_path, name, workers):
    path = split(data) / name
    path.write_bytes(path.read_bytes()[:2000])
    out = tmp_path / "r.json"
    line = error_line(capsys, depthclip_args(data, checkpoint, "--workers", workers, "--output", str(out)))
    assert str(path) in line and "corrupt or truncated" in line
    assert not out.exists() and os.listdir(tmp_path) == ["data"]


@pytest.mark.parametrize("mode, said", [("L", "8-bit grayscale"), ("RGB", "8-bit RGB")])
def test_depth_png_that_is_not_16_bit_is_rejected(capsys, data, mode, said):
    path = split(data) / "kitchen" / "sync_depth_00008.png"
    Image.new(mode, (640, 480)).save(path)
    line = error_line(capsys, constant_args(data))
    assert line == f"error: {path} is {said}, not 16-bit: NYU depth must be a 16-bit grayscale PNG in millimetres"


def test_rgb_of_the_wrong_size_is_rejected(capsys, data, checkpoint):
    path = split(data) / "kitchen" / "rgb_00008.jpg"
    Image.new("RGB", (800, 600)).save(path)
    line = error_line(capsys, depthclip_args(data, checkpoint, "--limit", "3"))
    assert str(path) in line and "800x600" in line and "640x480" in line


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_grayscale_rgba_and_palette_rgb_are_converted(data, mode):
    path = split(data) / "kitchen" / "rgb_00008.jpg"
    image = Image.open(path).convert(mode)
    image.save(path.with_suffix(".png"))
    os.replace(path.with_suffix(".png"), path)  # a PNG under the .jpg name: PIL reads the content
    rgb, _, file = NYUDepthV2(str(data), "auto")[2]
    assert file == "kitchen/rgb_00008.jpg" and rgb.shape == (3, 416, 544)
    expected = normalized(image.convert("RGB").crop(RGB_CROP_BOX))
    torch.testing.assert_close(rgb, expected, atol=0, rtol=0)


def test_unknown_model_name_lists_the_choices(capsys, data):
    line = error_line(capsys, constant_args(data, "--method", "monoclip", "--clip_model", "RN42"))
    assert "RN42" in line and "RN50" in line and "ViT-B/32" in line and "path" in line


def test_missing_checkpoint_file_and_text_file_checkpoint(capsys, data, tmp_path):
    line = error_line(capsys, constant_args(data, "--method", "monoclip", "--clip_model", "rn5O.pt"))
    assert line.startswith("error: rn5O.pt: no such file")
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    line = error_line(capsys, constant_args(data, "--method", "monoclip", "--clip_model", str(text)))
    assert "is not a CLIP checkpoint: it is neither a TorchScript archive nor a file written by torch.save" in line


def test_output_folder_problems_fail_before_evaluating(capsys, data, tmp_path):
    line = error_line(capsys, constant_args(data, "--output", str(tmp_path)))
    assert "is a directory" in line


def test_output_into_a_missing_folder_creates_it_as_predict_does(data, tmp_path):
    evaluation.main(constant_args(data, "--output", str(tmp_path / "new" / "deeper" / "r.json")))
    assert os.listdir(tmp_path / "new" / "deeper") == ["r.json"]


def test_unwritable_output_fails_at_startup_naming_what_was_typed(capsys, data):
    """/sys refuses new files even to root, as a read-only mount or a full disk would."""
    line = error_line(capsys, constant_args(data, "--output", "/sys/r.json", "--data_path", "/nowhere"))
    assert line == "error: --output /sys/r.json cannot be written (Permission denied); choose another place"


def test_failed_run_leaves_no_output_and_no_empty_picture_folder(capsys, data, tmp_path):
    pictures, out = tmp_path / "pictures", tmp_path / "r.json"
    (split(data) / "kitchen" / "rgb_00008.jpg").write_bytes(b"broken")
    error_line(capsys, constant_args(data, "--img_save", str(pictures), "--output", str(out)))
    assert sorted(os.listdir(tmp_path)) == ["data"]


@pytest.mark.parametrize("argv, found", [
    (["--bins", "1,two,3"], "'two' is not a number"),
    (["--depth_classes", "near,,far"], "empty item"),
    (["--prompt_set", "prompt9"], "invalid choice: 'prompt9'"),
    (["--prompt_set", "paper", "--depth_classes", "near,far"], "not both"),
])
def test_command_line_mistakes_are_one_line(capsys, data, argv, found):
    assert found in error_line(capsys, constant_args(data, *argv), code=2)


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
    assert found in str(error.value) and documented(str(error.value))


def test_cuda_without_a_gpu_is_an_error_not_a_fallback(capsys, data, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    line = error_line(capsys, constant_args(data, "--device", "cuda"))
    assert "no CUDA GPU" in line and "--device cpu" in line


def test_fp16_on_cpu_points_to_fp32_or_bf16(capsys, data, checkpoint):
    line = error_line(capsys, constant_args(data, "--method", "monoclip", "--clip_model", checkpoint,
                                          "--device", "cpu", "--precision", "fp16"))
    assert "fp16 needs a CUDA GPU" in line and "fp32 or bf16" in line


def test_command_line_prints_one_line_and_debug_shows_the_traceback(tmp_path):
    command = [sys.executable, os.path.join(ROOT, "eval.py"), "--data_path", str(tmp_path), "--method", "constant"]
    plain = subprocess.run(command, capture_output=True, text=True)
    assert plain.returncode == 1 and plain.stdout == ""
    assert plain.stderr.count("\n") == 1 and plain.stderr.startswith("error: no NYU test split")
    debug = subprocess.run(command + ["--debug"], capture_output=True, text=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "DataError" in debug.stderr
