"""Learned prompt tokens (Auty & Mikolajczyk 2023, learned_prompts.py): the token path equals CLIP's own, the
shortened text tower equals the full one, their code's outputs and protocol metrics are reproduced
(golden_auty.json, made by running their unedited code: tests/README.md), files round-trip, and bad files are
one line each."""
import json
import math
import os

import numpy as np
import pytest
import torch

import cli
import clip
import eval as evaluation
import predict
from conftest import ROOT, optional
from learned_prompts import LearnedPrompts, bin_centres, from_auty
from monoclip import DepthPrompts, MonoCLIP, encode_tokens
from synthetic.auty_checkpoint import write_run
from synthetic.checkpoint import make_state_dict
from synthetic.nyu_like import write_dataset
from test_errors import documented

TOLERANCE = 5e-5  # metres, and metric units: float32 rounding of an equivalent order of operations


@pytest.fixture(scope="module")
def golden_auty():
    with open(os.path.join(ROOT, "tests", "golden_auty.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def wide_checkpoint(tmp_path_factory):
    """golden_auty.json's checkpoint: RN50 geometry with a 512-wide text tower, as their 512-d tokens need."""
    path = tmp_path_factory.mktemp("auty") / "RN50_textwidth512_seed0.pt"
    torch.save(make_state_dict(0, text_width=512), path)
    return str(path)


@pytest.fixture(scope="module")
def auty_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("auty_nyu")
    write_dataset(str(root), count=3, seed=0)
    return str(root)


def run_of(case, clip_model, folder, **changes):
    layout = case["layout"]
    return write_run(str(folder), clip_model, layout["templates"], layout["depth_tokens"], layout["object_tokens"],
                     layout["depth_bin_centres"], case["token_seed"], case["batchnorm_seed"], **changes)


# ---------------------------------------------------------------- the text tower from token embeddings
def test_token_path_equals_encode_text_for_word_embeddings(model):
    tokens = clip.tokenize(["This object is close", "a photo of a far wall", "giant"])
    with torch.no_grad():
        direct = model.clip.encode_text(tokens)
        embedded = model.clip.encode_token_embeddings(model.clip.token_embedding(tokens), tokens.argmax(-1))
    assert torch.equal(direct, embedded)


def test_the_shortened_text_tower_equals_the_full_one(model):
    tokens = clip.tokenize(DepthPrompts().texts() + ["a much longer prompt with many more words in it than others"])
    with torch.no_grad():
        full = torch.nn.functional.normalize(model.clip.encode_text(tokens), dim=-1)
        short = torch.nn.functional.normalize(encode_tokens(model.clip, tokens), dim=-1)
    assert int(tokens.argmax(-1).max()) + 1 < 77
    torch.testing.assert_close(short, full, atol=1e-6, rtol=0)


def test_the_shortened_tower_on_open_clip(tmp_path):
    open_clip = optional("open_clip")
    import open_clip_adapter
    m = open_clip.create_model("RN50").eval()
    adapter = open_clip_adapter.OpenCLIP(m, open_clip.get_tokenizer("RN50"), "RN50")
    tokens = adapter.tokenize(DepthPrompts().texts())
    with torch.no_grad():
        full = torch.nn.functional.normalize(m.encode_text(tokens), dim=-1)
        whole = adapter.encode_token_embeddings(m.token_embedding(tokens), tokens.argmax(-1))
        short = torch.nn.functional.normalize(encode_tokens(adapter, tokens), dim=-1)
    assert torch.equal(torch.nn.functional.normalize(whole, dim=-1), full) and adapter.causal_text
    torch.testing.assert_close(short, full, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- their code's numbers
def test_bin_presets_are_theirs(golden_auty):
    for case in golden_auty["cases"].values():
        np.testing.assert_allclose(bin_centres(case["layout"]["depth_bin_centres"]), case["bins"], rtol=1e-12)
    assert bin_centres("const80-log-7")[0] == pytest.approx(math.e ** (math.log(0.001) + math.log(80000) / 14))


@pytest.mark.parametrize("name", ["ls1o1d_ls7_p_dset-even-7", "ls4o4d_d7_p_dset-even-7", "pv1_d7_ls1_dset-even-7",
                                  "ls1o1d_ls256_p_dset-log-256"])
def test_their_checkpoints_give_their_depth_and_metrics(name, golden_auty, wide_checkpoint, auty_data, tmp_path):
    case = golden_auty["cases"][name]
    ckpt, params = run_of(case, wide_checkpoint, tmp_path)
    prompts = from_auty(ckpt, params)
    assert prompts.visual_state is not None  # their checkpoints always carry CLIP's BatchNorm statistics
    model = MonoCLIP(wide_checkpoint, prompts=prompts, device="cpu")
    x = torch.from_numpy(np.random.RandomState(0).standard_normal((2, 3, 480, 640)).astype(np.float32))
    with torch.inference_mode():
        out = model(x)
    expected = torch.tensor(case["output"])
    assert out.shape == expected.shape == (2, 1, 15, 20)
    assert (out - expected).abs().max() <= TOLERANCE
    results = evaluation.main(["--data_path", auty_data, "--testfile_nyu", "auto", "--clip_model", wide_checkpoint,
                               "--prompts", ckpt, "--prompts_config", params, "--protocol", "auty2023",
                               "--workers", "0"])
    assert results["config"]["batchnorm_statistics"] == "checkpoint"
    for row, theirs in zip(results["per_image"], case["per_image"], strict=True):
        assert row["file"] == theirs["file"]
        for metric, value in theirs.items():
            if metric != "file":
                ours = row["rmse_log"] ** 2 if metric == "rmse_log_squared" else row[metric]
                assert ours == pytest.approx(value, abs=TOLERANCE), (row["file"], metric)


# ---------------------------------------------------------------- files
def test_a_safetensors_file_round_trips_and_converts_their_checkpoint(golden_auty, wide_checkpoint, tmp_path, capsys):
    case = golden_auty["cases"]["ls1o1d_ls7_p_dset-even-7"]
    ckpt, params = run_of(case, wide_checkpoint, tmp_path / "run")
    out = tmp_path / "learned.safetensors"
    import convert_prompts
    convert_prompts.main([ckpt, params, "--output", str(out), "--clip_model", wide_checkpoint])
    assert f"{out} written (" in capsys.readouterr().out
    original, loaded = from_auty(ckpt, params), LearnedPrompts.load(str(out))
    for group in ("prompt", "depth", "object"):
        assert torch.equal(original.tokens[group].reshape(-1), loaded.tokens[group].reshape(-1))
    assert loaded.bins == original.bins and loaded.template == original.template
    assert {k: torch.equal(v, loaded.visual_state[k]) for k, v in original.visual_state.items()} == \
        {k: True for k in original.visual_state}
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        a = MonoCLIP(wide_checkpoint, prompts=original, device="cpu")(x)
        b = MonoCLIP(wide_checkpoint, prompts=loaded, device="cpu")(x)
    assert torch.equal(a, b)
    photo = os.path.join(ROOT, "examples", "synthetic_room.jpg")
    predict.main([photo, "--clip_model", wide_checkpoint, "--prompts", str(out), "--npy", "-o", str(tmp_path / "p")])
    depth = np.load(tmp_path / "p" / "synthetic_room_depth.npy")
    assert depth.dtype == np.float32 and depth.min() >= min(original.bins) - 1e-4


def one_line(capsys, argv, code):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda: evaluation.main(argv))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == code and len(lines) == 1, lines
    assert documented(lines[0][len("error: "):].split(" (see ")[0]), lines[0]
    return lines[0]


def test_bad_prompts_files_are_one_line_each(golden_auty, wide_checkpoint, checkpoint, auty_data, tmp_path, capsys):
    case = golden_auty["cases"]["ls1o1d_ls7_p_dset-even-7"]
    ckpt, params = run_of(case, wide_checkpoint, tmp_path / "good")
    out = tmp_path / "r.json"
    base = ["--data_path", auty_data, "--testfile_nyu", "auto", "--workers", "0", "--output", str(out)]
    good = tmp_path / "good.safetensors"
    import convert_prompts
    convert_prompts.main([ckpt, params, "--output", str(good), "--clip_model", wide_checkpoint])
    other = tmp_path / "other.pt"
    torch.save(make_state_dict(3, text_width=512), other)
    line = one_line(capsys, [*base, "--clip_model", str(other), "--prompts", str(good)], 1)
    assert "was made for the CLIP weights with SHA256" in line
    from downloads import sha256_of_file
    assert sha256_of_file(wide_checkpoint) in line and sha256_of_file(str(other)) in line
    with open(params) as f:
        text = f.read()
    unsupported = tmp_path / "unsupported.yaml"
    unsupported.write_text(text.replace("lang_strat:", "post_lang_corr_stage: BasicDecoder-4f\n  lang_strat:"))
    line = one_line(capsys, [*base, "--clip_model", wide_checkpoint, "--prompts", ckpt, "--prompts_config",
                             str(unsupported)], 2)
    assert "post_lang_corr_stage: BasicDecoder-4f" in line
    missing, _ = run_of(case, wide_checkpoint, tmp_path / "missing", drop="model.extra_tkns_learnables_depth.3")
    line = one_line(capsys, [*base, "--clip_model", wide_checkpoint, "--prompts", missing, "--prompts_config",
                             params], 2)
    assert "lacks model.extra_tkns_learnables_depth.3" in line
    anywhere = tmp_path / "anywhere.safetensors"  # no backbone recorded: only the width can tell
    from_auty(ckpt, params).save(str(anywhere))
    line = one_line(capsys, [*base, "--clip_model", checkpoint, "--prompts", str(anywhere)], 1)
    assert "512-d" in line and "64-d" in line  # the default test checkpoint's text tower is 64 wide
    line = one_line(capsys, [*base, "--clip_model", wide_checkpoint, "--prompts", ckpt], 2)
    assert "--prompts_config" in line
    assert not out.exists()


def test_playground_shows_learned_slots_by_name(golden_auty, wide_checkpoint, tmp_path):
    demo = optional("demo")
    from PIL import Image
    case = golden_auty["cases"]["ls1o1d_ls7_p_dset-even-7"]
    ckpt, params = run_of(case, wide_checkpoint, tmp_path / "run")
    prompts = from_auty(ckpt, params)
    path = tmp_path / "learned.safetensors"
    prompts.save(str(path))
    model = MonoCLIP(wide_checkpoint, prompts=prompts, device="cpu")
    playground = demo.Playground(model)
    image = Image.open(os.path.join(ROOT, "examples", "synthetic_room.jpg"))
    words = dict(words="near, far", bins="1, 2", template="This {} is {}", objects="object", features="paper",
                 flip=True, focal=500.0)
    for source in (None, str(path)):  # the model's own (--prompts), then the same file uploaded
        picture, maps, shares, (png, _) = playground.render(image, **words, temperature=0.1, prompts_file=source)
        assert list(shares) == [f"<depth {i}>" for i in range(7)] and len(maps) == 7
        assert maps[3][1].startswith(f"'<depth 3>' ({prompts.bins[3]:g} m)")
        expected = model.predict(photos_input(image, model), size=(image.height, image.width))[0, 0].numpy()
        saved = np.asarray(Image.open(png), np.float64) / 1000.0
        assert np.abs(saved - expected).max() <= 0.0005 + 1e-6


def photos_input(image, model):
    import photos
    return photos.model_input(image.convert("RGB"), 544, model.stride, "imagenet")
