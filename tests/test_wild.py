"""Photos, folders and the first hour, as a new user meets them: every pixel read right, no user file lost, no run
stopped or lost for one bad thing, every script runnable by its path. Each case's expected value is the right one,
computed here independently."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import cli
import eval as evaluation
import feature_cache
import open_clip_adapter
import predict
import visualize
from conftest import ROOT, optional
from datasets import DataError, to_rgb
from synthetic.nyu_like import write_dataset
from test_errors import documented


def room(seed=3, size=(96, 128)):
    """A smooth 8-bit grayscale picture (H, W) uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[0], 0:size[1]]
    return np.clip(40 + 150 * (x / size[1]) + 30 * np.sin(y / 9) + rng.normal(0, 3, size), 0, 255).astype(np.uint8)


def predict_main(capsys, argv, code=0):
    """predict.py's main through the command-line wrapper: (exit code, stdout, stderr lines)."""
    try:
        cli.run(lambda: predict.main(argv))
        exit_code = 0
    except SystemExit as exit_info:
        exit_code = exit_info.code
    out, err = capsys.readouterr()
    assert exit_code == code, err
    return out, [line for line in err.splitlines() if line.strip() and "predict:" not in line]


# ---------------------------------------------------------------- 1. every image mode reaches the model right
def test_16bit_and_float_images_give_the_depth_of_the_8bit_one(model, tmp_path, capsys):
    gray = room()
    Image.fromarray(gray).save(tmp_path / "eight.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")  # 16-bit: value x 257
    Image.fromarray(gray.astype(np.float32) / 255.0).save(tmp_path / "float.tiff")  # float 0..1
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")
    out = tmp_path / "out"
    predict_main(capsys, [str(tmp_path), "-o", str(out), "--clip_model", model.clip_model, "--device", "cpu", "--npy"])
    depths = {name: np.load(out / f"{name}_depth.npy") for name in ("eight", "sixteen", "float")}
    np.testing.assert_array_equal(depths["sixteen"], depths["eight"])
    np.testing.assert_array_equal(depths["float"], depths["eight"])


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "F", "L", "LA", "P", "RGBA"])
def test_every_mode_becomes_the_rgb_a_viewer_shows(mode):
    gray = room(size=(8, 10))
    alpha = np.where(np.arange(10) < 5, 255, 0).astype(np.uint8)[None].repeat(8, 0)  # right half transparent
    if mode in ("I;16", "I;16B", "I"):
        image = Image.fromarray(gray.astype(np.uint16) * 257)
        image = image if mode == "I;16" else image.convert(mode) if mode == "I" else Image.frombytes(
            "I;16B", image.size, (gray.astype(">u2") * 257).tobytes())
        expected, flattened = np.stack([gray] * 3, -1), False
    elif mode == "F":
        image, expected, flattened = Image.fromarray(gray / np.float32(255)), np.stack([gray] * 3, -1), False
    elif mode == "L":
        image, expected, flattened = Image.fromarray(gray), np.stack([gray] * 3, -1), False
    elif mode == "P":  # a palette whose index 0 is transparent
        image = Image.fromarray(gray).convert("P")
        image.info["transparency"] = 0
        index = np.asarray(image)
        palette = np.asarray(image.getpalette()[:768], np.uint8).reshape(-1, 3)
        expected = np.where((index == 0)[..., None], 255, palette[index])
        flattened = True
    else:
        rgb = np.stack([gray] * 3, -1)
        image = Image.fromarray(np.dstack([gray, alpha])) if mode == "LA" else \
            Image.fromarray(np.dstack([rgb, alpha]))
        a = alpha[..., None] / 255.0
        expected, flattened = np.round(rgb * a + 255 * (1 - a)).astype(np.uint8), True  # over white
    rgb, had_alpha = to_rgb(image)
    assert rgb.mode == "RGB" and had_alpha == flattened
    np.testing.assert_allclose(np.asarray(rgb, np.int16), expected.astype(np.int16), atol=1)


