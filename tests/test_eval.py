"""eval.py as a researcher uses it: results file, presets, scene filters, baselines, several processes."""
import json
import os

import numpy as np
import pytest
import torch

import eval as evaluation
from conftest import torchrun
from datasets import NYUDepthV2
from monoclip import BIN_SETS, PROMPT_SETS
from protocols import NYU_METRICS


def run_eval(nyu_like, tmp_path, *extra, name="results.json"):
    out = tmp_path / name
    evaluation.main(["--data_path", nyu_like, "--testfile_nyu", "auto", "--workers", "0", "--output", str(out),
                     *extra])
    with open(out) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def default_results(nyu_like, checkpoint, tmp_path_factory):
    return run_eval(nyu_like, tmp_path_factory.mktemp("eval"), "--clip_model", checkpoint, "--batch_size", "4")


def test_results_file_has_the_documented_layout(default_results):
    r = default_results
    assert set(r) == {"dataset", "count", "metrics", "per_scene", "per_image", "config", "timing"}
    assert r["dataset"] == "NYU" and r["count"] == len(r["per_image"]) == 6
    assert list(r["metrics"]) == list(NYU_METRICS)
    assert [set(row) for row in r["per_image"]] == [{"file", *NYU_METRICS}] * 6
    assert r["timing"]["seconds"] > 0 and r["timing"]["images_per_second"] == pytest.approx(6 / r["timing"]["seconds"])
    assert r["config"]["depth_classes"] == PROMPT_SETS["paper"] and r["config"]["bins"] == BIN_SETS["paper"]
    assert r["config"]["temperature"] == 0.1 and r["config"]["flip"] is True
    assert r["config"]["scored_as"] == "nyu_depthclip"


