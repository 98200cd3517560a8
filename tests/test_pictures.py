"""eval.py --img_save / --img_save_bins pictures, and predict.py on photos of any size, mode and orientation."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import eval as evaluation
import predict
import visualize
from calculate_error import score
from datasets import NORMALIZATIONS, NYUDepthV2
from protocols import NYU_METRICS


@pytest.fixture(scope="module")
def pictures(nyu_like, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("pictures")
    evaluation.main(["--data_path", nyu_like, "--testfile_nyu", "auto", "--workers", "0", "--clip_model", checkpoint,
                     "--batch_size", "4", "--temperature", "2", "--output", str(out / "r.json"),
                     "--img_save", str(out / "pics"), "--img_save_bins", "2"])
    with open(out / "r.json") as f:
        return out / "pics", json.load(f)


def test_a_panel_and_a_16bit_prediction_per_image(pictures):
    folder, results = pictures
    names = sorted(os.listdir(folder))
    files = [row["file"] for row in results["per_image"]]  # e.g. kitchen/rgb_00008.jpg -> kitchen_00008*.png
    expected = [f"{f.split('/')[0]}_{f.split('_')[-1][:-4]}{suffix}.png" for f in files for suffix in ("", "_depth")]
    expected.append(f"{files[2].split('/')[0]}_{files[2].split('_')[-1][:-4]}_bins.png")
    assert names == sorted(expected) and "kitchen_00008.png" in names
    panel = Image.open(folder / "bathroom_00001.png")
    assert panel.mode == "RGB" and panel.width == 3 * 544
    assert panel.height == visualize.TITLE_HEIGHT + 416 + visualize.BAR_HEIGHT  # titles, full resolution, colour bar
    depth = Image.open(folder / "bathroom_00001_depth.png")
    assert depth.mode.startswith("I;16") and depth.size == (640, 480)


def test_saved_predictions_rescore_to_the_reported_metrics(pictures, nyu_like):
    folder, results = pictures
    dataset = NYUDepthV2(nyu_like, "auto")
    for index, row in enumerate(results["per_image"]):
        frame = np.asarray(Image.open(evaluation.picture_name(str(folder), row["file"], "_depth")), np.float32)
        outside = frame.copy()
        outside[56:472, 60:604] = 0
        assert not outside.any()  # zeros outside the paste box
        pred = torch.from_numpy(frame[56:472, 60:604] / 1000.0)[None, None]
        errors = score(dataset[index][1][None], pred, "nyu_depthclip")
        for name in NYU_METRICS:  # millimetre rounding moves errors by 1e-4; a few pixels cross a delta threshold
            tolerance = dict(abs=5e-3) if name in ("a1", "a2", "a3") else dict(rel=1e-4)
            assert errors[name].item() == pytest.approx(row[name], **tolerance), name


def test_unknown_bins_image_fails_before_evaluating(nyu_like, tmp_path):
    with pytest.raises(ValueError, match="--img_save_bins 99: neither an index below 6 nor a file"):
        evaluation.main(["--data_path", nyu_like, "--testfile_nyu", "auto", "--clip_model", "/nonexistent.pt",
                         "--img_save", str(tmp_path), "--img_save_bins", "99"])
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Photos as people have them: grayscale, RGBA, palette, and a JPEG stored sideways with an EXIF rotation."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(5)
    rgb = Image.fromarray(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8))
    rgb.convert("L").save(folder / "gray.png")
    rgb.convert("RGBA").save(folder / "rgba.png")
    rgb.convert("P").save(folder / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    rgb.save(folder / "sideways.jpg", exif=exif)
    return folder


def test_predict_writes_depth_at_each_photo_size(photos, checkpoint, tmp_path):
    predict.main([str(photos), "-o", str(tmp_path), "--clip_model", checkpoint, "--device", "cpu"])
    sizes = {name: Image.open(tmp_path / f"{name}_depth.png").size for name in ("gray", "rgba", "palette", "sideways")}
    assert sizes == {"gray": (500, 300), "rgba": (500, 300), "palette": (500, 300), "sideways": (300, 500)}
    for name, (width, height) in sizes.items():
        assert Image.open(tmp_path / f"{name}_depth.png").mode.startswith("I;16")
        titled = height + visualize.TITLE_HEIGHT + visualize.BAR_HEIGHT  # a title with the file and range, a bar
        assert Image.open(tmp_path / f"{name}_depth_color.png").size == (width, titled)


def test_colour_picture_spans_the_predictions_own_range():
    """A 1-3 m map uses the whole colormap (2nd to 98th percentile), not the first third of a 0-3 m one."""
    depth = np.tile(np.linspace(1.0, 3.0, 200), (50, 1))
    picture = visualize.depth_picture(depth)
    low, high = np.percentile(depth, [2, 98])
    assert picture.shape == (50 + visualize.BAR_HEIGHT, 200, 3)
    np.testing.assert_array_equal(picture[0, 0], visualize.colorize(np.array([[low]]), low, high)[0, 0])
    np.testing.assert_array_equal(picture[0, 0], visualize.colorize(np.array([[0.0]]), 0, 1)[0, 0])  # colormap start
    np.testing.assert_array_equal(picture[0, -1], visualize.colorize(np.array([[1.0]]), 0, 1)[0, 0])  # and end


def test_predict_is_the_flip_averaged_upsampled_depth(photos, model, tmp_path):
    predict.main([str(photos / "sideways.jpg"), "-o", str(tmp_path), "--clip_model", model.clip_model,
                  "--device", "cpu"])
    saved = np.asarray(Image.open(tmp_path / "sideways_depth.png"), np.float64) / 1000.0  # (500, 300)
    upright = Image.open(photos / "sideways.jpg").transpose(Image.Transpose.ROTATE_270)  # 300 wide, 500 tall
    resized = np.asarray(upright.resize((320, 544), Image.BICUBIC), np.float32) / 255.0  # multiples of 32, long 544
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in NORMALIZATIONS["imagenet"])
    x = ((torch.from_numpy(resized).permute(2, 0, 1) - mean) / std)[None]
    with torch.inference_mode():
        depth = 0.5 * (model(x) + model(x.flip(3)).flip(3))  # (1, 1, 17, 10)
    expected = F.interpolate(depth, size=(500, 300), mode="bilinear", align_corners=True)[0, 0].numpy()
    assert np.abs(saved - expected).max() <= 0.0005 + 1e-6  # half a millimetre: the PNG's rounding


def test_predict_unreadable_image_is_named(tmp_path, checkpoint):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot read .*broken.jpg"):
        predict.main([str(tmp_path / "broken.jpg"), "--clip_model", checkpoint, "--device", "cpu"])
    assert os.listdir(tmp_path) == ["broken.jpg"]
