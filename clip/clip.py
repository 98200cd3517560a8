"""Loading CLIP models (download, checksum, checkpoint reading) and tokenizing text."""
import os
import pickle
import warnings
import zipfile
from typing import List, Union

import numpy as np
import torch
from PIL import Image

from downloads import download, sha256_of_file

from .model import CLIP, build_model, model_config
from .simple_tokenizer import SimpleTokenizer

__all__ = ["available_models", "load", "tokenize"]

_URL = "https://openaipublic.azureedge.net/clip/models/{sha256}/{file}"
_MODELS = {name: _URL.format(sha256=sha, file=file) for name, sha, file in [
    ("RN50", "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762", "RN50.pt"),
    ("RN101", "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599", "RN101.pt"),
    ("RN50x4", "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd", "RN50x4.pt"),
    ("RN50x16", "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa", "RN50x16.pt"),
    ("RN50x64", "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c", "RN50x64.pt"),
    ("ViT-B/32", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", "ViT-B-32.pt"),
    ("ViT-B/16", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", "ViT-B-16.pt"),
    ("ViT-L/14", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", "ViT-L-14.pt"),
    ("ViT-L/14@336px", "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02", "ViT-L-14-336px.pt"),
]}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_tokenizer = SimpleTokenizer()


def available_models() -> List[str]:
    """Names accepted by `load`, besides a path to a checkpoint file."""
    return list(_MODELS)


def checkpoint_sha256(name: str) -> str:
    """The SHA256 of a released model's file (the second-to-last part of its URL) or of a checkpoint file."""
    return _MODELS[name].split("/")[-2] if name in _MODELS else sha256_of_file(name)


def _is_torchscript(path):
    """TorchScript archives are zip files holding a code/ folder; torch.save's zip files hold none."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())


def _first_sentence(error):
    """An exception's text up to its first sentence's end (torch's zip errors go on for five more), or its type."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.split(". ")[0].rstrip(".")


def _read_state_dict(path):
    """Read weights only: TorchScript through torch.jit.load, anything else through weights_only torch.load.
    RuntimeError naming the file and what is wrong with it: not a checkpoint, truncated or damaged, pickled objects
    besides tensors, not a state dict of tensors."""
    with open(path, "rb") as f:
        archive = f.read(4) == b"PK\x03\x04"  # TorchScript and torch.save (since 1.6) write zip archives
    try:
        if _is_torchscript(path):
            with warnings.catch_warnings():  # torch>=2.9 deprecates jit.load, yet the released files need it
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(path, map_location="cpu").state_dict()
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if not archive:
            raise RuntimeError(f"{path} is not a CLIP checkpoint: it is neither a TorchScript archive nor a file "
                               f"written by torch.save; check the path (OpenAI's .pt file, or a state dict saved by torch.save)") from None
        if isinstance(error, pickle.UnpicklingError):  # weights_only refuses anything but tensors and containers
            raise RuntimeError(f"{path} is a zip archive but not a readable CLIP checkpoint ({_first_sentence(error)}):"
                               f" it holds pickled objects besides tensors, which are not loaded; give a CLIP "
                               f"checkpoint in OpenAI's format (a state dict of tensors)") from None
        raise RuntimeError(f"{path} is a zip archive but not a readable CLIP checkpoint ({_first_sentence(error)}): "
                           f"truncated or damaged; replace it with a whole copy (compare its size and SHA256 with "
                           f"the original's)") from None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise RuntimeError(f"{path} holds a {type(state_dict).__name__}, not a state dict of tensors; "
                           f"expected a CLIP checkpoint in OpenAI's format")
    return state_dict


_REQUIRED_KEYS = ["positional_embedding", "token_embedding.weight", "ln_final.weight", "text_projection",
                  "visual.conv1.weight"]
_RESNET_KEYS = ["visual.layer1.0.conv1.weight", "visual.attnpool.positional_embedding"]
_SCALARS = ("input_resolution", "context_length", "vocab_size")  # extra entries of the released TorchScript files


def _some(keys, count=3):
    """'a, b, c, …' : the first `count` of a list of names."""
    return ", ".join(keys[:count]) + (", …" if len(keys) > count else "")


def _check_state_dict(state_dict, path):
    """RuntimeError naming the file unless the state dict is a CLIP's in OpenAI's layout: its expected keys, and
    the keys and shapes of the CLIP its shapes describe (missing, unexpected and reshaped keys counted and named)."""
    expected = _REQUIRED_KEYS + ([] if "visual.proj" in state_dict else _RESNET_KEYS)
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise RuntimeError(f"{path} is a state dict of some other model: missing expected CLIP keys {_some(missing)} "
                           f"({len(missing)} of the {len(expected)} checked; it holds {len(state_dict)} keys, e.g. "
                           f"{_some(list(state_dict))}); expected a checkpoint in OpenAI's CLIP format")
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated
            model = CLIP(**model_config(state_dict))
    except Exception as error:  # a shape model_config reads is not the rank it expects, or a ViT key is missing
        raise RuntimeError(f"{path} does not fit a CLIP model (its geometry cannot be read: {type(error).__name__} "
                           f"{_first_sentence(error)}); use an unmodified CLIP checkpoint in OpenAI's format") from None
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own and k not in _SCALARS]
    reshaped = [k for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    faults = [f"{len(keys)} {what} key{'s' if len(keys) > 1 else ''}: {_some(keys)}" for what, keys in
              [("missing", missing), ("unexpected", unexpected)] if keys]
    if reshaped:
        k = reshaped[0]
        faults.append(f"{len(reshaped)} of another shape: {k} is {tuple(state_dict[k].shape)}, not "
                      f"{tuple(own[k].shape)}" + (", …" if len(reshaped) > 1 else ""))
    if faults:
        raise RuntimeError(f"{path} does not fit a CLIP model ({'; '.join(faults)}); use an unmodified CLIP "
                           f"checkpoint in OpenAI's format")


def _transform(n_px):
    """OpenAI's preprocess, written with PIL alone (importing torchvision costs ~160 MB of memory):
    PIL image -> (3, n_px, n_px): short side resized bicubically to n_px, centre crop, RGB, CLIP's mean/std."""
    def preprocess(image):
        width, height = image.size
        if width <= height:
            size = (n_px, int(n_px * height / width))
        else:
            size = (int(n_px * width / height), n_px)
        image = image.resize(size, Image.BICUBIC)
        left, top = int(round((size[0] - n_px) / 2.0)), int(round((size[1] - n_px) / 2.0))
        rgb = np.asarray(image.crop((left, top, left + n_px, top + n_px)).convert("RGB"), dtype=np.float32) / 255.0
        rgb = torch.from_numpy(rgb).permute(2, 0, 1)  # ToTensor
        return (rgb - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)  # Normalize
    return preprocess


def load(name: str, device: Union[str, torch.device] = "cuda" if torch.cuda.is_available() else "cpu",
         jit: bool = False, download_root: str = None):
    """Load a CLIP model by name (downloaded into ~/.cache/clip) or from a checkpoint path.

    A path may be a TorchScript archive (the released files are these) or a plain state dict; the model
    is built from the weights' shapes. As in OpenAI's package, the model is fp16 on CUDA and fp32 on CPU.
    Returns (model, preprocess), preprocess turning a PIL image into the model's input tensor.
    """
    if jit:
        raise ValueError("jit=True is not supported: the TorchScript graph cannot give dense features; "
                         "the released files load with jit=False (their weights are read)")
    if name in _MODELS:
        url = _MODELS[name]
        target = os.path.join(download_root or os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        path = download(url, target, sha256=url.split("/")[-2],
                        hint=f"fetch it on a machine with internet and place it at {target}, or pass its path "
                             f"instead of the model name")
    elif os.path.isfile(name):
        path = name
    elif os.path.isdir(name):
        raise RuntimeError(f"{name} is a folder; give the path of a CLIP checkpoint file in it, or a model name "
                           f"({', '.join(available_models())})")
    elif os.sep in name or os.path.splitext(name)[1]:
        raise RuntimeError(f"{name}: no such file; give the path of a CLIP checkpoint, or a model name "
                           f"({', '.join(available_models())})")
    else:
        raise RuntimeError(f"Model {name} not found; available models = {available_models()}, "
                           f"or give the path of a checkpoint file")
    state_dict = _read_state_dict(path)
    _check_state_dict(state_dict, path)
    model = build_model(state_dict).to(device)
    del state_dict  # before float() allocates the fp32 copy: keeps peak memory at about two copies
    if str(device) == "cpu":
        model.float()
    return model, _transform(model.visual.input_resolution)


def tokenize(texts: Union[str, List[str]], context_length: int = 77, truncate: bool = False) -> torch.LongTensor:
    """(N,) strings -> (N, context_length) ids: <|startoftext|>, the text's BPE ids, <|endoftext|>, zeros."""
    if isinstance(texts, str):
        texts = [texts]
    sot, eot = _tokenizer.encoder["<|startoftext|>"], _tokenizer.encoder["<|endoftext|>"]
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [sot] + _tokenizer.encode(text) + [eot]
        if len(ids) > context_length:
            if not truncate:
                raise RuntimeError(f"Input {text} is too long for context length {context_length}")
            ids = ids[:context_length - 1] + [eot]
        result[i, :len(ids)] = torch.tensor(ids)
    return result
