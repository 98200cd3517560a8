"""--runtime: CLIP's image tower through OpenVINO or ONNX Runtime on a CPU gives PyTorch's depth (within 1e-5 m) for
every dense feature kind at two input sizes; auto falls back to PyTorch in one line, whatever keeps the runtime from
running (a graph cache that cannot be created or written, an export that fails after the check); a broken export on
disk, or one of other weights under the right key, is made again; cached features are keyed by runtime."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import cli
import feature_cache
import graph_runtime
import predict
from conftest import ROOT, optional
from monoclip import MonoCLIP
from synthetic.checkpoint import make_state_dict
from test_errors import documented

optional("onnx")
INSTALLED = [name for name in graph_runtime.AUTO_ORDER if graph_runtime.version(name)]
IN_PROCESS = [name for name in INSTALLED if name != "openvino"]  # OpenVINO is tested in a process of its own
SIZES = [(64, 96), (96, 64)]  # rows, cols: two input sizes, each a graph of its own


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("vit") / "vit16.pt"
    torch.save(make_state_dict(0, vit_patch=16, vit_width=64, vit_layers=2, embed_dim=64), path)
    return str(path)


KINDS = [("resnet", "paper"), ("resnet", "value"), ("resnet", "maskclip"), ("vit", "tokens"), ("vit", "value"),
         ("vit", "maskclip")]


def largest_differences(runtime, features, path):
    """[largest |depth - PyTorch's depth| (m) at each of SIZES] for one feature kind through one runtime."""
    reference = MonoCLIP(path, device="cpu", features=features)
    model = MonoCLIP(path, device="cpu", features=features, runtime=runtime)
    assert model.backbone.runtime == runtime and feature_cache.model_settings(model)["runtime"].startswith(runtime)
    differences = []
    for size in SIZES:
        x = torch.cat([graph_runtime.check_image(*size, seed) for seed in (1, 2)])
        with torch.inference_mode():
            differences.append((model.predict(x) - reference.predict(x)).abs().max().item())
    assert {size for _, size in model.backbone.image_tower.graphs} >= set(SIZES)  # a graph per size
    return differences


def bound(features):
    """The paper's path within the 1e-5 m asked for; the other kinds within the check's bound (graph_runtime.py says
    what rounding alone gives on these tiny towers)."""
    return 1e-5 if features == "paper" else graph_runtime.CHECK_METRES


@pytest.mark.skipif("onnxruntime" not in INSTALLED, reason="onnxruntime is not installed")
@pytest.mark.parametrize("tower,features", KINDS)
def test_onnxruntime_gives_pytorchs_depth(tower, features, checkpoint, vit_checkpoint):
    differences = largest_differences("onnxruntime", features, checkpoint if tower == "resnet" else vit_checkpoint)
    assert max(differences) <= bound(features), differences


@pytest.mark.skipif("openvino" not in INSTALLED, reason="openvino is not installed")
def test_openvino_gives_pytorchs_depth(checkpoint, vit_checkpoint):
    """In a process of its own: once OpenVINO is loaded, a later forked DataLoader worker that fails, followed by a
    subprocess, crashed the test process (SIGSEGV), so it never loads into this one."""
    script = (f"import json, sys; sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, 'tests')!r}]; "
              f"import test_runtime; print(json.dumps([test_runtime.largest_differences('openvino', features, path) "
              f"for features, path in {[(f, checkpoint if t == 'resnet' else vit_checkpoint) for t, f in KINDS]!r}]))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    for (_, features), differences in zip(KINDS, json.loads(result.stdout.splitlines()[-1])):
        assert max(differences) <= bound(features), (features, differences)


def test_auto_falls_back_in_one_line(checkpoint, monkeypatch, capsys):
    monkeypatch.setattr(graph_runtime, "version", lambda name: torch.__version__ if name == "torch" else None)
    monkeypatch.setattr("clip_runtime.version", graph_runtime.version)
    model = MonoCLIP(checkpoint, device="cpu", runtime="auto")
    err = capsys.readouterr().err.strip().splitlines()
    assert model.backbone.runtime == "torch" and "runtime" not in feature_cache.model_settings(model)
    assert err == ["note: --runtime auto runs the image tower with PyTorch (onnxruntime is not installed; openvino is "
                   "not installed)"]
    with pytest.raises(ValueError) as error:
        MonoCLIP(checkpoint, device="cpu", runtime="openvino")
    assert documented(str(error.value)) and "pip install openvino onnx" in str(error.value)


@pytest.mark.skipif(not IN_PROCESS, reason="onnxruntime is not installed")
def test_a_runtime_that_fails_the_check_is_not_used(checkpoint, monkeypatch, capsys):
    monkeypatch.setattr("clip_runtime.CHECK_METRES", -1.0)  # nothing passes
    monkeypatch.setattr("clip_runtime.AUTO_ORDER", IN_PROCESS[:1])  # OpenVINO stays out of this process (see above)
    model = MonoCLIP(checkpoint, device="cpu", runtime="auto")
    line = capsys.readouterr().err.strip()
    assert model.backbone.runtime == "torch" and line.startswith("note: --runtime auto runs the image tower with "
                                                                 "PyTorch (") and "differs from PyTorch's by" in line
    with pytest.raises(ValueError) as error:
        MonoCLIP(checkpoint, device="cpu", runtime=IN_PROCESS[0])
    assert documented(str(error.value))


@pytest.mark.skipif(not IN_PROCESS, reason="onnxruntime is not installed")
def test_a_broken_export_is_made_again(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEPTHCLIP_GRAPH_CACHE", str(tmp_path))
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    first = MonoCLIP(checkpoint, device="cpu", runtime=IN_PROCESS[0])
    expected = first.predict(x)
    assert first.backbone.image_tower.exported == 2  # the check's size and this one
    exports = [os.path.join(tmp_path, key, "dense.onnx") for key in os.listdir(tmp_path)]
    for path in exports:
        with open(path, "wb") as f:
            f.write(b"not a graph")
    capsys.readouterr()
    again = MonoCLIP(checkpoint, device="cpu", runtime=IN_PROCESS[0])  # the check's result is kept: no check graph
    assert torch.allclose(again.predict(x), expected, atol=1e-6)
    assert again.backbone.image_tower.exported == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not the file exported there" in err[0] and "replaced or damaged" in err[0]
    warm = MonoCLIP(checkpoint, device="cpu", runtime=IN_PROCESS[0])
    warm.predict(x)
    assert warm.backbone.image_tower.exported == 0  # read from the cache: start-up does not grow with each run


def run_size_export(cache, size=(64, 96)):
    """The folder of the export for `size` in a cache (the check's size has another)."""
    for key in os.listdir(cache):
        with open(os.path.join(cache, key, "settings.json")) as f:
            if json.load(f)["size"] == list(size):
                return os.path.join(cache, key)
    raise AssertionError(f"no export for {size} in {cache}")


@pytest.mark.skipif(not IN_PROCESS, reason="onnxruntime is not installed")
def test_an_export_of_other_weights_under_the_key_is_not_used(checkpoint, tmp_path, monkeypatch, capsys):
    """A valid graph of other weights copied over the right key (the file alone, or its folder with settings.json)
    would give another model's depth (0.98 m off on a real pair); it is exported again with one warning line."""
    other = tmp_path / "other.pt"
    torch.save(make_state_dict(1), other)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    monkeypatch.setenv("DEPTHCLIP_GRAPH_CACHE", str(tmp_path / "mine"))
    expected = MonoCLIP(checkpoint, device="cpu").predict(x)
    MonoCLIP(checkpoint, device="cpu", runtime=IN_PROCESS[0]).predict(x)
    monkeypatch.setenv("DEPTHCLIP_GRAPH_CACHE", str(tmp_path / "theirs"))
    MonoCLIP(str(other), device="cpu", runtime=IN_PROCESS[0]).predict(x)
    mine, theirs = run_size_export(tmp_path / "mine"), run_size_export(tmp_path / "theirs")
    monkeypatch.setenv("DEPTHCLIP_GRAPH_CACHE", str(tmp_path / "mine"))
    for copied, fault in [(["dense.onnx"], "is not the file exported there"),
                          (["dense.onnx", "settings.json"], "was exported for another weights")]:
        for name in copied:
            shutil.copyfile(os.path.join(theirs, name), os.path.join(mine, name))
        capsys.readouterr()
        model = MonoCLIP(checkpoint, device="cpu", runtime=IN_PROCESS[0])
        assert (model.predict(x) - expected).abs().max() <= 1e-5
        assert model.backbone.image_tower.exported == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"warning: the exported image tower {mine}") and fault in err[0], err


@pytest.mark.skipif(not IN_PROCESS, reason="onnxruntime is not installed")
def test_an_export_that_does_not_load_is_made_again(checkpoint, tmp_path, monkeypatch, capsys):
    """A file the runtime cannot read although settings.json vouches for it (written by hand, say)."""
    monkeypatch.setenv("DEPTHCLIP_GRAPH_CACHE", str(tmp_path))
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    expected = MonoCLIP(checkpoint, device="cpu", runtime=IN_PROCESS[0]).predict(x)
    folder = run_size_export(tmp_path)
    with open(os.path.join(folder, "dense.onnx"), "wb") as f:
        f.write(b"not a graph")
    with open(os.path.join(folder, "settings.json")) as f:
        settings = json.load(f)
    with open(os.path.join(folder, "settings.json"), "w") as f:
        json.dump({**settings, "sha256": hashlib.sha256(b"not a graph").hexdigest()}, f)
    capsys.readouterr()
    model = MonoCLIP(checkpoint, device="cpu", runtime=IN_PROCESS[0])
    assert torch.allclose(model.predict(x), expected, atol=1e-6) and model.backbone.image_tower.exported == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{folder}/dense.onnx does not load (" in err[0] and "exporting it again" in err[0]


def unwritable_cache(tmp_path, monkeypatch):
    """DEPTHCLIP_GRAPH_CACHE under a regular file: a folder no one (root included) can create."""
    (tmp_path / "file").write_text("")
    cache = str(tmp_path / "file" / "graphs")
    monkeypatch.setenv("DEPTHCLIP_GRAPH_CACHE", cache)
    return cache


@pytest.mark.skipif(not IN_PROCESS, reason="onnxruntime is not installed")
def test_a_graph_cache_that_cannot_be_created_falls_back_under_auto(checkpoint, tmp_path, monkeypatch, capsys):
    """predict.py with default flags (--runtime auto) exited with a raw [Errno 30]; now one note and PyTorch.
    A runtime named by the user refuses in one documented line naming the folder and DEPTHCLIP_GRAPH_CACHE."""
    cache = unwritable_cache(tmp_path, monkeypatch)
    monkeypatch.setattr("clip_runtime.AUTO_ORDER", IN_PROCESS[:1])  # OpenVINO stays out of this process
    model = MonoCLIP(checkpoint, device="cpu", runtime="auto")
    err = capsys.readouterr().err.strip().splitlines()
    assert model.backbone.runtime == "torch"
    assert len(err) == 1 and err[0].startswith("note: --runtime auto runs the image tower with PyTorch (") and \
        f"cannot be exported into {cache} (Not a directory)" in err[0], err
    with pytest.raises(ValueError) as error:
        MonoCLIP(checkpoint, device="cpu", runtime=IN_PROCESS[0])
    assert documented(str(error.value)) and cache in str(error.value) and "DEPTHCLIP_GRAPH_CACHE" in str(error.value)
    Image.fromarray(np.full((48, 64, 3), 100, np.uint8)).save(tmp_path / "room.png")
    capsys.readouterr()
    cli.run(lambda: predict.main([str(tmp_path / "room.png"), "--clip_model", checkpoint, "--device", "cpu",
                                  "-o", str(tmp_path / "out")]))  # predict.py's default flags: no SystemExit
    assert capsys.readouterr().err.count("note: --runtime auto runs the image tower with PyTorch") == 1
    assert os.listdir(tmp_path / "out")


@pytest.mark.skipif(not IN_PROCESS, reason="onnxruntime is not installed")
def test_a_read_only_graph_cache_falls_back_under_auto(checkpoint, tmp_path, monkeypatch, capsys):
    """[Errno 30] from os.makedirs (a read-only file system): the same as a folder that cannot be created."""
    monkeypatch.setenv("DEPTHCLIP_GRAPH_CACHE", str(tmp_path / "graphs"))
    monkeypatch.setattr("clip_runtime.AUTO_ORDER", IN_PROCESS[:1])

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(graph_runtime.os, "makedirs", read_only)
    assert MonoCLIP(checkpoint, device="cpu", runtime="auto").backbone.runtime == "torch"
    assert "(Read-only file system)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="set DEPTHCLIP_GRAPH_CACHE to a writable folder") as error:
        MonoCLIP(checkpoint, device="cpu", runtime=IN_PROCESS[0])
    assert documented(str(error.value))


@pytest.mark.skipif(not IN_PROCESS, reason="onnxruntime is not installed")
def test_a_graph_that_fails_after_the_check_runs_with_pytorch_under_auto(checkpoint, tmp_path, monkeypatch, capsys):
    """The check passed at one size; another size's export then cannot be made (the cache turned read-only, the
    disk filled up), or its graph fails to run: under auto that size runs with PyTorch (one warning line each);
    under a named runtime the run stops in one line."""
    monkeypatch.setenv("DEPTHCLIP_GRAPH_CACHE", str(tmp_path / "graphs"))
    monkeypatch.setattr("clip_runtime.AUTO_ORDER", IN_PROCESS[:1])
    reference = MonoCLIP(checkpoint, device="cpu")
    model = MonoCLIP(checkpoint, device="cpu", runtime="auto")
    named = MonoCLIP(checkpoint, device="cpu", runtime=IN_PROCESS[0])
    assert model.backbone.runtime == IN_PROCESS[0]
    capsys.readouterr()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(graph_runtime.tempfile, "mkdtemp", full_disk)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(model.predict(x), reference.predict(x), atol=1e-6)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: the image tower cannot be exported into {tmp_path / 'graphs'} (No space left on device); "
                   f"set DEPTHCLIP_GRAPH_CACHE to a writable folder, or use --runtime torch; --runtime auto runs the "
                   f"image tower at 64x96 with PyTorch instead"]
    with pytest.raises(ValueError, match="No space left on device") as error:
        named.predict(x)
    assert documented(str(error.value))
    monkeypatch.undo()
    monkeypatch.setenv("DEPTHCLIP_GRAPH_CACHE", str(tmp_path / "graphs"))
    y = torch.randn(1, 3, 96, 64, generator=torch.Generator().manual_seed(2))
    model.predict(y)  # exported and loaded at 96x64

    def crash(image):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : a kernel failed")
    for kind, size in list(model.backbone.image_tower.graphs):
        model.backbone.image_tower.graphs[kind, size] = crash
    assert torch.allclose(model.predict(y), reference.predict(y), atol=1e-6)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a kernel failed" in err[0] and "at 96x64 with PyTorch instead" in err[0]


@pytest.mark.skipif(not IN_PROCESS, reason="onnxruntime is not installed")
def test_the_runtime_is_in_the_results_and_the_cache_key(checkpoint):
    torch_model = MonoCLIP(checkpoint, device="cpu")
    graph_model = MonoCLIP(checkpoint, device="cpu", runtime=IN_PROCESS[0])
    assert torch_model.config()["runtime"] == f"torch {torch.__version__}"
    assert graph_model.config()["runtime"] == f"{IN_PROCESS[0]} {graph_runtime.version(IN_PROCESS[0])}"
    assert feature_cache.model_settings(torch_model) != feature_cache.model_settings(graph_model)


def test_settings_a_runtime_cannot_run_are_refused(checkpoint):
    with pytest.raises(ValueError) as error:
        MonoCLIP(checkpoint, device="cpu", runtime="openvino", fold_batchnorm=False)
    assert documented(str(error.value))
    assert MonoCLIP(checkpoint, device="cpu", runtime="auto", fold_batchnorm=False).backbone.runtime == "torch"


@pytest.mark.parametrize("providers, found", [(["onnxruntime-gpu"], "1.99.0"), ([], "of unknown version")])
def test_a_runtime_installed_under_another_name_has_a_version(monkeypatch, providers, found):
    """onnxruntime-gpu provides the onnxruntime module; asking its metadata by the module's name failed under
    --runtime auto with a raw PackageNotFoundError before any check."""
    import importlib.metadata
    monkeypatch.setattr(graph_runtime.importlib.util, "find_spec", lambda name: object())
    real = importlib.metadata.version

    def version(name):
        if name == "onnxruntime":
            raise importlib.metadata.PackageNotFoundError(name)
        return "1.99.0" if name == "onnxruntime-gpu" else real(name)
    monkeypatch.setattr(graph_runtime.importlib.metadata, "version", version)
    monkeypatch.setattr(graph_runtime.importlib.metadata, "packages_distributions",
                        lambda: {"onnxruntime": providers})
    assert graph_runtime.version("onnxruntime") == found
