"""Beyond the paper: MaskCLIP features, the bare value path, ViT patch tokens, other backbones, CLIP normalization.

Each dense feature is checked against the same computation written out here with plain tensor operations
on the model's own weights; the nine released geometries are checked on PyTorch's meta device (shapes only). The
feature cache (feature_cache.py) never stops a run: folders it cannot create, read or write, and entries of other
settings or damaged, are warnings.
"""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import clip
from clip.model import CLIP, model_config
import feature_cache
from datasets import NYUDepthV2
from downloads import sha256_of_file
from feature_cache import FeatureCache
from synthetic.checkpoint import make_state_dict
from monoclip import MonoCLIP

NINE = {  # OpenAI's released models: embed_dim, resolution, vision layers, vision width, patch, text width
    "RN50": (1024, 224, (3, 4, 6, 3), 64, None, 512), "RN101": (512, 224, (3, 4, 23, 3), 64, None, 512),
    "RN50x4": (640, 288, (4, 6, 10, 6), 80, None, 640), "RN50x16": (768, 384, (6, 8, 18, 8), 96, None, 768),
    "RN50x64": (1024, 448, (3, 15, 36, 10), 128, None, 1024), "ViT-B/32": (512, 224, 12, 768, 32, 512),
    "ViT-B/16": (512, 224, 12, 768, 16, 512), "ViT-L/14": (768, 224, 24, 1024, 14, 768),
    "ViT-L/14@336px": (768, 336, 24, 1024, 14, 768),
}