@pytest.mark.parametrize("values, mode, said", [
    (np.array([[0.0, 2.5]], np.float32), "F", "32-bit float with values 0..2.5, outside 0..1"),
    (np.array([[0, 70000]], np.int32), "I", "32-bit integer with values 0..70000, outside 0..65535"),
])
def test_out_of_range_images_are_refused_not_saturated(values, mode, said):
    with pytest.raises(DataError, match=f"photo.tif is {said}: convert it to an 8-bit image first"):
        to_rgb(Image.fromarray(values), "photo.tif")
    assert documented(f"photo.tif is {said}: convert it to an 8-bit image first")


def test_transparency_is_said_once(model, tmp_path, capsys):
    Image.fromarray(np.dstack([room()] * 3 + [room(4)])).save(tmp_path / "cutout.png")
    out, _ = predict_main(capsys, [str(tmp_path / "cutout.png"), "--clip_model", model.clip_model, "--device", "cpu"])
    assert out.count("transparency flattened over white") == 1


# ---------------------------------------------------------------- 2. no user file lost
@pytest.fixture
def folder_with_a_users_file(tmp_path):
    Image.fromarray(room(1)).convert("RGB").save(tmp_path / "room.jpg")
    Image.fromarray(room(2)).convert("RGB").save(tmp_path / "room.png")
    Image.fromarray(np.full((4, 4), 7, np.uint16)).save(tmp_path / "room_depth.png")  # the user's own file
    return tmp_path


def test_predict_never_replaces_a_users_file_nor_maps_two_inputs_to_one_name(model, folder_with_a_users_file, capsys):
    folder, users = folder_with_a_users_file, (folder_with_a_users_file / "room_depth.png").read_bytes()
    out, _ = predict_main(capsys, [str(folder), "--clip_model", model.clip_model, "--device", "cpu"])
    assert out.startswith("2 depth map(s) written")
    assert (folder / "room_depth.png").read_bytes() == users
    jpg, png = np.asarray(Image.open(folder / "room.jpg_depth.png")), np.asarray(Image.open(folder / "room.png_depth.png"))
    assert jpg.shape == png.shape == (96, 128) and not np.array_equal(jpg, png)
    # a second run: its own outputs are not inputs, and it replaces nothing without --overwrite
    before = sorted(os.listdir(folder))
    _, err = predict_main(capsys, [str(folder), "--clip_model", model.clip_model, "--device", "cpu"], code=1)
    assert err[-1].startswith("error: 4 output file(s) already exist") and documented(err[-1][len("error: "):])
    assert sorted(os.listdir(folder)) == before
    out, _ = predict_main(capsys, [str(folder), "--clip_model", model.clip_model, "--device", "cpu", "--overwrite"])
    assert out.startswith("2 depth map(s) written") and sorted(os.listdir(folder)) == before


def test_output_names_never_collide():
    inputs = ["d/room.jpg", "d/room.png", "d/room.jpg.png", "d/hall.jpg"]
    names = predict.output_names(inputs)
    assert len(set(names.values())) == len(inputs) and names["d/hall.jpg"] == "hall"


# ---------------------------------------------------------------- 3. no format changes a value without saying so
def test_depth_beyond_65_metres_keeps_its_values_in_the_png(model, tmp_path, capsys):
    photo = os.path.join(ROOT, "examples", "synthetic_road.jpg")
    _, err = predict_main(capsys, [photo, "-o", str(tmp_path), "--clip_model", model.clip_model, "--device", "cpu",
                                   "--bins", "20,30,40,50,60,70,80", "--npy"])
    depth = np.load(tmp_path / "synthetic_road_depth.npy")
    assert depth.dtype == np.float32 and depth.max() > 65.535  # the case that a millimetre PNG clips
    png = Image.open(tmp_path / "synthetic_road_depth.png")
    assert png.text["depth_scale"] == "256"
    np.testing.assert_allclose(np.asarray(png, np.float64) / 256, depth, atol=0.5 / 256 + 1e-5)
    assert any("holds depth x 256" in line for line in err)


def test_depth_png_picks_millimetres_when_they_hold_the_range_and_reports_clipping():
    near = visualize.depth_png(np.array([[1.0, 65.535]]))
    assert near.scale == 1000 and near.clipped == 0 and visualize.png_note("x.png", near) is None
    far = visualize.depth_png(np.array([[1.0, 300.0, 10.0, 400.0]]))
    assert far.scale == 256 and far.clipped == 0.5 and "50.0% of the pixels" in visualize.png_note("x.png", far)


