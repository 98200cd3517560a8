"""torch.hub entry points (hubconf.py), loaded from this folder as torch.hub.load(..., source="local") does."""
import numpy as np
import pytest
import torch
from PIL import Image

import photos
from conftest import ROOT


def test_depthclip_entry_is_a_ready_monoclip(checkpoint, model):
    hub_model = torch.hub.load(ROOT, "depthclip", source="local", clip_model=checkpoint, device="cpu")
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(hub_model.predict(x), model.predict(x), atol=0, rtol=0)
    assert hub_model.prompts == model.prompts


def test_depthclip_entry_passes_monoclip_settings_and_refuses_pretrained_false(checkpoint):
    warm = torch.hub.load(ROOT, "depthclip", source="local", clip_model=checkpoint, device="cpu", temperature=2.0,
                          depth_classes=["near", "far"], bins=[1, 4])
    assert warm.prompts.temperature == 2.0 and warm.prompts.bins == (1, 4)
    with pytest.raises(ValueError, match="pretrained=False"):
        torch.hub.load(ROOT, "depthclip", source="local", pretrained=False, clip_model=checkpoint)


def test_transform_entry_is_predicts_input():
    transform = torch.hub.load(ROOT, "transform", source="local")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8))
    x = transform(image)
    assert x.shape == (1, 3, 320, 544)
    torch.testing.assert_close(x, photos.model_input(image, 544, 32, "imagenet"), atol=0, rtol=0)


def test_hub_loads_beside_other_packages_named_clip_and_datasets(checkpoint, tmp_path):
    """A user who has imported OpenAI's clip or Hugging Face's datasets still gets this repository's, and keeps
    theirs."""
    for name in ("clip", "datasets"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"WHOSE = 'theirs'\n")
    code = f"""
import sys
sys.path.insert(0, {str(tmp_path)!r})
import clip, datasets
import torch
model = torch.hub.load({ROOT!r}, "depthclip", source="local", clip_model={checkpoint!r}, device="cpu")
depth = model.predict(torch.zeros(1, 3, 64, 96))
assert depth.shape == (1, 1, 64, 96), depth.shape
assert sys.modules["clip"].WHOSE == "theirs" and sys.modules["datasets"].WHOSE == "theirs"
assert "options" not in sys.modules and "matplotlib" not in sys.modules and "eval" not in sys.modules
print("ok")
"""
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path))
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_hub_dependencies_are_what_it_imports():
    """Every third-party package the modules behind hubconf.py import at their top is in its dependencies list, and
    nothing else is (measured on a fresh interpreter that imports hubconf alone)."""
    import ast
    import json
    import os
    import subprocess
    import sys
    code = ("import json, sys, hubconf; print(json.dumps([[m.__file__, hubconf.dependencies] for m in "
            "list(sys.modules.values()) if hubconf.ours(m)]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = json.loads(run.stdout)
    imported = set()
    for file, _ in loaded:
        with open(file) as f:
            tree = ast.parse(f.read())
        for node in tree.body:  # top-level imports: what loading the entry points needs
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            imported |= {n.split(".")[0] for n in names}
    local = {os.path.splitext(entry)[0] for entry in os.listdir(ROOT)}
    third_party = imported - set(sys.stdlib_module_names) - local
    assert third_party == set(loaded[0][1]), third_party
