"""The method, specified: what DepthCLIP computes (read this file first), and the authors' own outputs on
seeded inputs (golden.json), reproduced to 1e-5."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clip
import eval as evaluation
from calculate_error import compute_errors_NYU
from datasets import NYUDepthV2
from monoclip import (CLIP_LOGIT_SCALE, DepthPrompts, MonoCLIP, dense_patch_features, depth_head,
                      keep_every_other_channel, text_features)

TOLERANCE = 1e-5
GOLDEN_MODEL_CASES = ["model_default", "model_temperature2", "model_prompt2_temperature2", "model_bins3_temperature2"]


def golden_model_input():
    return torch.from_numpy(np.random.RandomState(0).standard_normal((2, 3, 416, 544)).astype(np.float32))


def test_every_golden_case_is_tested(golden):
    assert set(golden["cases"]) == set(GOLDEN_MODEL_CASES) | {"pipeline_default", "metrics_seed1"}


@pytest.mark.parametrize("case", GOLDEN_MODEL_CASES)
def test_model_output_matches_authors(case, golden, checkpoint):
    model = MonoCLIP(checkpoint, device="cpu", **golden["cases"][case]["config"])
    with torch.inference_mode():
        out = model(golden_model_input())
    expected = torch.tensor(golden["cases"][case]["output"])
    assert out.shape == expected.shape == (2, 1, 13, 17)
    assert torch.allclose(out, expected, rtol=0, atol=TOLERANCE), (out - expected).abs().max()


def test_metrics_match_authors(golden):
    rng = np.random.RandomState(1)
    gt = rng.uniform(0, 12, (1, 1, 480, 640)).astype(np.float32)
    gt[rng.random_sample(gt.shape) < 0.05] = 0
    pred = rng.uniform(0.5, 9, (1, 1, 416, 544)).astype(np.float32)
    errors = compute_errors_NYU(torch.from_numpy(gt), torch.from_numpy(pred))
    for name, value in golden["cases"]["metrics_seed1"].items():
        assert errors[name] == pytest.approx(value, abs=TOLERANCE), name


def run_eval(nyu_like, checkpoint, tmp_path, *extra):
    out = tmp_path / "results.json"
    evaluation.main(["--data_path", nyu_like, "--testfile_nyu", "auto", "--clip_model", checkpoint,
                     "--output", str(out), "--workers", "0", *extra])
    with open(out) as f:
        return json.load(f)


def test_pipeline_matches_authors_per_image_and_mean(golden, nyu_like, checkpoint, tmp_path):
    case = golden["cases"]["pipeline_default"]
    results = run_eval(nyu_like, checkpoint, tmp_path)
    assert [row["file"] for row in results["per_image"]] == case["files"]
    for row, expected in zip(results["per_image"], case["per_image"]):
        for name, value in expected.items():
            assert row[name] == pytest.approx(value, abs=TOLERANCE), (row["file"], name)
    for name, value in case["mean"].items():
        assert results["metrics"][name] == pytest.approx(value, abs=TOLERANCE), name
    assert results["count"] == 6


def test_batch_size_does_not_change_numbers(nyu_like, checkpoint, tmp_path):
    """On a CPU the network sees one image at a time and metric sums are float64: not a digit moves."""
    one = run_eval(nyu_like, checkpoint, tmp_path, "--batch_size", "1")
    three = run_eval(nyu_like, checkpoint, tmp_path, "--batch_size", "3")
    assert one["per_image"] == three["per_image"] and one["metrics"] == three["metrics"]


def test_batched_network_pass_moves_predictions_by_rounding_only(model, nyu_like):
    """What a GPU does: the whole batch and its mirror images in one pass."""
    rgb = torch.stack([NYUDepthV2(nyu_like, "auto")[i][0] for i in range(3)])
    with torch.inference_mode():
        together = model(torch.cat([rgb, rgb.flip(3)]))
        alone = torch.cat([model(x[None]) for x in torch.cat([rgb, rgb.flip(3)])])
    torch.testing.assert_close(together, alone, atol=2e-6, rtol=0)


def test_channel_halving_is_the_authors_interpolate():
    patches = torch.randn(2, 221, 2048)
    assert torch.equal(keep_every_other_channel(patches), F.interpolate(patches, scale_factor=0.5))


# ---------------------------------------------------------------- the method, step by step
def test_text_features_are_normalized_template_means(model):
    """Each column: every template filled with (object, word), encoded, normalized, averaged, normalized."""
    prompts = DepthPrompts(["near", "far"], [1.0, 2.0], ["This {} is {}", "A {} that is {}"], ["object", "chair"])
    text = text_features(model.clip, prompts)  # (1024, 4): (near, object), (near, chair), (far, object), (far, chair)
    assert text.shape == (1024, 4)
    with torch.no_grad():
        for column, (word, obj) in enumerate([("near", "object"), ("near", "chair"), ("far", "object"),
                                              ("far", "chair")]):
            encoded = model.clip.encode_text(clip.tokenize([f"This {obj} is {word}", f"A {obj} that is {word}"]))
            mean = (encoded / encoded.norm(dim=-1, keepdim=True)).mean(dim=0)
            torch.testing.assert_close(text[:, column], mean / mean.norm())
    assert prompts.column_bins == [1.0, 1.0, 2.0, 2.0]


def test_bin_weights_are_a_softmax_whose_mean_is_the_depth(model, nyu_like):
    rgb = NYUDepthV2(nyu_like, "auto")[0][0][None]
    with torch.inference_mode():
        weights = model.bin_weights(rgb)  # (1, 7, 13, 17)
        depth = model(rgb)
    assert weights.shape == (1, 7, 13, 17)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(1, 13, 17))
    torch.testing.assert_close((weights * model.encoded.bins.view(1, -1, 1, 1)).sum(dim=1, keepdim=True), depth)


def test_head_written_out(model):
    """depth = sum_k softmax_k(100 * patch . text_k / temperature) * bin_k, per patch."""
    patches = F.normalize(torch.randn(2, 6, 1024), dim=-1)
    text = model.encoded.text
    expected = ((CLIP_LOGIT_SCALE * patches @ text / 0.1).softmax(-1) * model.encoded.bins).sum(-1)  # (2, 6)
    depth = depth_head(patches, (2, 3), model.encoded)
    torch.testing.assert_close(depth, expected.view(2, 1, 2, 3))


def test_image_side_then_head_is_forward(model, nyu_like):
    rgb = NYUDepthV2(nyu_like, "auto")[0][0][None]
    with torch.inference_mode():
        patches, grid = model.patch_features(rgb)
        trunk = model.clip.encode_image_dense(rgb, "trunk").flatten(2).transpose(1, 2)  # (1, 221, 2048)
        assert grid == (13, 17) and patches.shape == (1, 221, 1024)
        torch.testing.assert_close(patches, (trunk / trunk.norm(dim=-1, keepdim=True))[..., ::2])
        torch.testing.assert_close(depth_head(patches, grid, model.encoded), model(rgb))


def test_prediction_is_flip_averaged_and_upsampled(model, nyu_like):
    rgb = torch.stack([NYUDepthV2(nyu_like, "auto")[i][0] for i in range(2)])
    with torch.inference_mode():
        expected = F.interpolate(0.5 * (model(rgb) + model(rgb.flip(3)).flip(3)), size=(416, 544), mode="bilinear",
                                 align_corners=True)
        torch.testing.assert_close(model.predict(rgb), expected, atol=1e-6, rtol=0)


def test_batchnorm_folding_moves_depth_by_rounding_only(model, checkpoint):
    """MonoCLIP folds each BatchNorm into its convolution (torch's fuse_conv_bn_eval): the same function."""
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.clip.visual.modules())
    unfolded, _ = clip.load(checkpoint, device="cpu")
    x = golden_model_input()
    with torch.inference_mode():
        expected = depth_head(*dense_patch_features(unfolded, x, "paper"), model.encoded)
        torch.testing.assert_close(model(x), expected, atol=2e-6, rtol=0)
