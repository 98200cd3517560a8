"""train_scale.py: RSA's LanScale training (their loss written out, their schedule and data order), learning a known
scale and shift, resuming to the same weights, two processes equal to one, bad input in one line."""
import json
import os

import numpy as np
import pytest
import torch

import cli
import rsa
import train_scale
from conftest import torchrun
from synthetic.checkpoint import make_state_dict
from synthetic.rsa_train_like import write_dataset


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """LanScale is a small MLP: on a shared 2-core machine, torch's second thread waits more than it works."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsa_train")
    write_dataset(str(root), {"nyu": 4, "kitti": 4, "void": 4}, seed=0)
    return str(root)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A small CLIP (8-wide ResNet, 64-wide text tower and embedding): the text features mean nothing but differ
    per caption."""
    path = tmp_path_factory.mktemp("clip") / "tiny.pt"
    torch.save(make_state_dict(0, vision_width=8, embed_dim=64), path)
    return str(path)


def args_for(data, clip, out, *extra):
    return ["--clip_model", clip, "--output", str(out), "--device", "cpu", "--no_progress", "--captions",
            f"{data}/captions", "--batch_size", "2", "--val_count", "1", "--lr", "1e-3", "--end_lr", "1e-4",
            "--nyu_path", f"{data}/nyu", "--nyu_list", f"{data}/nyu/train_list.txt", "--nyu_relative",
            f"{data}/relative/nyu", "--kitti_path", f"{data}/kitti/raw", "--kitti_gt_path", f"{data}/kitti/gt",
            "--kitti_list", f"{data}/kitti/train_list.txt", "--kitti_relative", f"{data}/relative/kitti",
            "--void_path", f"{data}/void", "--void_list", f"{data}/void/train_image.txt", "--void_relative",
            f"{data}/relative/void", *extra]


def log_of(out):
    with open(str(out)[:-len(".safetensors")] + "_run/log.jsonl") as f:
        return [json.loads(line) for line in f]


def test_their_loss_written_out():
    """loss.py's L1Loss: per image, the pixel loss summed over min < gt < max, / (n + 1e-6), x (n + 1e-6) / (H W);
    summed over the batch. Huber with delta 1."""
    rng = np.random.RandomState(0)
    depth = rng.uniform(0.1, 12, (3, 5, 7)).astype(np.float32)
    gt = rng.uniform(-1, 14, (3, 1, 5, 7)).astype(np.float32)
    gt[2] = 0  # an image without a valid pixel adds 0
    pixel = {"L1": lambda d: np.abs(d), "L2": lambda d: d ** 2,
             "Huber": lambda d: np.where(np.abs(d) < 1, 0.5 * d ** 2, np.abs(d) - 0.5)}
    for name, f in pixel.items():
        expected = 0.0
        for b in range(3):
            valid = (gt[b, 0] > 0.2) & (gt[b, 0] < 10)
            n = valid.sum() + 1e-6
            expected += f(depth[b] - gt[b, 0])[valid].sum() / n * (n / 35)
        got = train_scale.scale_loss(torch.from_numpy(depth), torch.from_numpy(gt), 0.2, 10.0, name)
        assert got.item() == pytest.approx(expected, rel=1e-6), name


def test_their_schedule_and_normalization():
    assert train_scale.poly_lr(1, 6, 3e-5, 1e-5) == 3e-5  # their first step: Adam's own lr
    assert train_scale.poly_lr(2, 6, 3e-5, 1e-5) == pytest.approx(2e-5 * (5 / 6) ** 0.9 + 1e-5, rel=1e-12)
    losses = {"NYU": torch.tensor(4.0), "KITTI": torch.tensor(8.0), "VOID": torch.tensor(0.5)}
    parts, totals = train_scale.normalized(losses, 1, normalize_kitti=False)
    assert [p.item() for p in parts] == pytest.approx([1.0, 8.0, 1.0])  # KITTI's left as theirs (loss_kittt)
    parts, _ = train_scale.normalized(losses, 1, normalize_kitti=True)
    assert [p.item() for p in parts] == pytest.approx([1.0, 1.0, 1.0])
    assert totals == {"NYU": 4.0, "KITTI": 8.0, "VOID": 0.5}


