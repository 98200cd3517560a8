"""clip/: tokenizer ids, checkpoint formats, downloads and their failure modes."""
import hashlib
import io
import os
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

import clip
import clip.clip as clip_module
import downloads


def test_available_models_are_the_nine_releases():
    assert clip.available_models() == ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16",
                                       "ViT-L/14", "ViT-L/14@336px"]


@pytest.mark.parametrize("text, ids", [  # ids from OpenAI's reference tokenizer
    ("This object is giant", [589, 14115, 533, 4687]),
    ("This object is a little remote", [589, 14115, 533, 320, 1274, 9687]),
    ("Hello, World! it's 2022", [3306, 267, 1002, 256, 585, 568, 273, 271, 273, 273]),
    ("café &amp; naïve", [15304, 261, 1097, 35689, 563]),
    ("  UPPER\tcase  ", [7067, 2068]),
])
def test_tokenize_matches_openai_ids(text, ids):
    tokens = clip.tokenize(text)
    assert tokens.shape == (1, 77)
    assert tokens[0, :len(ids) + 2].tolist() == [49406, *ids, 49407]
    assert not tokens[0, len(ids) + 2:].any()


def test_tokenize_rejects_or_truncates_long_text():
    with pytest.raises(RuntimeError, match="too long"):
        clip.tokenize("far " * 100)
    tokens = clip.tokenize("far " * 100, truncate=True)[0]
    assert tokens[0] == 49406 and tokens[-1] == 49407


def test_state_dict_file_loads_with_fp16_rounded_layer_weights(small_state_dict, small_state_dict_file):
    """As in OpenAI's (and the authors') build_model, conv/linear/attention weights pass through fp16 even on CPU;
    norms and embeddings keep float32. The released weights are fp16 already, so only fp32 checkpoints round."""
    model, preprocess = clip.load(small_state_dict_file, device="cpu")
    loaded = model.state_dict()
    rounded = ["visual.conv1.weight", "visual.attnpool.c_proj.weight", "transformer.resblocks.0.attn.in_proj_weight",
               "text_projection"]
    exact = ["visual.bn1.weight", "token_embedding.weight", "positional_embedding", "ln_final.weight"]
    for key in rounded:
        assert torch.equal(loaded[key], small_state_dict[key].half().float()), key
        assert not torch.equal(loaded[key], small_state_dict[key]), key
    for key in exact:
        assert torch.equal(loaded[key], small_state_dict[key]), key
    assert model.visual.input_resolution == 224 and model.dtype == torch.float32


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
def test_torchscript_archive_loads_like_the_released_files(small_state_dict, small_state_dict_file, tmp_path):
    """The released .pt files are TorchScript archives with extra scalar entries; both formats give one model."""
    source, _ = clip.load(small_state_dict_file, device="cpu")
    for name, value in [("input_resolution", 224), ("context_length", 77), ("vocab_size", 49408)]:
        if hasattr(source, name):
            delattr(source, name)
        source.register_buffer(name, torch.tensor(value))
    archive = tmp_path / "scripted.pt"
    torch.jit.trace_module(source, {"encode_text": torch.zeros(1, 77, dtype=torch.long)}, check_trace=False).save(
        str(archive))
    model, _ = clip.load(str(archive), device="cpu")
    text = clip.tokenize(["This object is close", "This object is far"])
    reference, _ = clip.load(small_state_dict_file, device="cpu")
    with torch.no_grad():
        assert torch.equal(model.encode_text(text), reference.encode_text(text))


def test_unknown_name_lists_available_models():
    with pytest.raises(RuntimeError, match=r"RN51 not found.*RN50.*ViT-L/14@336px.*path"):
        clip.load("RN51", device="cpu")


@pytest.mark.parametrize("name", ["rn5O.pt", "weights/RN50"])
def test_missing_checkpoint_file_is_no_such_file(name):
    with pytest.raises(RuntimeError, match=rf"^{name}: no such file; give the path of a CLIP checkpoint, or a model "
                                           rf"name \(RN50, "):
        clip.load(name, device="cpu")


def test_jit_true_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="jit=True"):
        clip.load("RN50", device="cpu", jit=True)