def test_results_say_what_produced_them(default_results, checkpoint, nyu_like):
    import hashlib
    config = default_results["config"]
    with open(checkpoint, "rb") as f:
        assert config["checkpoint_sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert config["clip_model"] == os.path.abspath(checkpoint) and config["data_path"] == os.path.abspath(nyu_like)
    assert config["torch"] == torch.__version__ and config["testfile_nyu"] == "auto"

def test_means_are_over_images_and_per_scene_over_each_scene(default_results):
    rows = default_results["per_image"]
    for name in NYU_METRICS:
        assert default_results["metrics"][name] == pytest.approx(np.mean([row[name] for row in rows]), abs=1e-12)
    assert {s: v["count"] for s, v in default_results["per_scene"].items()} == \
        {"bathroom": 2, "kitchen": 2, "living_room": 2}
    kitchen = [row["a1"] for row in rows if row["file"].startswith("kitchen/")]
    assert default_results["per_scene"]["kitchen"]["metrics"]["a1"] == pytest.approx(np.mean(kitchen), abs=1e-12)


def test_table_prints_the_paper_columns_in_order(default_results, capsys):
    table = evaluation.format_table([("monoclip", 6, default_results["metrics"])])
    header, row = table.splitlines()
    assert header.split() == ["run", "images", "δ1", "δ2", "δ3", "rel", "log10", "rmse"]
    assert row.split()[2:] == [f"{default_results['metrics'][k]:.3f}" for k in
                               ["a1", "a2", "a3", "abs_rel", "log10", "rmse"]]


def test_presets_equal_their_explicit_lists(nyu_like, checkpoint, tmp_path):
    by_name = run_eval(nyu_like, tmp_path, "--clip_model", checkpoint, "--prompt_set", "prompt2", "--bin_set",
                       "class3", "--temperature", "2", "--limit", "2", name="named.json")
    explicit = run_eval(nyu_like, tmp_path, "--clip_model", checkpoint, "--temperature", "2", "--limit", "2",
                        "--depth_classes", ",".join(PROMPT_SETS["prompt2"]),
                        "--bins", ",".join(map(str, BIN_SETS["class3"])), name="explicit.json")
    assert by_name["metrics"] == explicit["metrics"]
    assert by_name["config"]["prompt_set"] == "prompt2" and by_name["config"]["bin_set"] == "class3"
    assert by_name["config"]["depth_classes"] == PROMPT_SETS["prompt2"]


def test_scenes_restricts_the_evaluation(nyu_like, tmp_path):
    r = run_eval(nyu_like, tmp_path, "--method", "constant", "--scenes", "bathroom,kitchen")
    assert r["count"] == 4 and set(r["per_scene"]) == {"bathroom", "kitchen"}


def test_constant_baseline_predicts_its_constant(nyu_like, tmp_path):
    r = run_eval(nyu_like, tmp_path, "--method", "constant", "--constant_depth", "3")
    gt = NYUDepthV2(nyu_like, "auto")[0][1][0, 56:471, 60:601]  # Eigen crop inside the paste box
    gt = gt[(gt > 1e-3) & (gt < 10)]
    assert r["per_image"][0]["abs_diff"] == pytest.approx((gt - 3).abs().mean().item(), rel=1e-5)
    assert r["config"]["constant_depth"] == 3.0 and r["config"]["method"] == "constant"


def test_lower_bound_matches_its_closed_form_expectation(nyu_like, tmp_path):
    """Pred ~ U(0, 10) per pixel: P(max(g/p, p/g) < t | p > 1e-3) = (min(10, t g) - max(1e-3, g / t)) / (10 - 1e-3)."""
    r = run_eval(nyu_like, tmp_path, "--method", "lower_bound", "--seed", "3")
    for row, (_, gt, _) in zip(r["per_image"], NYUDepthV2(nyu_like, "auto")):
        g = gt[0, 56:471, 60:601].double()
        g = g[(g > 1e-3) & (g < 10)]
        for name, t in [("a1", 1.25), ("a2", 1.25 ** 2), ("a3", 1.25 ** 3)]:
            expected = ((torch.clamp(t * g, max=10) - torch.clamp(g / t, min=1e-3)) / (10 - 1e-3)).mean().item()
            assert row[name] == pytest.approx(expected, abs=0.005), (row["file"], name)  # ~0.001 sampling std


def test_lower_bound_draws_do_not_depend_on_batching(nyu_like, tmp_path):
    one = run_eval(nyu_like, tmp_path, "--method", "lower_bound", "--batch_size", "1", name="1.json")
    four = run_eval(nyu_like, tmp_path, "--method", "lower_bound", "--batch_size", "4", name="4.json")
    other_seed = run_eval(nyu_like, tmp_path, "--method", "lower_bound", "--seed", "1", name="s.json")
    for a, b, c in zip(one["per_image"], four["per_image"], other_seed["per_image"]):
        assert all(a[name] == pytest.approx(b[name], abs=1e-12) for name in NYU_METRICS), a["file"]
        assert a["a1"] != c["a1"]


def test_two_processes_equal_one(nyu_like, checkpoint, tmp_path):
    """torchrun shards the list (each image once, 5 images over 2 ranks) and rank 0 writes the same results."""
    single = run_eval(nyu_like, tmp_path, "--clip_model", checkpoint, "--limit", "5", name="single.json")
    out = tmp_path / "two.json"
    torchrun("eval.py", "--data_path", nyu_like, "--testfile_nyu", "auto", "--limit", "5", "--clip_model", checkpoint,
             "--workers", "0", "--batch_size", "2", "--device", "cpu", "--output", str(out), cwd=tmp_path,
             env={**os.environ, "OMP_NUM_THREADS": "1"})
    with open(out) as f:
        two = json.load(f)
    assert two["count"] == 5 and two["config"]["world_size"] == 2
    assert [row["file"] for row in two["per_image"]] == [row["file"] for row in single["per_image"]]
    for a, b in zip(single["per_image"], two["per_image"]):
        for name in NYU_METRICS:
            assert a[name] == pytest.approx(b[name], abs=1e-6)
    for name in NYU_METRICS:
        assert single["metrics"][name] == pytest.approx(two["metrics"][name], abs=1e-6)


def test_table_puts_each_run_beside_the_papers_number(default_results, nyu_like, tmp_path):
    import table
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps(default_results))
    constant = run_eval(nyu_like, tmp_path, "--method", "constant", name="constant.json")
    lines = table.markdown_table([str(paper), str(tmp_path / "constant.json")]).splitlines()
    assert lines[0].split("|")[1:-1] == [" run ", " images ", " δ1 ", " δ2 ", " δ3 ", " rel ", " log10 ", " rmse "]
    assert lines[2].startswith(f"| paper | 6 | {default_results['metrics']['a1']:.3f} (0.394) |")
    assert lines[2].endswith(f"| {default_results['metrics']['rmse']:.3f} (1.167) |")
    assert lines[3] == "| constant | 6 | " + " | ".join(
        f"{constant['metrics'][k]:.3f}" for k in ["a1", "a2", "a3", "abs_rel", "log10", "rmse"]) + " |"
