"""train.py: prompt learning that learns (a teacher prompt's depth is found again), resumes to the same tokens
after a kill -9, reads cached features to the same loss as the image tower, and refuses bad input in one line."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import numpy as np
import torch

import cli
import train
from conftest import ROOT, torchrun
from learned_prompts import LearnedPrompts
from synthetic.taught import write_taught_dataset
from test_errors import documented


@pytest.fixture(scope="module")
def taught(checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("taught")
    write_taught_dataset(str(root), checkpoint, count=24)
    return str(root)


def train_args(taught, checkpoint, out, *extra):
    return ["--data_path", taught, "--clip_model", checkpoint, "--output", str(out), "--batch_size", "4",
            "--val_count", "6", "--temperature", "0.15", "--device", "cpu", "--no_progress", *extra]


def log_of(out):
    with open(str(out)[:-len(".safetensors")] + "_run/log.jsonl") as f:
        return [json.loads(line) for line in f]


def test_training_finds_the_teachers_prompt_again(taught, checkpoint, tmp_path):
    out = tmp_path / "learned.safetensors"
    train.main(train_args(taught, checkpoint, out, "--epochs", "10", "--lr", "0.1", "--cache", str(tmp_path / "c")))
    vals = [r["val"] for r in log_of(out) if "val" in r]
    assert len(vals) == 11  # the initial tokens, then each epoch
    best = min(vals[1:], key=lambda v: v["abs_rel"])
    assert best["silog"] <= 0.5 * vals[0]["silog"] and best["a1"] > vals[0]["a1"]
    learned = LearnedPrompts.load(str(out))
    assert learned.source["validation"]["abs_rel"] == pytest.approx(best["abs_rel"])
    assert learned.source["training"]["lr"] == 0.1 and learned.visual_state is None
    assert os.path.isfile(tmp_path / "learned_run" / "curves.png")


def test_cached_features_give_the_image_towers_loss(taught, checkpoint, tmp_path):
    cached, uncached = tmp_path / "cached.safetensors", tmp_path / "uncached.safetensors"
    train.main(train_args(taught, checkpoint, cached, "--epochs", "1", "--cache", str(tmp_path / "c")))
    train.main(train_args(taught, checkpoint, uncached, "--epochs", "1"))
    a, b = log_of(cached), log_of(uncached)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        if "loss" in x:
            assert x["loss"] == pytest.approx(y["loss"], abs=1e-6)


def test_a_killed_run_resumes_to_the_same_tokens(taught, checkpoint, tmp_path):
    cache = str(tmp_path / "c")
    whole = tmp_path / "whole.safetensors"
    train.main(train_args(taught, checkpoint, whole, "--epochs", "3", "--keep_last", "--cache", cache))
    killed = tmp_path / "killed.safetensors"
    argv = [sys.executable, os.path.join(ROOT, "train.py"), *train_args(taught, checkpoint, killed, "--epochs", "3",
                                                                         "--keep_last", "--cache", cache)]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "killed_run" / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if log.exists() and any(json.loads(line).get("epoch") == 2 and "loss" in json.loads(line)
                                for line in log.read_text().splitlines() if line.strip()):
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # in the middle of epoch 2
    process.wait()
    assert not killed.exists()
    train.main(train_args(taught, checkpoint, killed, "--epochs", "3", "--keep_last", "--cache", cache, "--resume"))
    a, b = LearnedPrompts.load(str(whole)), LearnedPrompts.load(str(killed))
    for group in ("prompt", "depth"):
        torch.testing.assert_close(a.tokens[group], b.tokens[group], atol=1e-6, rtol=0)
    steps = [r["step"] for r in log_of(killed) if "loss" in r]
    assert steps == sorted(set(steps))  # the killed epoch's steps were not logged twice


def test_two_processes_learn_what_one_does(taught, checkpoint, tmp_path):
    """torchrun, gloo on the CPU: each process takes half of every batch; the loss is the whole batch's (their SILog
    pools the batch's pixels) and the token gradients are summed, so the run equals one process's."""
    common = ["--epochs", "1", "--lr", "0.1", "--keep_last", "--cache", str(tmp_path / "c")]
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    train.main(train_args(taught, checkpoint, one, *common))
    torchrun("train.py", *train_args(taught, checkpoint, two, *common))
    a, b = LearnedPrompts.load(str(one)), LearnedPrompts.load(str(two))
    for group in ("prompt", "depth"):  # Adam divides by small gradients: float rounding grows to ~1e-5 here
        torch.testing.assert_close(a.tokens[group], b.tokens[group], atol=5e-5, rtol=0)
    for x, y in zip(log_of(one), log_of(two), strict=True):
        assert x.get("loss", 0) == pytest.approx(y.get("loss", 0), abs=5e-5)
    assert b.source["processes"] == 2


def test_batchnorm_in_train_mode_adapts_the_statistics_into_the_file(taught, checkpoint, tmp_path):
    out = tmp_path / "bn.safetensors"
    train.main(train_args(taught, checkpoint, out, "--epochs", "1", "--bn", "train"))
    learned = LearnedPrompts.load(str(out))
    released = torch.load(checkpoint, weights_only=True)
    moved = [key for key, value in learned.visual_state.items() if key.endswith("running_mean")
             and not torch.allclose(value, released[f"visual.{key}"])]
    assert moved and learned.source["training"]["bn"] == "train"
    # validation runs BatchNorm on running statistics (their Lightning validation is in eval mode): before any step,
    # it scores what CLIP as released scores
    frozen = tmp_path / "frozen.safetensors"
    train.main(train_args(taught, checkpoint, frozen, "--epochs", "1"))
    assert log_of(out)[0]["val"]["silog"] == pytest.approx(log_of(frozen)[0]["val"]["silog"], rel=1e-4)


def error_line(capsys, argv, code):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda: train.main(argv))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert exit_info.value.code == code and len(lines) == 1, lines
    assert documented(lines[0][len("error: "):].split(" (see ")[0]), lines[0]
    return lines[0]


def test_bad_input_is_one_line_and_writes_nothing(taught, checkpoint, nyu_like, tmp_path, capsys, monkeypatch):
    out = tmp_path / "x.safetensors"
    line = error_line(capsys, train_args(nyu_like, checkpoint, out), 1)
    assert "no NYU train split" in line
    line = error_line(capsys, train_args(taught, checkpoint, out, "--bins", "dset-even-5"), 1)
    assert "5 bins for 7 depth tokens" in line
    line = error_line(capsys, train_args(taught, checkpoint, "/sys/x.safetensors"), 1)
    assert "--output /sys/x.safetensors cannot be written" in line
    line = error_line(capsys, train_args(taught, checkpoint, out, "--val_count", "24"), 1)
    assert "--val_count 24 leaves no training image" in line
    line = error_line(capsys, train_args(taught, checkpoint, out, "--bn", "train", "--cache", str(tmp_path)), 2)
    assert "--cache stores features of CLIP as released" in line
    monkeypatch.setattr(train, "silog", lambda *a: torch.tensor(float("nan")))
    line = error_line(capsys, train_args(taught, checkpoint, out, "--epochs", "1"), 1)
    assert "the loss is nan at epoch 1, step 1" in line
    monkeypatch.undo()
    train.main(train_args(taught, checkpoint, out, "--epochs", "1", "--cache", str(tmp_path / "c")))
    other = train_args(taught, checkpoint, out, "--epochs", "2", "--resume", "--depth_tokens", "learned-static-5",
                       "--bins", "dset-even-5")
    line = error_line(capsys, other, 1)
    assert "is a run of another layout or backbone" in line
    assert sorted(os.listdir(tmp_path)) == ["c", "x.safetensors", "x_run"]


def test_their_augmentation_written_out():
    """augment_full with known draws: the registered box, no rotation (u = 0.5), the crop at the drawn (x, y), a flip,
    gamma, brightness and colour as written out here. (Checked against their DataLoadPreprocess outside the repo:
    40 seeded draws equal to 3e-8.)"""
    from PIL import Image

    class Draws:
        def __init__(self):
            self.values = iter([0.5, 0.9, 0.9])  # rotation u, flip u, augment u
            self.ints = iter([7, 3])  # x, then y
            self.uniforms = iter([1.05, 0.8])  # gamma, brightness

        def random(self):
            return next(self.values)

        def randint(self, low, high):
            return next(self.ints)

        def uniform(self, low, high, size=None):
            return np.array([0.95, 1.0, 1.08]) if size else next(self.uniforms)

    rng = np.random.RandomState(0)
    rgb = rng.randint(0, 256, (480, 640, 3)).astype(np.uint8)
    depth = rng.randint(1, 9000, (480, 640)).astype(np.uint16)
    draws = Draws()
    image, gt = train.augment_full(Image.fromarray(rgb), Image.fromarray(depth), draws, draws, train.NYU_PIPELINE)
    left, top = 43 + 7, 45 + 3
    box = (slice(top, top + 416), slice(left, left + 544))
    expected = np.clip((rgb[box][:, ::-1] / np.float32(255)) ** 1.05 * 0.8 * np.array([0.95, 1.0, 1.08]), 0, 1)
    np.testing.assert_allclose(image, expected, atol=1e-6)
    np.testing.assert_allclose(gt[..., 0], depth[box][:, ::-1] / np.float32(1000), atol=1e-6)

    # KITTI (their kitti params): the benchmark crop (bottom 352 rows, centred 1216 columns), a random 352x704 crop,
    # no flip this time, brightness from U(0.9, 1.1), depth / 256
    rgb = rng.randint(0, 256, (375, 1242, 3)).astype(np.uint8)
    depth = rng.randint(0, 20000, (375, 1242)).astype(np.uint16)
    draws = Draws()
    draws.values = iter([0.5, 0.2, 0.9])
    draws.ints = iter([100, 0])
    draws.uniforms = iter([0.95, 1.05])
    image, gt = train.augment_full(Image.fromarray(rgb), Image.fromarray(depth), draws, draws, train.KITTI_PIPELINE)
    left, top = (1242 - 1216) // 2 + 100, 375 - 352
    box = (slice(top, top + 352), slice(left, left + 704))
    expected = np.clip((rgb[box] / np.float32(255)) ** 0.95 * 1.05 * np.array([0.95, 1.0, 1.08]), 0, 1)
    np.testing.assert_allclose(image, expected, atol=1e-6)
    np.testing.assert_allclose(gt[..., 0], depth[box] / np.float32(256), atol=1e-6)


def test_full_augmentation_trains_and_is_reproducible(taught, checkpoint, tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.safetensors"
        train.main(train_args(taught, checkpoint, out, "--epochs", "1", "--augment", "full", "--keep_last"))
        runs.append(LearnedPrompts.load(str(out)))
    assert torch.equal(runs[0].tokens["depth"], runs[1].tokens["depth"])
    assert runs[0].source["training"]["augment"] == "full"


def test_kitti_trains_on_the_benchmark_crop_from_the_cache_or_the_tower(checkpoint, tmp_path):
    """KITTI's Eigen training: the cached run (features read from disk every step: --keep_gb 0) has the image
    tower's losses; the held-out frames are scored; the file says what it trained on."""
    from synthetic.kitti_like import write_dataset
    listing = write_dataset(str(tmp_path / "kitti"), count=6)
    runs = {}
    for name, extra in (("cached", ["--cache", str(tmp_path / "c"), "--keep_gb", "0"]), ("tower", [])):
        out = tmp_path / f"{name}.safetensors"
        train.main(["--dataset", "kitti", "--data_path", str(tmp_path / "kitti"), "--trainfile", listing,
                    "--clip_model", checkpoint, "--output", str(out), "--batch_size", "2", "--val_count", "2",
                    "--epochs", "1", "--device", "cpu", "--no_progress", *extra])
        runs[name] = log_of(out)
    losses = [[r["loss"] for r in runs[name] if "loss" in r] for name in ("cached", "tower")]
    assert len(losses[0]) == 2 and losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert runs["cached"][-1]["val"]["abs_rel"] == pytest.approx(runs["tower"][-1]["val"]["abs_rel"], abs=1e-6)
    learned = LearnedPrompts.load(str(tmp_path / "cached.safetensors"))
    assert learned.source["training"]["dataset"] == "KITTI" and learned.source["data"]["split"] == "eigen_train"
    assert max(learned.bins) > 10  # KITTI's range (dset-even-7 over 0.001-80 m), not NYU's


