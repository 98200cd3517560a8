"""--sweep (many prompt settings from one image pass) and --cache (image features kept between runs): both must
give, to the last digit on a CPU, what separate uncached runs give."""
import json
import os
import shutil

import pytest
from PIL import Image

import cli
import clip.model
import eval as evaluation
from conftest import ROOT, torchrun
from feature_cache import FeatureCache
from test_errors import documented

SETTINGS = [  # (sweep entry, the same as flags of a separate run)
    ({"name": "paper"}, []),
    ({"name": "words_bins_warm", "prompt_set": "prompt2", "bins": [1, 1.25, 1.5, 1.75, 2, 2.25, 2.5],
      "temperature": 2.0}, ["--prompt_set", "prompt2", "--bins", "1,1.25,1.5,1.75,2,2.25,2.5", "--temperature", "2"]),
    ({"name": "two_templates_two_objects", "templates": ["This {} is {}", "A photo of a {} that is {}"],
      "objects": ["object", "wall"], "temperature": 0.5},
     ["--templates", "This {} is {},A photo of a {} that is {}", "--objects", "object,wall", "--temperature", "0.5"]),
    ({"name": "own_words", "depth_classes": ["near", "middle", "far"], "bins": [1, 2, 4]},
     ["--depth_classes", "near,middle,far", "--bins", "1,2,4"]),
]


def run_eval(nyu_like, checkpoint, out, *extra):
    evaluation.main(["--data_path", nyu_like, "--testfile_nyu", "auto", "--clip_model", checkpoint, "--workers", "0",
                     "--output", str(out), *extra])
    with open(out) as f:
        return json.load(f)


@pytest.fixture
def sweep_file(tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps([entry for entry, _ in SETTINGS]))
    return str(path)


@pytest.mark.parametrize("flip", [[], ["--no_flip"]], ids=["flip", "no_flip"])
def test_sweep_rows_equal_separate_runs(nyu_like, checkpoint, tmp_path, sweep_file, flip):
    sweep = run_eval(nyu_like, checkpoint, tmp_path / "sweep_out.json", "--sweep", sweep_file, "--batch_size", "4",
                     *flip)
    assert set(sweep) == {"runs", "timing"}
    assert [run["name"] for run in sweep["runs"]] == [entry["name"] for entry, _ in SETTINGS]
    for run, (entry, flags) in zip(sweep["runs"], SETTINGS):
        alone = run_eval(nyu_like, checkpoint, tmp_path / f"{entry['name']}.json", "--batch_size", "4", *flip, *flags)
        assert set(run) == {"name", "count", "metrics", "per_scene", "per_image", "config"}
        assert run["per_image"] == alone["per_image"] and run["metrics"] == alone["metrics"], entry["name"]
        assert run["per_scene"] == alone["per_scene"] and run["count"] == alone["count"] == 6
        assert {k: v for k, v in run["config"].items()} == alone["config"], entry["name"]
    assert sweep["timing"]["images_per_second"] == pytest.approx(6 / sweep["timing"]["seconds"])


def test_sweep_prints_one_row_per_setting(nyu_like, checkpoint, tmp_path, sweep_file, capsys):
    run_eval(nyu_like, checkpoint, tmp_path / "r.json", "--sweep", sweep_file, "--limit", "1")
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["run", "images", "δ1", "δ2", "δ3", "rel", "log10", "rmse"]
    assert [line.split()[0] for line in table[1:5]] == [entry["name"] for entry, _ in SETTINGS]


def test_shipped_ablation_sweep_is_the_papers_table(nyu_like):
    import table
    with open(os.path.join(ROOT, "configs", "ablations.json")) as f:
        entries = json.load(f)
    assert [e["name"] for e in entries] == ["paper", "prompt1", "prompt2", "prompt3", "class1", "class2", "class3",
                                            "class4"]
    assert all(e["name"] in table.PAPER for e in entries)


