"""train.py as Auty & Mikolajczyk's training computes it: BatchNorm in train mode over the whole batch in one pass,
--init from a prompts file or their checkpoint, learned prompts clamped to their training range, --resume that
continues the run it finds or refuses in one line, images without valid ground truth left out by name."""
import glob
import os

import numpy as np
import pytest
import torch
from PIL import Image

import options
import train
from conftest import torchrun
from learned_prompts import LearnedPrompts, bin_centres
from monoclip import MonoCLIP
from synthetic.auty_checkpoint import write_run
from synthetic.taught import write_taught_dataset
from test_errors import documented
from test_train import error_line


@pytest.fixture(scope="module")
def rooms(checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("rooms")
    write_taught_dataset(str(root), checkpoint, count=8)
    return str(root)


def args_for(rooms, checkpoint, out, *extra):
    return ["--data_path", rooms, "--clip_model", checkpoint, "--output", str(out), "--batch_size", "3",
            "--val_count", "2", "--device", "cpu", "--runtime", "torch", "--no_progress", *extra]


def parsed(argv):
    p = options.train_options()
    args = p.parse_args(argv)
    options.check_train_arguments(p, args)
    args.checkpoint_dir = os.path.splitext(args.output)[0] + "_run"
    return args


def test_a_train_mode_pass_is_one_pass_over_the_batch(checkpoint):
    """BatchNorm in train mode normalizes by the statistics of what one pass sees, and moves its running statistics
    once per pass: with the batch in one pass, the first BatchNorm's running mean moves by momentum x (the batch's
    mean - the old one), its running variance by momentum x (the batch's unbiased variance - the old one), as
    torch.nn.BatchNorm2d documents and their training step (the whole batch through CLIP) computes. A CPU pass per
    image would move them once per image, by each image's own statistics."""
    model = MonoCLIP(checkpoint, device="cpu", fold_batchnorm=False)
    bn = model.clip.visual.bn1
    old_mean, old_var = bn.running_mean.clone(), bn.running_var.clone()
    seen = []
    hook = bn.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach().clone()))
    images = torch.randn(3, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with train.image_tower_mode(model, "train"):
        model.view_features(images, flip=False)
    hook.remove()
    assert len(seen) == 1 and seen[0].shape[0] == 3  # one pass, the whole batch
    x = seen[0].double()
    mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=True)
    torch.testing.assert_close(bn.running_mean.double(), 0.9 * old_mean.double() + 0.1 * mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(bn.running_var.double(), 0.9 * old_var.double() + 0.1 * var, atol=1e-6, rtol=1e-5)
    assert not model.clip.visual.training  # back in eval mode after the pass


def test_init_starts_from_a_prompts_files_tokens(rooms, checkpoint, tmp_path, capsys):
    tokens = {"prompt": torch.randn(2, 64, generator=torch.Generator().manual_seed(3)),
              "depth": torch.randn(7, 64, generator=torch.Generator().manual_seed(4))}
    given = tmp_path / "given.safetensors"
    LearnedPrompts("learned-static-1o1d", 7, "object", bin_centres("dset-even-7"), tokens).save(str(given))
    run = train.build(parsed(args_for(rooms, checkpoint, tmp_path / "o.safetensors", "--init", str(given))), None)
    for group in ("prompt", "depth"):  # after 0 steps: the file's tokens, as parameters the optimizer moves
        torch.testing.assert_close(run.prompts.tokens[group].detach(), tokens[group], atol=0, rtol=0)
        assert any(run.prompts.tokens[group] is p for g in run.optimizer.param_groups for p in g["params"])
    line = error_line(capsys, args_for(rooms, checkpoint, tmp_path / "o.safetensors", "--init", str(given),
                                       "--depth_tokens", "learned-static-5", "--bins", "dset-even-5"), 1)
    assert "holds 2 prompt, 7 depth, 0 object token(s) of width 64" in line and "needs 2 prompt, 5 depth" in line


def test_init_from_their_checkpoint_brings_its_batchnorm_statistics_with_bn_train(rooms, checkpoint, tmp_path,
                                                                                  capsys):
    ckpt, params = write_run(str(tmp_path / "theirs"), checkpoint, batchnorm_seed=2)
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    out = tmp_path / "o.safetensors"
    run = train.build(parsed(args_for(rooms, checkpoint, out, "--init", ckpt, "--config", params, "--bn", "train")),
                      None)
    for i, row in enumerate(run.prompts.tokens["depth"].detach()):
        torch.testing.assert_close(row, state[f"model.extra_tkns_learnables_depth.{i}"][0].float(), atol=0, rtol=0)
    torch.testing.assert_close(run.model.clip.visual.bn1.running_mean,
                               state["model.clip.visual.bn1.running_mean"].float(), atol=0, rtol=0)
    frozen = train.build(parsed(args_for(rooms, checkpoint, out, "--init", ckpt, "--config", params)), None)
    assert "left out with --bn frozen" in capsys.readouterr().err
    torch.testing.assert_close(frozen.prompts.tokens["depth"].detach(), run.prompts.tokens["depth"].detach())
    line = error_line(capsys, args_for(rooms, checkpoint, out, "--init", ckpt), 2)
    assert "--config PARAMS.yaml" in line


def test_learned_prompts_clamp_each_view_to_their_training_range(checkpoint, tmp_path):
    """const80-log-7 bins reach 78 m; tokens trained on NYU are clamped to [0.001, 10] m per view, then averaged."""
    model = MonoCLIP(checkpoint, device="cpu")
    width = model.clip.token_embedding.weight.shape[1]
    tokens = {"prompt": torch.zeros(2, width), "depth": torch.randn(7, width, generator=torch.Generator().manual_seed(2))}
    prompts = LearnedPrompts("learned-static-1o1d", 7, "object", bin_centres("const80-log-7"), tokens, 0.1,
                             depth_range=(0.001, 10.0))
    path = tmp_path / "far.safetensors"
    prompts.save(str(path))
    loaded = LearnedPrompts.load(str(path))
    assert loaded.depth_range == (0.001, 10.0)
    encoded = model.encode_prompts(loaded)
    patches, grid = model.view_features(torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2)))
    depth = model.depth_from_features(patches, grid, (64, 96), True, encoded)
    from monoclip import depth_head
    views = depth_head(patches, grid, encoded).clamp(0.001, 10.0)
    expected = torch.nn.functional.interpolate(0.5 * (views[:1] + views[1:].flip(3)), size=(64, 96),
                                               mode="bilinear", align_corners=True)
    unclamped = model.depth_from_features(patches, grid, (64, 96), True, encoded._replace(depth_range=None))
    assert unclamped.max() > 10  # the clamp acts here, and on patches where one view passes 10 m and the other not:
    assert (unclamped.clamp(0.001, 10.0) - expected).abs().max() > 0.1  # clamping after the average is not theirs
    # a few float32 ulps (9.5e-7 at 8 m): the library sums the views in its own order, which differs by CPU (AVX-512 on
    # Intel, AVX2 on AMD); clamping after the average would be off by more than 0.1
    torch.testing.assert_close(depth, expected, atol=1e-5, rtol=0)
    assert depth.max() <= 10.0


