"""A local file at fault is named as such: a checkpoint given as --clip_model or open_clip:<model>@FILE, or a file a
cache holds (~/.cache/clip's download), that is truncated, damaged or of another layout gives one line naming the
file, what is wrong with it (unreadable, pickled objects, missing or unexpected keys counted and named, a SHA256)
and what to do; it never blames the network or suggests a download for a file the user gave. (The graph runtime's
exports: tests/test_runtime.py; the feature cache's entries: tests/test_features.py.)"""
import hashlib
import io
import json
import pathlib
import urllib.error

import pytest
import torch
from PIL import Image

import cli
import clip
import downloads
import predict
from clip import clip as clip_module
from conftest import optional


def load_error(path, download=False):
    """clip.load's one line for a bad checkpoint file, which names it first (and, download=False, suggests no
    download: the documented line for a file of another kind still says 're-download the file')."""
    with pytest.raises(RuntimeError) as error:
        clip.load(str(path), device="cpu")
    message = str(error.value)
    assert len(message.splitlines()) == 1 and message.startswith(str(path)), message
    assert download or "download" not in message, message
    return message


def test_a_truncated_checkpoint_is_named_truncated_not_a_download(small_state_dict_file, tmp_path):
    path = tmp_path / "RN50.pt"
    path.write_bytes(pathlib.Path(small_state_dict_file).read_bytes()[:100_000])
    assert load_error(path) == (f"{path} is a zip archive but not a readable CLIP checkpoint (PytorchStreamReader "
                                f"failed reading zip archive: failed finding central directory): truncated or "
                                f"damaged; replace it with a whole copy (compare its size and SHA256 with the "
                                f"original's)")


def test_through_predict_it_is_one_line(small_state_dict_file, tmp_path, capsys):
    path = tmp_path / "RN50.pt"
    path.write_bytes(pathlib.Path(small_state_dict_file).read_bytes()[:100_000])
    Image.new("RGB", (64, 48)).save(tmp_path / "room.png")
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda: predict.main([str(tmp_path / "room.png"), "--clip_model", str(path), "--device", "cpu"]))
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 1 and len(err) == 1 and err[0].startswith(f"error: {path} is a zip archive")


def test_another_kind_of_file_or_pickled_objects_are_named(tmp_path):
    other = tmp_path / "notes.pt"
    other.write_bytes(b"these are not weights")
    assert "is not a CLIP checkpoint: it is neither a TorchScript archive nor a file written by torch.save; check " \
           "the path" in load_error(other, download=True)
    pickled = tmp_path / "pickled.pt"
    torch.save({"optimizer": io.StringIO("state")}, pickled)
    assert "it holds pickled objects besides tensors, which are not loaded" in load_error(pickled)


def test_missing_unexpected_and_reshaped_keys_are_counted_and_named(small_state_dict, tmp_path):
    state = dict(small_state_dict)
    for key in ["visual.layer2.0.conv1.weight", "visual.layer2.0.bn1.weight", "visual.layer2.0.bn1.bias",
                "visual.layer2.0.bn1.running_mean"]:
        del state[key]
    state["head.weight"] = torch.zeros(10, 64)
    path = tmp_path / "pruned.pt"
    torch.save(state, path)
    assert load_error(path) == (f"{path} does not fit a CLIP model (4 missing keys: visual.layer2.0.conv1.weight, "
                                f"visual.layer2.0.bn1.weight, visual.layer2.0.bn1.bias, …; 1 unexpected key: "
                                f"head.weight); use an unmodified CLIP checkpoint in OpenAI's format")
    state = {**small_state_dict, "visual.layer1.0.conv2.weight": torch.zeros(8, 16, 3, 3)}
    torch.save(state, path)
    assert "(1 of another shape: visual.layer1.0.conv2.weight is (8, 16, 3, 3), not (16, 16, 3, 3))" in \
        load_error(path)
    torch.save({key: value for key, value in small_state_dict.items() if not key.startswith("visual.layer")}, path)
    message = load_error(path)
    assert "missing expected CLIP keys visual.layer1.0.conv1.weight (1 of the 7 checked; it holds" in message
    torch.save({**small_state_dict, "visual.proj": torch.zeros(64, 64)}, path)  # a ViT's key on a ResNet
    assert load_error(path) == (f"{path} does not fit a CLIP model (its geometry cannot be read: KeyError "
                                f"'visual.positional_embedding'); use an unmodified CLIP checkpoint in OpenAI's format")


