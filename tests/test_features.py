"""Beyond the paper: MaskCLIP features, the bare value path, ViT patch tokens, other backbones, CLIP normalization.

Each dense feature is checked against the same computation written out here with plain tensor operations
on the model's own weights; the nine released geometries are checked on PyTorch's meta device (shapes only).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import clip
from clip.model import CLIP, model_config
from datasets import NYUDepthV2
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