def test_epoch_plan_follows_their_loaders():
    """An epoch ends at the shortest dataset's last batch (kept smaller); NYU and KITTI are reshuffled each epoch,
    VOID starts again at its list's head."""
    sizes = {"NYU": 7, "KITTI": 5, "VOID": 9}
    first, second = (train_scale.epoch_plan(sizes, 2, 0, epoch) for epoch in (0, 1))
    assert len(first) == 3 and [len(step["KITTI"]) for step in first] == [2, 2, 1]
    assert [step["VOID"] for step in first] == [step["VOID"] for step in second] == [[0, 1], [2, 3], [4, 5]]
    assert sorted(i for step in first for i in step["KITTI"]) == list(range(5))
    assert [step["NYU"] for step in first] != [step["NYU"] for step in second]


def test_training_finds_the_scale_and_shift(data, tiny_clip, tmp_path):
    """Each dataset's ground truth is 1 / (s r + t) with its own s and t: each dataset's loss over an epoch falls
    below the first epoch's (then wanders: a loss divided by its own value takes steps of the same size near its
    minimum). KITTI's, not normalized and farthest from the initial s and t, falls slowest: over seeds 0-3 the best
    epoch was at most 0.15 (NYU), 0.37 (VOID) and 0.75 (KITTI) of the first. The kept weights are written with the
    run's settings, loadable by rsa.load_scale_model."""
    out = tmp_path / "scale.safetensors"
    train_scale.main(args_for(data, tiny_clip, out, "--epochs", "8"))
    steps = [r for r in log_of(out) if "losses" in r]
    assert len(steps) == 8 * 2  # KITTI's 3 training images in batches of 2
    for name, factor in (("NYU", 0.5), ("VOID", 0.5), ("KITTI", 0.85)):
        epochs = [sum(r["losses"][name] for r in steps if r["epoch"] == e) for e in range(1, 9)]
        assert min(epochs[1:]) < factor * epochs[0], (name, epochs)
    model, settings = rsa.load_scale_model(str(out))
    assert settings["source"] == "train_scale.py" and settings["relative_kind"] == "disparity"
    assert settings["training"]["loss"] == "Huber" and settings["data"]["VOID"]["images"] == 4
    assert settings["kept"] == "best" and set(settings["validation"]) == {"NYU", "KITTI", "VOID"}
    assert os.path.isfile(tmp_path / "scale_run" / "curves.png")


class Interrupted(Exception):
    pass


def test_an_interrupted_run_resumes_to_the_same_weights(data, tiny_clip, tmp_path, monkeypatch):
    common = ["--epochs", "2", "--keep_last", "--cache", str(tmp_path / "c")]
    whole = tmp_path / "whole.safetensors"
    train_scale.main(args_for(data, tiny_clip, whole, *common))
    calls, original = [], train_scale.normalized

    def dies_in_epoch_two(*args):
        calls.append(1)
        if len(calls) == 3:  # epoch 2, step 1: as a kill would, after epoch 1's checkpoint
            raise Interrupted
        return original(*args)
    monkeypatch.setattr(train_scale, "normalized", dies_in_epoch_two)
    cut = tmp_path / "cut.safetensors"
    with pytest.raises(Interrupted):
        train_scale.main(args_for(data, tiny_clip, cut, *common))
    assert not cut.exists()
    monkeypatch.undo()
    train_scale.main(args_for(data, tiny_clip, cut, *common, "--resume"))
    a, _ = rsa.load_scale_model(str(whole))
    b, _ = rsa.load_scale_model(str(cut))
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, atol=0, rtol=0, msg=name)
    assert [r["step"] for r in log_of(cut) if "losses" in r] == [1, 2, 3, 4]  # epoch 2's first try not logged twice