def test_a_trained_file_records_its_range_and_predict_clamps_to_it(rooms, checkpoint, tmp_path):
    out = tmp_path / "learned.safetensors"
    train.main(args_for(rooms, checkpoint, out, "--epochs", "1", "--bins", "const80-log-7"))
    learned = LearnedPrompts.load(str(out))
    assert learned.depth_range == (0.001, 10.0) and max(learned.bins) > 10
    import predict
    image = glob.glob(os.path.join(rooms, "official_splits", "train", "*", "rgb_*.jpg"))[0]
    predict.main([image, "--clip_model", checkpoint, "--prompts", str(out), "--npy", "-o", str(tmp_path / "p"),
                  "--device", "cpu"])
    depth = np.load(glob.glob(str(tmp_path / "p" / "*_depth.npy"))[0])
    assert depth.max() <= 10.0 + 1e-6


def test_resume_continues_its_own_run_or_refuses(rooms, checkpoint, tmp_path, capsys):
    out = tmp_path / "run.safetensors"
    train.main(args_for(rooms, checkpoint, out, "--epochs", "1", "--lr", "0.1"))
    capsys.readouterr()
    line = error_line(capsys, args_for(rooms, checkpoint, out, "--epochs", "2", "--lr", "0.1", "--resume"), 1)
    assert "--epochs 2 (the run has 1)" in line and f"--init {out}" in line
    line = error_line(capsys, args_for(rooms, checkpoint, out, "--epochs", "1", "--lr", "0.001", "--resume"), 1)
    assert "--lr 0.001 (the run has 0.1)" in line
    fresh = tmp_path / "fresh.safetensors"
    train.main(args_for(rooms, checkpoint, fresh, "--epochs", "1", "--resume"))
    assert "no checkpoint" in capsys.readouterr().err and fresh.exists()
    assert LearnedPrompts.load(str(fresh)).source["training"]["lr"] == options.train_options().get_default("lr")


