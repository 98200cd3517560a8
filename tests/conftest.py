"""Shared fixtures: a seeded checkpoint and NYU-like data, generated once per test session in a temporary folder;
optional packages imported or their tests skipped with the reason."""
import importlib
import json
import os
import subprocess
import sys
import tempfile

import pytest
import torch

from synthetic.checkpoint import make_state_dict
from synthetic.nyu_like import write_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("DEPTHCLIP_GRAPH_CACHE", tempfile.mkdtemp(prefix="depthclip-graphs-"))  # the runtimes'
# exports (graph_runtime.py) go to a folder of this session's, not the user's ~/.cache


def torchrun(script, *argv, **run):
    """Runs the repository's script under torchrun, two processes on the CPU (gloo); what the ranks said, should it
    fail. run: subprocess.run's cwd (default: the repository) or env."""
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           os.path.join(ROOT, script), *argv], capture_output=True, text=True, timeout=300,
                          **{"cwd": ROOT, **run})
    assert done.returncode == 0, done.stderr[-3000:]


def optional(name):
    """import name, or skip the calling module's tests saying why: not installed, or installed but broken (a
    torchvision built for another torch raises RuntimeError at import, not ImportError)."""
    try:
        return importlib.import_module(name)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        pytest.skip(f"{name} cannot be imported ({type(error).__name__}: {reason})", allow_module_level=True)


@pytest.fixture(scope="session")
def golden():
    with open(os.path.join(ROOT, "tests", "golden.json")) as f:
        return json.load(f)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """golden.json's checkpoint: synthetic/checkpoint.py --seed 0 (RN50 geometry, one block per stage)."""
    path = tmp_path_factory.mktemp("checkpoints") / "rn50_seed0.pt"
    torch.save(make_state_dict(0), path)
    return str(path)


@pytest.fixture(scope="session")
def nyu_like(tmp_path_factory):
    """golden.json's data: synthetic/nyu_like.py --count 6 --seed 0, as <root>/official_splits/test."""
    root = tmp_path_factory.mktemp("nyu")
    write_dataset(str(root), count=6, seed=0)
    return str(root)


@pytest.fixture(scope="session")
def model(checkpoint):
    from monoclip import MonoCLIP
    return MonoCLIP(checkpoint, device="cpu")


@pytest.fixture(scope="session")
def small_state_dict():
    """A small ResNet CLIP (trunk 512 channels, embed 64) in OpenAI's layout."""
    return make_state_dict(0, vision_width=16, embed_dim=64)


@pytest.fixture(scope="session")
def small_state_dict_file(small_state_dict, tmp_path_factory):
    path = tmp_path_factory.mktemp("small_ckpt") / "small.pt"
    torch.save(small_state_dict, path)
    return str(path)