def sweep_error(capsys, tmp_path, entries):
    """The one line a bad sweep file gives, before any image is read (the data path does not even exist)."""
    path = tmp_path / "bad.json"
    path.write_text(entries if isinstance(entries, str) else json.dumps(entries))
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda: evaluation.main(["--data_path", str(tmp_path / "nowhere"), "--sweep", str(path),
                                         "--clip_model", "/nonexistent.pt"]))
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and documented(lines[0][len("error: "):]), lines
    return lines[0]


@pytest.mark.parametrize("entries, found", [
    ([{"name": "a", "temprature": 1}], "entry 1 ('a'): unknown key 'temprature'; did you mean 'temperature'?"),
    ([{"name": "a"}, {"name": "b", "prompt_set": "prompt9"}], "entry 2 ('b'): unknown prompt set 'prompt9'"),
    ([{"name": "a", "bin_set": "class7"}], "entry 1 ('a'): unknown bin set 'class7'"),
    ([{"name": "a", "bins": [1, 2]}], "entry 1 ('a'): 2 bins [1, 2] for 7 depth words"),
    ([{"name": "a", "templates": ["This {} is close"]}], "entry 1 ('a'): template 'This {} is close' needs exactly two"),
    ([{"name": "a"}, {"name": "a", "temperature": 2}], "entry 2 ('a'): the name is used twice"),
    ([{"name": "a", "temperature": 0}], "entry 1 ('a'): temperature 0 must be a number > 0"),
    ([{"name": "a", "prompt_set": "paper", "depth_classes": ["x"] * 7}], "give 'prompt_set' or 'depth_classes'"),
    ([{"name": "a", "objects": "chair"}], "entry 1 ('a'): 'objects' must be a list of strings"),
    ([{"prompt_set": "prompt1"}], "entry 1 needs a \"name\""),
    ([{"name": "a"}, "prompt1"], "entry 2 is a str, not an object"),
    ({"name": "a"}, "must hold a non-empty JSON list"),
    ([], "must hold a non-empty JSON list"),
    ("[{\"name\": \"a\",}]", "is not JSON"),
])
def test_bad_sweep_entry_is_one_line_before_any_image(capsys, tmp_path, entries, found):
    assert found in sweep_error(capsys, tmp_path, entries)


# ---------------------------------------------------------------- the cache
@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def entries(cache):
    return sorted(os.path.relpath(os.path.join(d, f), cache) for d, _, files in os.walk(cache) for f in files
                  if f.endswith(".npy"))


def test_cache_hit_equals_miss_equals_no_cache_and_skips_the_image_tower(nyu_like, checkpoint, tmp_path, cache,
                                                                         monkeypatch):
    plain = run_eval(nyu_like, checkpoint, tmp_path / "plain.json", "--batch_size", "4")
    cold = run_eval(nyu_like, checkpoint, tmp_path / "cold.json", "--batch_size", "4", "--cache", str(cache))
    assert cold["cache"] == {"views_read": 0, "views_computed": 12} and len(entries(cache)) == 12
    monkeypatch.setattr(clip.model.ModifiedResNet, "trunk", lambda *a: pytest.fail("the image tower ran"))
    warm = run_eval(nyu_like, checkpoint, tmp_path / "warm.json", "--batch_size", "4", "--cache", str(cache))
    assert warm["cache"] == {"views_read": 12, "views_computed": 0}
    assert plain["per_image"] == cold["per_image"] == warm["per_image"]
    other = run_eval(nyu_like, checkpoint, tmp_path / "other.json", "--cache", str(cache), "--prompt_set", "prompt1",
                     "--temperature", "2")  # a new setting costs its text only
    assert other["cache"] == {"views_read": 12, "views_computed": 0}


def test_new_setting_from_warm_cache_equals_a_fresh_run(nyu_like, checkpoint, tmp_path, cache, sweep_file):
    run_eval(nyu_like, checkpoint, tmp_path / "fill.json", "--cache", str(cache), "--limit", "3")  # images 0-2 only
    warm = run_eval(nyu_like, checkpoint, tmp_path / "warm.json", "--cache", str(cache), "--sweep", sweep_file)
    fresh = run_eval(nyu_like, checkpoint, tmp_path / "fresh.json", "--sweep", sweep_file)
    assert warm["cache"] == {"views_read": 6, "views_computed": 6}  # --limit's three were kept, three computed
    assert [r["per_image"] for r in warm["runs"]] == [r["per_image"] for r in fresh["runs"]]