# ---------------------------------------------------------------- 4. an image without ground truth
def test_image_without_valid_ground_truth_is_left_out_of_the_means(checkpoint, tmp_path, capsys):
    root = tmp_path / "nyu"
    write_dataset(str(root), count=3, seed=0)
    Image.fromarray(np.zeros((480, 640), np.uint16)).save(root / "official_splits/test/bathroom/sync_depth_00001.png")
    out = tmp_path / "r.json"
    evaluation.main(["--data_path", str(root), "--testfile_nyu", "auto", "--clip_model", checkpoint, "--workers", "0",
                     "--output", str(out)])
    err = capsys.readouterr().err
    assert "warning: bathroom/rgb_00001.jpg: no pixel with valid ground truth in the scored region" in err
    text = out.read_text()
    assert "NaN" not in text
    r = json.loads(text)
    assert r["count"] == 2 and [row["file"] for row in r["per_image"]] == ["kitchen/rgb_00008.jpg",
                                                                          "living_room/rgb_00015.jpg"]
    assert r["unscored"] == [{"file": "bathroom/rgb_00001.jpg", "reason": evaluation.UNSCORED}]
    expected = dict(a1=0.014893, a2=0.123718, a3=0.582310, abs_rel=0.485195, log10=0.293083, rmse=2.709551)
    for name, value in expected.items():  # the means over the two scorable images
        assert r["metrics"][name] == pytest.approx(value, abs=1e-6), name
        assert r["metrics"][name] == pytest.approx(np.mean([row[name] for row in r["per_image"]]), abs=1e-12)


def test_results_are_strict_json():
    with pytest.raises(ValueError):
        cli.json_text({"a1": float("nan")})


