"""The authors' outputs on seeded inputs (golden.json) must be reproduced to 1e-5."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import eval as evaluation
from calculate_error import compute_errors_NYU
from datasets import NYUDepthV2
from monoclip import MonoCLIP, keep_every_other_channel

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