def test_two_processes_learn_what_one_does(data, tiny_clip, tmp_path):
    """torchrun, gloo on the CPU: each process takes half of each dataset's batch; the normalizing totals and the
    gradients are summed over the processes, so the run equals one process's."""
    common = ["--epochs", "1", "--keep_last", "--val_count", "0", "--cache", str(tmp_path / "c")]
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    train_scale.main(args_for(data, tiny_clip, one, *common))
    torchrun("train_scale.py", *args_for(data, tiny_clip, two, *common))
    a, _ = rsa.load_scale_model(str(one))
    b, settings = rsa.load_scale_model(str(two))
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):  # Adam divides by small gradients:
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0, msg=name)  # summing in another order moves a few by 2e-6
    for x, y in zip(log_of(one), log_of(two), strict=True):
        for name, value in x.get("losses", {}).items():
            assert value == pytest.approx(y["losses"][name], rel=1e-5)
    assert settings["processes"] == 2


def error_line(capsys, argv):
    with pytest.raises(SystemExit) as exit:
        cli.run(lambda: train_scale.main(argv))
    assert exit.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_bad_input_is_one_line_and_writes_nothing(data, tiny_clip, tmp_path, capsys):
    broken = tmp_path / "broken"
    write_dataset(str(broken), {"nyu": 2, "kitti": 2, "void": 2}, seed=1)
    out = tmp_path / "out" / "x.safetensors"
    caption = broken / "captions" / "kitti" / "train" / "2011_09_26" / "2011_09_26_drive_0002_sync" / "image_02" / \
        "data" / "0000000001.txt"
    os.rename(caption, str(caption) + ".moved")
    line = error_line(capsys, args_for(str(broken), tiny_clip, out))
    assert f"no caption file {caption}" in line
    os.rename(str(caption) + ".moved", caption)
    relative = broken / "relative" / "void" / "void_1500" / "data" / "place_1" / "image" / "1552097915.5333.npy"
    good = np.load(relative)
    np.save(relative, good[:, :320])
    line = error_line(capsys, args_for(str(broken), tiny_clip, out))
    assert f"{relative} is 480x320 but VOID's training ground truth is 480x640" in line
    np.save(relative, good - good.max())
    line = error_line(capsys, args_for(str(broken), tiny_clip, out, "--val_count", "0"))
    assert f"{relative}: the relative map has a negative inverse depth" in line
    np.save(relative, good * 0)
    line = error_line(capsys, args_for(str(broken), tiny_clip, out, "--val_count", "0", "--relative_kind", "depth"))
    assert "has a value at or below 0" in line
    assert not (tmp_path / "out").exists()  # neither the output nor the checkpoint folder
    line = error_line(capsys, args_for(data, tiny_clip, out, "--datasets", "NYU,KITTI", "--kitti_relative", ""))
    assert "--datasets has KITTI: give --kitti_relative" in line


def test_resume_continues_its_own_run_or_refuses(data, tiny_clip, tmp_path, capsys):
    """As train.py: a changed --epochs or --lr is refused naming both values, a damaged last.pt is named, and
    --resume without a checkpoint says so and trains."""
    out = tmp_path / "run.safetensors"
    train_scale.main(args_for(data, tiny_clip, out, "--epochs", "1", "--resume"))
    assert "no checkpoint" in capsys.readouterr().err and out.exists()
    line = error_line(capsys, args_for(data, tiny_clip, out, "--epochs", "2", "--resume"))
    assert "--epochs 2 (the run has 1)" in line and f"--init {out}" in line
    line = error_line(capsys, args_for(data, tiny_clip, out, "--epochs", "1", "--lr", "0.5", "--resume"))
    assert "--lr 0.5 (the run has 0.001)" in line
    (tmp_path / "run_run" / "last.pt").write_bytes(b"PK\x03\x04 cut short")
    line = error_line(capsys, args_for(data, tiny_clip, out, "--epochs", "1", "--resume"))
    assert "last.pt is damaged or truncated" in line