@pytest.mark.parametrize("content, found", [
    (b"this is not a checkpoint", "is not a CLIP checkpoint: it is neither a TorchScript archive nor a file written "
                                  "by torch.save"),
    (None, "not a readable CLIP checkpoint"),  # a truncated torch.save file
])
def test_unreadable_checkpoints_are_named(tmp_path, small_state_dict_file, content, found):
    path = tmp_path / "bad.pt"
    if content is None:
        with open(small_state_dict_file, "rb") as f:
            content = f.read()[:100_000]
    path.write_bytes(content)
    with pytest.raises(RuntimeError, match=found) as error:
        clip.load(str(path), device="cpu")
    assert str(path) in str(error.value)


def test_state_dict_of_another_model_names_missing_keys(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 64)}, path)
    with pytest.raises(RuntimeError, match=r"some other model: missing expected CLIP keys positional_embedding"):
        clip.load(str(path), device="cpu")


class Note:
    """Stands for arbitrary pickled Python objects, which loading a checkpoint must never instantiate."""


def test_pickled_objects_are_not_executed(tmp_path):
    path = tmp_path / "pickle.pt"
    torch.save({"note": Note()}, path)
    with pytest.raises(RuntimeError, match="not a readable CLIP checkpoint"):
        clip.load(str(path), device="cpu")


class FakeResponse(io.BytesIO):
    def __init__(self, payload):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


def serve(monkeypatch, payload=None, error=None):
    def urlopen(url):
        if error:
            raise error
        return FakeResponse(payload)
    monkeypatch.setattr(downloads.urllib.request, "urlopen", urlopen)


def test_download_checks_sha256_and_renames_when_complete(monkeypatch, tmp_path):
    payload = b"weights" * 1000
    sha = hashlib.sha256(payload).hexdigest()
    serve(monkeypatch, payload)
    path = downloads.download("https://example.invalid/models/M.pt", str(tmp_path / "M.pt"), sha256=sha)
    assert path == str(tmp_path / "M.pt") and open(path, "rb").read() == payload
    assert os.listdir(tmp_path) == ["M.pt"]


def test_download_with_wrong_sha256_is_deleted_and_reported(monkeypatch, tmp_path):
    payload = b"corrupted weights"
    expected = "0" * 64
    serve(monkeypatch, payload)
    with pytest.raises(RuntimeError) as error:
        downloads.download("https://example.invalid/models/M.pt", str(tmp_path / "M.pt"), sha256=expected)
    assert expected in str(error.value) and hashlib.sha256(payload).hexdigest() in str(error.value)
    assert os.listdir(tmp_path) == []


def test_download_without_network_says_where_to_put_the_file(monkeypatch, tmp_path):
    serve(monkeypatch, error=urllib.error.URLError("Name or service not known"))
    with pytest.raises(RuntimeError) as error:
        clip.load("RN50", device="cpu", download_root=str(tmp_path))
    message = str(error.value)
    assert clip_module._MODELS["RN50"] in message and str(tmp_path / "RN50.pt") in message
    assert os.listdir(tmp_path) == []


def test_interrupted_download_leaves_no_file(monkeypatch, tmp_path):
    class Interrupted(FakeResponse):
        def read(self, size=-1):
            if self.tell() > 0:
                raise KeyboardInterrupt
            return super().read(size)
    monkeypatch.setattr(downloads.urllib.request, "urlopen", lambda url: Interrupted(b"x" * 200_000))
    with pytest.raises(KeyboardInterrupt):
        downloads.download("https://example.invalid/models/M.pt", str(tmp_path / "M.pt"), sha256="0" * 64)
    assert os.listdir(tmp_path) == []


def test_preprocess_matches_openais_torchvision_pipeline():
    """clip.load's preprocess is OpenAI's (Resize bicubic, CenterCrop, RGB, ToTensor, Normalize), without torchvision."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor
    from clip.clip import CLIP_MEAN, CLIP_STD, _transform
    reference = Compose([Resize(224, interpolation=InterpolationMode.BICUBIC), CenterCrop(224),
                         lambda image: image.convert("RGB"), ToTensor(), Normalize(CLIP_MEAN, CLIP_STD)])
    rng = np.random.default_rng(2)
    for size, mode in [((333, 250), "RGB"), ((250, 401), "L"), ((224, 224), "RGBA"), ((640, 479), "RGB")]:
        image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)[..., :len(mode)]
                                .squeeze(), mode)
        torch.testing.assert_close(_transform(224)(image), reference(image), atol=1e-6, rtol=0)