# ---------------------------------------------------------------- 5. one bad entry does not stop a folder
def test_bad_entries_are_skipped_with_their_reason_and_the_rest_is_done(model, tmp_path, capsys):
    Image.fromarray(room()).save(tmp_path / "room.jpg")
    (tmp_path / "._room.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "x.jpg")
    (tmp_path / "holiday.jpg").mkdir()
    Image.fromarray(room(5)).save(tmp_path / "zebra.png")  # after the bad entries
    out, err = predict_main(capsys, [str(tmp_path), "--clip_model", model.clip_model, "--device", "cpu"], code=1)
    assert out.startswith("2 depth map(s) written")
    assert (tmp_path / "room_depth.png").exists() and (tmp_path / "zebra_depth.png").exists()
    reasons = {"._room.jpg": "not an image Pillow can read", "holiday.jpg": "it is a folder, not an image",
               "x.jpg": "it is a link to"}
    warnings = [line for line in err if line.startswith("warning: skipped: ")]
    assert len(warnings) == 3
    for name, reason in reasons.items():
        line = next(w for w in warnings if f"{tmp_path / name}:" in w)
        assert reason in line and documented(line[len("warning: skipped: "):])
    assert err[-1] == "error: 3 of 5 entries skipped, not images (each named above)" and documented(err[-1][7:])


# ---------------------------------------------------------------- 6. a full disk loses nothing
def full_disk(monkeypatch, after=0):
    """Every file written through cli's temporary twins fails with 'No space left on device' after `after` files."""
    real = os.fdopen
    count = {"files": 0}

    class Full(io.RawIOBase):
        def writable(self):
            return True

        def write(self, data):
            raise OSError(28, "No space left on device")

    def fdopen(fd, mode="r", *args, **kwargs):
        count["files"] += 1
        if "w" in mode and count["files"] > after:
            os.close(fd)
            return io.BufferedWriter(Full())
        return real(fd, mode, *args, **kwargs)
    monkeypatch.setattr(cli.os, "fdopen", fdopen)


def test_full_disk_keeps_the_results_in_a_fallback_file(nyu_like, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.json"
    real_open = open

    def open_full(path, mode="r", *args, **kwargs):
        if str(path).endswith(".part") and "w" in mode:
            raise OSError(28, "No space left on device")
        return real_open(path, mode, *args, **kwargs)
    monkeypatch.setattr("builtins.open", open_full)
    with pytest.raises(SystemExit):
        cli.run(lambda: evaluation.main(["--data_path", nyu_like, "--testfile_nyu", "auto", "--method", "constant",
                                         "--workers", "0", "--limit", "2", "--output", str(out)]))
    monkeypatch.undo()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: --output {out} cannot be written (No space left on device); the results were "
                           f"written to ") and documented(line[len("error: "):])
    fallback = line.split("written to ")[1].split(" instead")[0]
    assert json.load(open(fallback))["count"] == 2
    os.remove(fallback)
    assert os.listdir(tmp_path) == []  # nothing half-written


def test_full_disk_in_predict_leaves_no_half_of_an_image(model, tmp_path, capsys, monkeypatch):
    Image.fromarray(room()).save(tmp_path / "room.jpg")
    full_disk(monkeypatch, after=1)  # the depth PNG's twin is written, the colour picture's is not
    _, err = predict_main(capsys, [str(tmp_path / "room.jpg"), "--clip_model", model.clip_model, "--device", "cpu"],
                          code=1)
    assert err[-1].startswith(f"error: cannot write {tmp_path / 'room_depth_color.png'} (No space left on device)")
    assert documented(err[-1][len("error: "):]) and os.listdir(tmp_path) == ["room.jpg"]


def test_a_cache_that_cannot_be_written_warns_once_and_the_run_goes_on(model, nyu_like, tmp_path, capsys,
                                                                      monkeypatch):
    full_disk(monkeypatch)
    cache = feature_cache.FeatureCache(str(tmp_path), {"weights": "x"})
    from datasets.nyu import load_rgb
    files = [os.path.join(nyu_like, "official_splits/test", f) for f in ("bathroom/rgb_00001.jpg",
                                                                         "kitchen/rgb_00008.jpg")]
    patches, _ = cache.view_features(model, files, load_rgb)  # images, then their mirror images
    expected, _ = model.view_features(torch.stack([load_rgb(f) for f in files]))
    torch.testing.assert_close(patches, expected, atol=0, rtol=0)
    assert cache.misses == 4 and not any(name.endswith(".npy") for _, _, names in os.walk(tmp_path) for name in names)
    assert capsys.readouterr().err.count("going on without caching") == 1


# ---------------------------------------------------------------- 7. a prompt longer than CLIP reads
LONG = " ".join(["word"] * 80)


def test_long_prompt_is_refused_before_any_model_loads(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        evaluation.main(["--depth_classes", f"near,{LONG}", "--bins", "1,2", "--clip_model", "/nonexistent.pt"])
    line = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "--depth_classes/--prompt_set, --templates and --objects: the prompt" in line
    assert "is 85 tokens long, more than the 77 CLIP's text tower reads" in line and documented(line[7:])
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps([{"name": "ok"}, {"name": "long", "templates": ["This {} is {} " + LONG]}]))
    with pytest.raises(ValueError, match=r"--sweep .*, entry 2 \('long'\): the prompt .* is 8\d tokens long"):
        evaluation.main(["--sweep", str(sweep), "--clip_model", "/nonexistent.pt"])


# ---------------------------------------------------------------- 8. every script runs by its path and with -m
SCRIPTS = ["eval.py", "predict.py", "demo.py", "bench.py", "table.py", "datasets/prepare_nyu.py",
           "datasets/prepare_kitti.py", "synthetic/checkpoint.py", "synthetic/nyu_like.py", "synthetic/kitti_like.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_runs_both_ways_from_another_folder(script, tmp_path):
    by_path = subprocess.run([sys.executable, os.path.join(ROOT, script), "--help"], cwd=tmp_path,
                             capture_output=True, text=True)
    assert by_path.returncode == 0 and "usage" in by_path.stdout.lower(), by_path.stderr
    module = script[:-3].replace("/", ".")
    as_module = subprocess.run([sys.executable, "-m", module, "--help"], cwd=tmp_path, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": ROOT})
    assert as_module.returncode == 0 and as_module.stdout == by_path.stdout.replace(os.path.basename(script),
                                                                                  os.path.basename(script))


# ---------------------------------------------------------------- 9. a broken optional package
def test_a_package_that_fails_to_import_skips_its_tests_with_the_reason(tmp_path, monkeypatch):
    (tmp_path / "brokenpkg.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(pytest.skip.Exception, match="RuntimeError: operator torchvision::nms does not exist"):
        optional("brokenpkg")


def test_torch_and_a_torchvision_of_another_release_are_named_with_the_fix(monkeypatch):
    minor = int(torch.__version__.split(".")[1])
    real = open_clip_adapter.importlib.metadata.version
    monkeypatch.setattr(open_clip_adapter.importlib.metadata, "version",
                        lambda name: "0.16.0" if name == "torchvision" else real(name))
    line = open_clip_adapter.torchvision_mismatch()
    assert line == (f"torch {torch.__version__} and torchvision 0.16.0 do not belong together (torch 2.{minor} pairs "
                    f"with torchvision 0.{minor + 15}); fix it with: pip install \"torchvision==0.{minor + 15}.*\"")
    monkeypatch.setattr(open_clip_adapter.importlib.metadata, "version",
                        lambda name: f"0.{minor + 15}.1" if name == "torchvision" else real(name))
    assert open_clip_adapter.torchvision_mismatch() is None


# ---------------------------------------------------------------- 12. messages
def test_a_folder_as_clip_model_is_called_a_folder(tmp_path, capsys, nyu_like):
    with pytest.raises(SystemExit):
        cli.run(lambda: evaluation.main(["--data_path", nyu_like, "--testfile_nyu", "auto", "--clip_model",
                                         str(tmp_path), "--limit", "1"]))
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: {tmp_path} is a folder; give the path of a CLIP checkpoint file in it")
    assert documented(line[len("error: "):])


def test_help_shows_real_defaults(capsys):
    with pytest.raises(SystemExit):
        evaluation.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: paper)" in text and "default: None" not in text and "(default: 0.1)" in text
    assert text.count("(default datasets/NYU_Depth_V2)") <= 1 and "KITTI's Eigen split" in text


def test_synthetic_generators_say_what_they_wrote(tmp_path):
    result = subprocess.run([sys.executable, "-m", "synthetic.nyu_like", str(tmp_path), "--count", "1"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.stdout.startswith(f"1 rooms written under {tmp_path}/official_splits/test (") and " MB)" in \
        result.stdout


# ---------------------------------------------------------------- 13. the colour picture
def test_a_flat_prediction_looks_flat_and_the_picture_is_titled():
    depth = np.tile(np.linspace(2.50, 2.52, 100), (40, 1))
    low, high = visualize.color_range(depth)
    assert high - low == pytest.approx(visualize.MIN_COLOR_SPAN) and low < 2.5 < 2.52 < high
    picture = visualize.depth_picture(depth, title="room.jpg: 2.50-2.52 m")
    assert picture.shape == (visualize.TITLE_HEIGHT + 40 + visualize.BAR_HEIGHT, 100, 3)
    body = picture[visualize.TITLE_HEIGHT:visualize.TITLE_HEIGHT + 40]
    spread = np.abs(body[:, -1].astype(int) - body[:, 0].astype(int)).max()
    full = np.abs(visualize.colorize(np.array([[1.0]]), 0, 1).astype(int)
                  - visualize.colorize(np.array([[0.0]]), 0, 1).astype(int)).max()
    assert spread < full / 10  # 2 cm spread over a 0.5 m scale: a few per cent of the colormap


def test_a_rename_that_fails_is_one_line_and_leaves_no_twin(tmp_path, monkeypatch):
    """files.write_files: a folder where a file should go is found before anything is written (all or none); a
    rename that fails later is one line too, its twins removed."""
    import files
    (tmp_path / "taken.png").mkdir()
    with pytest.raises(ValueError) as error:
        files.write_files({str(tmp_path / "a.png"): b"a", str(tmp_path / "taken.png"): b"b"}, "--output")
    assert str(error.value).startswith(f"cannot write {tmp_path / 'taken.png'}") and "(--output)" in str(error.value)
    assert sorted(os.listdir(tmp_path)) == ["taken.png"]
    monkeypatch.setattr(files.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(13, "Permission denied")))
    with pytest.raises(ValueError, match="Permission denied"):
        files.write_files({str(tmp_path / "b.png"): b"b"}, "--output")
    assert sorted(os.listdir(tmp_path)) == ["taken.png"]