def test_images_without_valid_ground_truth_are_left_out_by_name(checkpoint, tmp_path, capsys):
    root = tmp_path / "rooms"
    write_taught_dataset(str(root), checkpoint, count=8)
    out = tmp_path / "o.safetensors"
    argv = args_for(str(root), checkpoint, out, "--epochs", "1")
    data = train.NYUTraining(parsed(argv))
    train_idx, val_idx = train.split_train_val(data.dataset, 2, 0)
    emptied = [data.dataset.pairs[i][1] for i in (train_idx[0], val_idx[0])]  # one trained on, one held out
    for name in emptied:  # zeros: no measurement anywhere
        Image.fromarray(np.zeros((480, 640), np.uint16)).save(os.path.join(data.dataset.root, name))
    train.main(argv)
    err = capsys.readouterr().err
    assert all(name in err for name in emptied), err
    assert "left out of the validation means" in err and "adds nothing to the loss" in err
    assert LearnedPrompts.load(str(out)).source["validation"]["abs_rel"] > 0


def test_a_damaged_prompts_file_is_named_with_what_is_wrong(rooms, checkpoint, tmp_path, capsys):
    good = tmp_path / "good.safetensors"
    LearnedPrompts("learned-static-1o1d", 7, "object", bin_centres("dset-even-7"),
                   {"prompt": torch.zeros(2, 64), "depth": torch.zeros(7, 64)}).save(str(good))
    data = good.read_bytes()
    truncated, foreign, ckpt = tmp_path / "cut.safetensors", tmp_path / "other.safetensors", tmp_path / "cut.ckpt"
    truncated.write_bytes(data[:len(data) - 10])
    from safetensors.torch import save_file
    save_file({"encoder.weight": torch.zeros(2)}, str(foreign))
    ckpt.write_bytes(b"PK\x03\x04 not a whole zip archive")
    for path, said in [(truncated, "damaged, truncated or not a .safetensors"),
                       (foreign, "without this repository's 'depthclip' metadata, holding 1 tensor(s): encoder.weight")]:
        with pytest.raises(ValueError) as error:
            LearnedPrompts.load(str(path), flag="--init")
        assert str(error.value).startswith(f"--init {path} is not a prompts file") and said in str(error.value)
        assert documented(str(error.value))
    from learned_prompts import read_checkpoint
    with pytest.raises(ValueError) as error:
        read_checkpoint(str(ckpt))
    assert "is not a PyTorch checkpoint, or is damaged or truncated" in str(error.value)
    assert documented(str(error.value))
    out = tmp_path / "run.safetensors"
    os.makedirs(tmp_path / "run_run")
    (tmp_path / "run_run" / "last.pt").write_bytes(b"PK\x03\x04 cut short")
    line = error_line(capsys, args_for(rooms, checkpoint, out, "--epochs", "1", "--resume"), 1)
    assert "last.pt is damaged or truncated" in line and "--init" not in line


def test_a_process_with_an_empty_share_of_the_batch_learns_what_one_process_does(rooms, checkpoint, tmp_path):
    """6 training images in batches of 5: the last batch has one image, so under 2 processes one has none. It
    still takes part in the all-reduce (a zero gradient for every token), and the run equals one process's."""
    common = ["--epochs", "1", "--batch_size", "5", "--lr", "0.1", "--keep_last", "--cache", str(tmp_path / "c")]
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    train.main(args_for(rooms, checkpoint, one, *common))
    torchrun("train.py", *args_for(rooms, checkpoint, two, *common))
    a, b = LearnedPrompts.load(str(one)), LearnedPrompts.load(str(two))
    for group in ("prompt", "depth"):
        torch.testing.assert_close(a.tokens[group], b.tokens[group], atol=5e-5, rtol=0)