def config_of(name):
    embed, resolution, layers, width, patch, text = NINE[name]
    return dict(embed_dim=embed, image_resolution=resolution, vision_layers=layers, vision_width=width,
                vision_patch_size=patch, context_length=77, vocab_size=49408, transformer_width=text,
                transformer_heads=text // 64, transformer_layers=12)


def layer_norm(x, ln):
    return F.layer_norm(x, x.shape[-1:], ln.weight, ln.bias, 1e-5)


@pytest.fixture(scope="module")
def vit_paths(tmp_path_factory):
    """Small generated ViTs in OpenAI's key layout, one per patch size, at 224 px."""
    folder = tmp_path_factory.mktemp("vit")
    paths = {}
    for patch in (32, 16, 14):
        paths[patch] = str(folder / f"vit{patch}.pt")
        torch.save(make_state_dict(patch, vit_patch=patch, vit_width=64, vit_layers=2, embed_dim=64), paths[patch])
    return paths


@pytest.fixture(scope="module")
def vit(vit_paths):
    return clip.load(vit_paths[16], device="cpu")[0]


@pytest.fixture(scope="module")
def image():
    return torch.from_numpy(np.random.default_rng(3).normal(size=(2, 3, 416, 544)).astype(np.float32))


def test_resnet_value_is_the_attention_pool_without_attention(model, image):
    visual = model.clip.visual
    inputs = []
    hook = visual.attnpool.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    with torch.no_grad():
        model.clip.encode_image(image[:, :, :224, :224])
        trunk = model.clip.encode_image_dense(image[:, :, :224, :224], "trunk")
        dense = model.clip.encode_image_dense(image, "value")  # (2, 1024, 13, 17)
        features = model.clip.encode_image_dense(image, "trunk")  # (2, 2048, 13, 17)
    hook.remove()
    torch.testing.assert_close(trunk, inputs[0])  # "trunk" is what the attention pool reads
    pool = visual.attnpool
    v = torch.einsum("bchw,dc->bdhw", features, pool.v_proj.weight) + pool.v_proj.bias.view(1, -1, 1, 1)
    expected = torch.einsum("bdhw,ed->behw", v, pool.c_proj.weight) + pool.c_proj.bias.view(1, -1, 1, 1)
    assert dense.shape == (2, 1024, 13, 17)
    torch.testing.assert_close(dense, expected, atol=1e-5, rtol=1e-4)


def test_vit_value_is_the_last_block_value_path(vit, image):
    blocks, visual = vit.visual.transformer.resblocks, vit.visual
    last_input = []
    hook = blocks[-1].register_forward_pre_hook(lambda module, args: last_input.append(args[0]))
    with torch.no_grad():
        vit.encode_image(image)  # the standard forward, at 416x544: 26x34 patches
        dense = vit.encode_image_dense(image, "value")
    hook.remove()
    x, width = last_input[0], last_input[0].shape[-1]  # (1 + 26*34, 2, 64)
    attn = blocks[-1].attn
    v = layer_norm(x, blocks[-1].ln_1) @ attn.in_proj_weight[2 * width:].T + attn.in_proj_bias[2 * width:]
    out = v @ attn.out_proj.weight.T + attn.out_proj.bias
    expected = layer_norm(out[1:], visual.ln_post) @ visual.proj  # (26*34, 2, 64)
    assert dense.shape == (2, 64, 26, 34)
    torch.testing.assert_close(dense, expected.permute(1, 2, 0).reshape(2, 64, 26, 34), atol=1e-5, rtol=1e-4)


def test_vit_maskclip_keeps_the_residual_and_the_mlp(vit, image):
    """MaskCLIP's ViT features (chongzhou96/MaskCLIP, vit.py, return_qkv): v = out_proj(V(ln_1 x)); v += x;
    v = v + mlp(ln_2 v); then ln_post and proj."""
    blocks, visual = vit.visual.transformer.resblocks, vit.visual
    last_input = []
    hook = blocks[-1].register_forward_pre_hook(lambda module, args: last_input.append(args[0]))
    with torch.no_grad():
        vit.encode_image(image)
        dense = vit.encode_image_dense(image, "maskclip")
    hook.remove()
    x, width = last_input[0], last_input[0].shape[-1]
    block = blocks[-1]
    v = layer_norm(x, block.ln_1) @ block.attn.in_proj_weight[2 * width:].T + block.attn.in_proj_bias[2 * width:]
    v = x + v @ block.attn.out_proj.weight.T + block.attn.out_proj.bias
    hidden = layer_norm(v, block.ln_2) @ block.mlp.c_fc.weight.T + block.mlp.c_fc.bias
    v = v + (hidden * torch.sigmoid(1.702 * hidden)) @ block.mlp.c_proj.weight.T + block.mlp.c_proj.bias  # QuickGELU
    expected = layer_norm(v[1:], visual.ln_post) @ visual.proj
    torch.testing.assert_close(dense, expected.permute(1, 2, 0).reshape(2, 64, 26, 34), atol=1e-5, rtol=1e-4)


def test_resnet_maskclip_is_the_value_path(model, image):
    with torch.no_grad():
        torch.testing.assert_close(model.clip.encode_image_dense(image, "maskclip"),
                                   model.clip.encode_image_dense(image, "value"), atol=0, rtol=0)


def test_vit_tokens_are_the_last_layer_patch_tokens(vit, image):
    outputs = []
    hook = vit.visual.transformer.resblocks[-1].register_forward_hook(lambda m, args, out: outputs.append(out))
    with torch.no_grad():
        pooled = vit.encode_image(image[:, :, :224, :224])
        dense = vit.encode_image_dense(image, "tokens")
    hook.remove()
    at_224, at_416 = outputs[0], outputs[1]
    torch.testing.assert_close(layer_norm(at_224[0], vit.visual.ln_post) @ vit.visual.proj, pooled)
    expected = layer_norm(at_416[1:], vit.visual.ln_post) @ vit.visual.proj
    torch.testing.assert_close(dense, expected.permute(1, 2, 0).reshape(2, 64, 26, 34))


def test_positional_embedding_is_resized_bicubically_keeping_the_class_position(vit):
    pos = vit.visual.positional_embedding  # (1 + 14*14, 64)
    assert vit.visual.positional_embedding_for(14, 14) is pos
    resized = vit.visual.positional_embedding_for(26, 34)
    grid = pos[1:].reshape(14, 14, 64).permute(2, 0, 1)[None]
    expected = F.interpolate(grid, size=(26, 34), mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
    torch.testing.assert_close(resized[0], pos[0])
    torch.testing.assert_close(resized[1:], expected.reshape(26 * 34, 64))


@pytest.mark.parametrize("patch, grid", [(32, (13, 17)), (16, (26, 34)), (14, (30, 39))])
@pytest.mark.parametrize("features", ["maskclip", "value", "tokens"])
def test_vit_monoclip_at_nyu_size(vit_paths, image, patch, grid, features):
    model = MonoCLIP(vit_paths[patch], device="cpu", features=features, temperature=2.0)
    with torch.no_grad():
        depth = model(image)  # /14: the 416x544 crop is resized to 420x546, the nearest multiples of 14
        full = model.predict(image)
    assert model.stride == patch and depth.shape == (2, 1, *grid) and full.shape == (2, 1, 416, 544)
    assert 1.0 <= depth.min() and depth.max() <= 3.0 and depth.std() > 0
    assert model.config()["features"] == features


def test_paper_features_only_fit_rn50_geometry(tmp_path, vit_paths):
    narrow = tmp_path / "narrow.pt"  # a ResNet whose 1024 trunk channels are not twice its 1024-dim embedding
    torch.save(make_state_dict(0, vision_width=32), narrow)
    with pytest.raises(ValueError, match="needs 2 x 1024 .* = 2048 channels, but .* has 1024 .*use features='value'"):
        MonoCLIP(str(narrow), device="cpu")
    assert MonoCLIP(str(narrow), device="cpu", features="value")(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 2, 2)
    with pytest.raises(ValueError, match="features='tokens' needs a ViT"):
        MonoCLIP(str(narrow), device="cpu", features="tokens")
    with pytest.raises(ValueError, match="features='paper' reads a ResNet trunk"):
        MonoCLIP(vit_paths[32], device="cpu")


@pytest.mark.parametrize("name", list(NINE))
def test_the_nine_released_geometries_build_and_give_dense_features(name):
    config = config_of(name)
    with torch.device("meta"):
        model = CLIP(**config)
        assert model_config(model.state_dict()) == config  # what clip.load reads off a checkpoint's shapes
        vit = config["vision_patch_size"] is not None
        patch = config["vision_patch_size"] or 32
        size = (416, 544) if patch != 14 else (420, 546)  # MonoCLIP resizes the crop to multiples of 14
        x = torch.empty(1, 3, *size)
        for features in ("maskclip", "value", "tokens") if vit else ("trunk", "maskclip", "value"):
            dense = model.encode_image_dense(x, features)
            channels = config["embed_dim"] if features != "trunk" else 32 * config["vision_width"]
            assert dense.shape == (1, channels, size[0] // patch, size[1] // patch)


def test_clip_normalization(nyu_like):
    rgb, _, file = NYUDepthV2(nyu_like, "auto", normalize="clip")[0]
    crop = np.asarray(Image.open(f"{nyu_like}/official_splits/test/{file}").convert("RGB"), np.float32)[56:472, 60:604]
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    expected = ((crop / 255.0 - mean) / std).transpose(2, 0, 1)
    np.testing.assert_allclose(rgb.numpy(), expected, atol=1e-5)


# ---------------------------------------------------------------- the feature cache never stops a run
@pytest.fixture
def rgb_files(nyu_like):
    return [f"{nyu_like}/official_splits/test/{name}" for name in ("bathroom/rgb_00001.jpg", "kitchen/rgb_00008.jpg")]


def small_rgb(file):
    """An NYU-like image's (3, 96, 128) corner: a (3, 4) grid of patches, quick through the image tower."""
    from datasets.nyu import load_rgb
    return load_rgb(file)[:, :96, :128]


def cached_views(model, folder, files):
    """A FeatureCache in folder after reading (or computing) the files' views, checked equal to the model's own."""
    cache = FeatureCache(str(folder), {"weights": "x"})
    patches, _ = cache.view_features(model, files, small_rgb)
    expected, _ = model.view_features(torch.stack([small_rgb(f) for f in files]))
    torch.testing.assert_close(patches, expected, atol=0, rtol=0)
    return cache


def warnings_in(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]


def test_a_cache_folder_that_cannot_be_created_warns_once_and_the_run_goes_on(model, rgb_files, tmp_path, capsys,
                                                                                monkeypatch):
    (tmp_path / "file").write_text("")
    cache = cached_views(model, tmp_path / "file" / "cache", rgb_files)  # under a regular file: even root cannot
    assert cache.misses == 4
    assert warnings_in(capsys) == [f"warning: --cache {tmp_path / 'file' / 'cache'} cannot be created (Not a "
                                   f"directory); choose another place; going on without caching"]

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(feature_cache.os, "makedirs", read_only)
    cached_views(model, tmp_path / "cache", rgb_files)
    assert warnings_in(capsys) == [f"warning: --cache {tmp_path / 'cache'} cannot be created (Read-only file system); "
                                   f"choose another place; going on without caching"]


def test_a_cache_folder_that_cannot_be_read_warns_once_and_the_run_goes_on(model, rgb_files, tmp_path, capsys,
                                                                             monkeypatch):
    cached_views(model, tmp_path, rgb_files)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(feature_cache.np, "load", denied)
    cache = cached_views(model, tmp_path, rgb_files)
    assert cache.misses == 4 and cache.hits == 0
    warnings = warnings_in(capsys)
    assert len(warnings) == 1 and "cannot be read (Permission denied)" in warnings[0]


def test_an_entry_that_cannot_be_put_in_place_warns_once_and_the_run_goes_on(model, rgb_files, tmp_path, capsys):
    """A folder where an entry should be: the rename into place fails (after the temporary file was written)."""
    cache = FeatureCache(str(tmp_path), {"weights": "x"})
    os.makedirs(cache.path(sha256_of_file(rgb_files[0]), 0))
    cached_views(model, tmp_path, rgb_files)
    warnings = warnings_in(capsys)
    assert len(warnings) == 1 and "going on without caching" in warnings[0]


def test_a_cache_folder_of_other_settings_is_not_read(model, rgb_files, tmp_path, capsys):
    cache = cached_views(model, tmp_path, rgb_files)
    description = os.path.join(cache.folder, "settings.json")
    with open(description) as f:
        settings = json.load(f)
    with open(description, "w") as f:
        json.dump({**settings, "features": "value"}, f)  # a folder copied under this key, or edited by hand
    capsys.readouterr()
    again = cached_views(model, tmp_path, rgb_files)
    assert again.hits == 0 and again.misses == 4
    assert warnings_in(capsys) == [f"warning: --cache {cache.folder} holds features of other settings (its "
                                   f"settings.json differs in features); delete that folder; going on without caching"]
    with open(description, "w") as f:
        f.write("{not json")
    again = cached_views(model, tmp_path, rgb_files)
    assert again.hits == 4
    warnings = warnings_in(capsys)
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: --cache {description} is unreadable (")
    with open(description) as f:
        assert json.load(f) == settings  # written again


def test_entries_of_another_shape_or_damaged_are_named_and_recomputed(model, rgb_files, tmp_path, capsys):
    cache = cached_views(model, tmp_path, rgb_files)
    first, second = [cache.path(sha256_of_file(f), 0) for f in rgb_files]
    channels = model.encoded.text.shape[0]
    np.save(first, np.zeros((3, 5, channels), np.float32))  # another grid: torch.stack failed on it
    capsys.readouterr()
    again = cached_views(model, tmp_path, rgb_files)
    assert again.hits == 3 and again.misses == 1
    assert warnings_in(capsys) == [f"warning: cache entry {first} holds features of shape (3, 5, {channels}), not "
                                   f"this run's (3, 4, {channels}) (another setting's); recomputing it"]
    for path in (first, second):  # all of an image's stored views of other channels (another backbone's)
        np.save(path, np.zeros((3, 4, 64), np.float32))
    os.remove(cache.path(sha256_of_file(rgb_files[0]), 1))
    again = cached_views(model, tmp_path, rgb_files[:1])  # one image: its mirror view is computed, then its own
    assert again.misses == 2 and len(warnings_in(capsys)) == 1
    np.save(second, np.zeros((3, 4, 64), np.float32))
    again = cached_views(model, tmp_path, rgb_files[1:])  # nothing to compute: the model's channels decide
    assert again.hits == 1 and again.misses == 1 and "(3, 4, 64)" in warnings_in(capsys)[0]
    with open(first, "wb") as f:
        f.write(b"\x93NUMPY garbage")
    again = cached_views(model, tmp_path, rgb_files)
    warnings = warnings_in(capsys)
    assert again.misses == 1 and len(warnings) == 1 and f"cache entry {first} is unreadable (" in warnings[0]