def test_interrupted_cache_run_resumes_where_it_stopped(nyu_like, checkpoint, tmp_path, cache, monkeypatch):
    store, stored = FeatureCache.store, []

    def store_then_interrupt(self, *args):
        if len(stored) == 5:
            raise KeyboardInterrupt
        store(self, *args)
        stored.append(args)
    monkeypatch.setattr(FeatureCache, "store", store_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_eval(nyu_like, checkpoint, tmp_path / "r.json", "--cache", str(cache), "--batch_size", "2")
    monkeypatch.undo()
    assert len(entries(cache)) == 5 and not any(f.endswith(".part") for _, _, fs in os.walk(cache) for f in fs)
    assert not (tmp_path / "r.json").exists()
    resumed = run_eval(nyu_like, checkpoint, tmp_path / "r.json", "--cache", str(cache), "--batch_size", "2")
    assert resumed["cache"] == {"views_read": 5, "views_computed": 7}
    assert resumed["per_image"] == run_eval(nyu_like, checkpoint, tmp_path / "plain.json")["per_image"]


def test_corrupt_entry_is_reported_and_recomputed(nyu_like, checkpoint, tmp_path, cache, capsys):
    first = run_eval(nyu_like, checkpoint, tmp_path / "a.json", "--cache", str(cache), "--limit", "2")
    damaged = cache / entries(cache)[0]
    damaged.write_bytes(damaged.read_bytes()[:1000])
    capsys.readouterr()
    second = run_eval(nyu_like, checkpoint, tmp_path / "b.json", "--cache", str(cache), "--limit", "2")
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(damaged) in warnings[0] and "recomputing it" in warnings[0]
    assert second["cache"] == {"views_read": 3, "views_computed": 1} and second["per_image"] == first["per_image"]
    third = run_eval(nyu_like, checkpoint, tmp_path / "c.json", "--cache", str(cache), "--limit", "2")
    assert third["cache"] == {"views_read": 4, "views_computed": 0}  # rewritten whole


def test_changed_rgb_file_or_setting_is_not_served_from_the_cache(nyu_like, checkpoint, tmp_path, cache):
    data = tmp_path / "data"
    shutil.copytree(nyu_like, data)
    run_eval(str(data), checkpoint, tmp_path / "a.json", "--cache", str(cache), "--limit", "2")
    changed = data / "official_splits" / "test" / "bathroom" / "rgb_00001.jpg"
    Image.open(changed).rotate(180).save(changed)
    again = run_eval(str(data), checkpoint, tmp_path / "b.json", "--cache", str(cache), "--limit", "2")
    fresh = run_eval(str(data), checkpoint, tmp_path / "c.json", "--limit", "2")
    assert again["cache"] == {"views_read": 2, "views_computed": 2} and again["per_image"] == fresh["per_image"]
    for flag in (["--normalize", "clip"], ["--no_flip", "--features", "value"]):
        other = run_eval(str(data), checkpoint, tmp_path / "d.json", "--cache", str(cache), "--limit", "2", *flag)
        assert other["cache"]["views_read"] == 0, flag


def test_two_processes_each_write_their_share(nyu_like, checkpoint, tmp_path, cache):
    out = tmp_path / "two.json"
    torchrun("eval.py", "--data_path", nyu_like, "--testfile_nyu", "auto", "--limit", "3", "--clip_model", checkpoint,
             "--workers", "0", "--device", "cpu", "--cache", str(cache), "--output", str(out), cwd=tmp_path,
             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert len(entries(cache)) == 6
    warm = run_eval(nyu_like, checkpoint, tmp_path / "warm.json", "--limit", "3", "--cache", str(cache))
    assert warm["cache"] == {"views_read": 6, "views_computed": 0}