# ---------------------------------------------------------------- ~/.cache/clip: a download the cache holds
class Response(io.BytesIO):
    def __init__(self, payload):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


def test_a_damaged_download_in_the_cache_is_named_and_fetched_again(monkeypatch, tmp_path, capsys):
    payload = b"weights" * 1000
    sha = hashlib.sha256(payload).hexdigest()
    target = tmp_path / "M.pt"
    target.write_bytes(payload[:3000])  # truncated
    monkeypatch.setattr(downloads.urllib.request, "urlopen", lambda request: Response(payload))
    downloads.download("https://example.invalid/models/M.pt", str(target), sha256=sha)
    assert target.read_bytes() == payload
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]  # not the bar
    assert len(err) == 1 and err[0] == (f"warning: the {target} already there does not match its SHA256 (expected "
                                        f"{sha}, got {hashlib.sha256(payload[:3000]).hexdigest()}): damaged or "
                                        f"truncated; downloading it again")


def test_a_damaged_download_without_network_says_to_delete_it(monkeypatch, tmp_path):
    def offline(request):
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.setattr(downloads.urllib.request, "urlopen", offline)
    (tmp_path / "RN50.pt").write_bytes(b"half a file")
    with pytest.raises(RuntimeError) as error:
        clip.load("RN50", device="cpu", download_root=str(tmp_path))
    message = str(error.value)
    assert f"the {tmp_path / 'RN50.pt'} already there does not match its SHA256" in message
    assert "damaged or truncated, delete it or replace it with a whole copy" in message
    assert clip_module._MODELS["RN50"] in message and len(message.splitlines()) == 1


def test_a_download_folder_that_cannot_be_created_is_named(monkeypatch, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(RuntimeError) as error:
        clip.load("RN50", device="cpu", download_root=str(tmp_path / "file" / "clip"))
    assert str(error.value).startswith(f"{tmp_path / 'file' / 'clip'} cannot be created for RN50.pt (Not a "
                                       f"directory); fetch it on a machine with internet")


# ---------------------------------------------------------------- open_clip:<model>@FILE
@pytest.fixture(scope="module")
def open_clip_file(tmp_path_factory):
    """(open_clip, a whole checkpoint of the tests' tiny RN50 registered with open_clip, as torch.save and as
    safetensors)."""
    open_clip = optional("open_clip")
    from test_open_clip import CONFIGS
    folder = tmp_path_factory.mktemp("open_clip_files")
    (folder / "RN50-tiny-quickgelu.json").write_text(json.dumps(CONFIGS["RN50-tiny-quickgelu"]))
    open_clip.add_model_config(str(folder / "RN50-tiny-quickgelu.json"))
    state = open_clip.create_model("RN50-tiny-quickgelu").state_dict()
    torch.save(state, folder / "tiny.pt")
    from safetensors.torch import save_file
    save_file({key: value.contiguous() for key, value in state.items()}, str(folder / "tiny.safetensors"))
    return open_clip, folder


def open_clip_error(path):
    import open_clip_adapter
    spec = f"open_clip:RN50-tiny-quickgelu@{path}"
    with pytest.raises(RuntimeError) as error:
        open_clip_adapter.load(spec, "cpu")
    message = str(error.value)
    assert message.startswith(f"{spec}: {path} ") and len(message.splitlines()) == 1, message
    assert "download" not in message and "huggingface" not in message, message
    return message[len(f"{spec}: {path} "):]


@pytest.mark.parametrize("whole, cut, found", [
    ("tiny.pt", 0.5, "does not load (RuntimeError: PytorchStreamReader failed reading zip archive: failed finding "
                     "central directory): truncated, damaged or not a checkpoint; replace it with a whole copy"),
    ("tiny.safetensors", 0.5, "does not load (SafetensorError: Error while deserializing header: "),
    ("tiny.pt", None, "does not load ("),  # not a checkpoint at all: a raw KeyError from pickle before
])
def test_a_damaged_open_clip_file_is_named(open_clip_file, tmp_path, whole, cut, found):
    _, folder = open_clip_file
    data = (folder / whole).read_bytes()
    path = tmp_path / whole
    path.write_bytes(data[:int(len(data) * cut)] if cut else b"e" * 200)
    assert open_clip_error(path).startswith(found)


def test_an_open_clip_file_of_another_layout_counts_the_keys(open_clip_file, tmp_path):
    _, folder = open_clip_file
    state = torch.load(folder / "tiny.pt")
    state = {key: value for key, value in state.items() if not key.startswith("visual.layer4.")}
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "pruned.pt")
    message = open_clip_error(tmp_path / "pruned.pt")
    assert message.startswith("does not fit open_clip's RN50-tiny-quickgelu (") and " missing keys: visual.layer4.0." \
        in message and "; 1 unexpected key: extra.weight); give a checkpoint of RN50-tiny-quickgelu" in message