def test_bts_lists_ship_and_the_sync_folder_reads(tmp_path):
    """BTS's training lists (gzipped, leading slashes as BTS writes them) and NYU's sync folder."""
    from PIL import Image
    from datasets import kitti, nyu
    from datasets.images import read_list
    assert len(read_list(nyu.BTS_TRAIN_LIST, "--trainfile")) == 24231
    assert len(read_list(kitti.TRAIN_LIST, "--trainfile")) == 23158
    first = read_list(nyu.BTS_TRAIN_LIST, "--trainfile")[0]
    assert first[0].startswith("/") and not first[1].startswith("/")  # the line as written, the path relative
    scene = tmp_path / "sync" / "kitchen_0028b"
    scene.mkdir(parents=True)
    Image.fromarray(np.zeros((480, 640, 3), np.uint8)).save(scene / "rgb_00045.jpg")
    Image.fromarray(np.full((480, 640), 2500, np.uint16)).save(scene / "sync_depth_00045.png")
    import gzip
    with gzip.open(tmp_path / "list.txt.gz", "wt") as f:
        f.write("/kitchen_0028b/rgb_00045.jpg /kitchen_0028b/sync_depth_00045.png 518.8579\n")
    data = nyu.NYUDepthV2(str(tmp_path), str(tmp_path / "list.txt.gz"), split="sync")
    rgb, gt, name = data[0]
    assert name == "kitchen_0028b/rgb_00045.jpg" and rgb.shape == (3, 416, 544) and float(gt.max()) == 2.5
    with pytest.raises(ValueError, match="no NYU sync split at .*unzip BTS's sync.zip"):
        nyu.NYUDepthV2(str(tmp_path / "elsewhere"), nyu.BTS_TRAIN_LIST, split="sync")


def test_nyu_split_flags_on_kitti_are_refused(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--dataset", "KITTI", "--train_split", "sync", "--clip_model", checkpoint, "--output",
                    str(tmp_path / "x.safetensors")])
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1].split("error: ", 1)[1]
    assert documented(line) and not os.listdir(tmp_path)