def test_a_damaged_file_in_open_clips_cache_is_named_with_what_to_do(open_clip_file, tmp_path, monkeypatch):
    """A pretrained tag whose download open_clip keeps in its cache, damaged there: delete it, not 'no network'."""
    import open_clip_adapter
    open_clip, _ = open_clip_file
    cached = tmp_path / "open_clip_pytorch_model.bin"

    def damaged(*args, **kwargs):
        raise RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory. This "
                           "is an internal miniz error.")
    monkeypatch.setattr(open_clip, "create_model", damaged)
    monkeypatch.setattr(open_clip, "download_pretrained", lambda cfg, **kwargs: str(cached))
    with pytest.raises(RuntimeError) as error:
        open_clip_adapter.load("open_clip:RN50@openai", "cpu")
    assert str(error.value) == (f"open_clip:RN50@openai: {cached} does not load (RuntimeError: PytorchStreamReader "
                                f"failed reading zip archive: failed finding central directory): damaged in "
                                f"open_clip's cache; delete it, and it is downloaded again on the next run")


def test_batchnorm_statistics_of_another_backbone_are_counted(small_state_dict_file):
    """A prompts file's BatchNorm statistics (train.py --bn train) made for another image tower."""
    from clip_runtime import load_visual_state
    model, _ = clip.load(small_state_dict_file, device="cpu")
    state = {key: value for key, value in model.visual.state_dict().items() if "running_" in key}
    state["layer1.0.bn1.running_mean"] = torch.zeros(7)
    state["layer9.0.bn1.running_mean"] = torch.zeros(7)
    with pytest.raises(ValueError) as error:
        load_visual_state(model.visual, state)
    assert str(error.value) == (f"the prompts' BatchNorm statistics do not fit this CLIP's image tower (first: "
                                f"layer9.0.bn1.running_mean; of their {len(state)} tensors 1 are not in it and 1 have "
                                f"another shape); they were made for another backbone")


def test_a_download_folder_that_cannot_take_the_file_is_not_a_failed_download(monkeypatch, tmp_path):
    (tmp_path / "M.pt.part").mkdir()  # where the bytes would go: as a read-only folder, no file can be made there
    monkeypatch.setattr(downloads.urllib.request, "urlopen", lambda request: Response(b"weights"))
    with pytest.raises(RuntimeError) as error:
        downloads.download("https://example.invalid/models/M.pt", str(tmp_path / "M.pt"), resume=True,
                           hint="fetch it by hand")
    assert str(error.value) == f"{tmp_path / 'M.pt.part'} cannot be written (Is a directory); fetch it by hand"


def test_a_hub_model_whose_weights_do_not_come_is_refused_not_random(open_clip_file, monkeypatch):
    """open_clip makes an hf-hub model with random weights (a warning, silenced here) when its weights file does
    not download; the adapter asks it to refuse, which is the one download line."""
    import open_clip_adapter
    open_clip, _ = open_clip_file
    asked = {}

    def create_model(name, **kwargs):
        asked.update(kwargs)
        raise RuntimeError(f"Required pretrained weights (`model_name='{name}', pretrained='None'`) could not be "
                           f"loaded. ")
    monkeypatch.setattr(open_clip, "create_model", create_model)
    with pytest.raises(RuntimeError) as error:
        open_clip_adapter.load("open_clip:hf-hub:org/model", "cpu")
    assert asked["require_pretrained"] is True
    assert str(error.value).startswith("open_clip:hf-hub:org/model: Required pretrained weights") and \
        str(error.value).endswith("open_clip keeps downloads in ~/.cache/huggingface, or pass a local file as "
                                  "open_clip:hf-hub:org/model@/path/to/checkpoint")
