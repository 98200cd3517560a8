"""open_clip backbones through open_clip_adapter.py, on small random-initialised models registered here (no
download): loading, the dense features written out with plain tensor ops, agreement with the vendored CLIP on
the same checkpoint, evaluation end to end, and the refusals."""
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import eval as evaluation
from monoclip import MonoCLIP
from synthetic.checkpoint import make_state_dict
from conftest import optional
from test_errors import documented

open_clip = optional("open_clip")

TEXT = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}
CONFIGS = {  # the vendored generator's geometries, so one checkpoint loads both ways
    "RN50-tiny-quickgelu": {"embed_dim": 1024, "quick_gelu": True, "text_cfg": TEXT,
                            "vision_cfg": {"image_size": 224, "layers": [1, 1, 1, 1], "width": 64, "patch_size": None}},
    "ViT-tiny-16-quickgelu": {"embed_dim": 64, "quick_gelu": True, "text_cfg": TEXT,
                              "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 16}},
    "ViT-tiny-16-layerscale": {"embed_dim": 64, "text_cfg": TEXT,  # GELU and LayerScale, as several LAION ViTs
                               "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 16,
                                              "ls_init_value": 0.5}},
    "ViT-tiny-16-attnpool": {"embed_dim": 64, "text_cfg": TEXT,  # CoCa's attentional pooler: no dense features
                             "vision_cfg": {"image_size": 224, "layers": 1, "width": 64, "patch_size": 16,
                                            "attentional_pool": True, "attn_pooler_heads": 1}},
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The configs registered with open_clip, and OpenAI-layout checkpoints for the two quickgelu ones, with
    fp16-representable weights (the vendored loader rounds through fp16, open_clip does not)."""
    folder = tmp_path_factory.mktemp("open_clip")
    for name, config in CONFIGS.items():
        (folder / f"{name}.json").write_text(json.dumps(config))
        open_clip.add_model_config(str(folder / f"{name}.json"))
    paths = {}
    for name, geometry in [("resnet", {}), ("vit", dict(vit_patch=16, vit_width=64, vit_layers=2, embed_dim=64))]:
        state = {k: v.half().float() if v.is_floating_point() else v for k, v in make_state_dict(4, **geometry).items()}
        paths[name] = str(folder / f"{name}.pt")
        torch.save(state, paths[name])
    return paths


@pytest.fixture(scope="module")
def image():
    return torch.from_numpy(np.random.default_rng(8).normal(size=(2, 3, 416, 544)).astype(np.float32))


@pytest.mark.parametrize("kind, name, features", [
    ("resnet", "RN50-tiny-quickgelu", ["paper", "maskclip", "value"]),
    ("vit", "ViT-tiny-16-quickgelu", ["tokens", "maskclip", "value"]),
])
def test_same_checkpoint_same_depth_both_ways(checkpoints, image, kind, name, features):
    for feature in features:
        vendored = MonoCLIP(checkpoints[kind], device="cpu", features=feature, temperature=2.0)
        adapted = MonoCLIP(f"open_clip:{name}@{checkpoints[kind]}", device="cpu", features=feature, temperature=2.0)
        with torch.inference_mode():
            torch.testing.assert_close(adapted.predict(image), vendored.predict(image), atol=1e-5, rtol=0)


def layer_norm(x, ln):
    return F.layer_norm(x, x.shape[-1:], ln.weight, ln.bias, ln.eps)


def test_vit_features_with_layerscale_written_out(image):
    adapter = MonoCLIP("open_clip:ViT-tiny-16-layerscale", device="cpu", features="tokens").clip
    visual = adapter.visual
    last = visual.transformer.resblocks[-1]
    inputs, outputs = [], []
    hooks = [last.register_forward_pre_hook(lambda m, args: inputs.append(args[0])),
             last.register_forward_hook(lambda m, args, out: outputs.append(out))]
    with torch.no_grad():
        tokens = adapter.encode_image_dense(image, "tokens")  # runs the last block: both hooks fire
        value = adapter.encode_image_dense(image, "value")
        maskclip = adapter.encode_image_dense(image, "maskclip")
    for hook in hooks:
        hook.remove()
    x = inputs[0]  # (2, 1 + 26*34, 64), batch first
    width = x.shape[-1]
    attn = last.attn
    v = layer_norm(x, last.ln_1) @ attn.in_proj_weight[2 * width:].T + attn.in_proj_bias[2 * width:]
    v = (v @ attn.out_proj.weight.T + attn.out_proj.bias) * last.ls_1.gamma  # LayerScale
    residual = x + v
    hidden = layer_norm(residual, last.ln_2) @ last.mlp.c_fc.weight.T + last.mlp.c_fc.bias
    mlp = F.gelu(hidden) @ last.mlp.c_proj.weight.T + last.mlp.c_proj.bias
    after = {"tokens": outputs[0], "value": v, "maskclip": residual + mlp * last.ls_2.gamma}

    def projected(t):
        return (layer_norm(t[:, 1:], visual.ln_post) @ visual.proj).transpose(1, 2).reshape(2, 64, 26, 34)
    for name, dense in [("tokens", tokens), ("value", value), ("maskclip", maskclip)]:
        torch.testing.assert_close(dense, projected(after[name]), atol=1e-5, rtol=1e-4, msg=name)


def test_resnet_value_written_out(checkpoints, image):
    adapter = MonoCLIP(f"open_clip:RN50-tiny-quickgelu@{checkpoints['resnet']}", device="cpu").clip
    with torch.no_grad():
        trunk = adapter.encode_image_dense(image, "trunk")  # (2, 2048, 13, 17)
        value = adapter.encode_image_dense(image, "value")
    pool = adapter.visual.attnpool
    v = torch.einsum("bchw,dc->bdhw", trunk, pool.v_proj.weight) + pool.v_proj.bias.view(1, -1, 1, 1)
    expected = torch.einsum("bdhw,ed->behw", v, pool.c_proj.weight) + pool.c_proj.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(value, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name, features", [("RN50-tiny-quickgelu", "paper"), ("ViT-tiny-16-layerscale", "maskclip")])
def test_eval_end_to_end_with_the_models_own_normalization(nyu_like, checkpoints, tmp_path, name, features):
    spec = f"open_clip:{name}@{checkpoints['resnet']}" if name.startswith("RN") else f"open_clip:{name}"
    out = tmp_path / "r.json"
    evaluation.main(["--data_path", nyu_like, "--testfile_nyu", "auto", "--clip_model", spec, "--features", features,
                     "--normalize", "model", "--workers", "0", "--output", str(out), "--limit", "2"])
    results = json.loads(out.read_text())
    assert results["count"] == 2 and all(np.isfinite(v) for v in results["metrics"].values())
    preprocess = open_clip.get_model_preprocess_cfg(open_clip.create_model(name))
    assert results["config"]["normalize_mean_std"] == [list(preprocess["mean"]), list(preprocess["std"])]
    assert results["config"]["clip_model"] == spec and results["config"]["features"] == features


@pytest.mark.parametrize("spec, features, error, found", [
    ("open_clip:ViT-tiny-16-attnpool", "tokens", ValueError,
     "open_clip:ViT-tiny-16-attnpool has a VisionTransformer image tower with an attentional pooler; DepthCLIP's "
     "dense features need"),
    ("open_clip:ViT-tiny-16-layerscale", "paper", ValueError, "features='paper' reads a ResNet trunk"),
    ("open_clip:RN50-quickgelu@laion9", "paper", ValueError,
     "open_clip:RN50-quickgelu@laion9: 'laion9' is neither a pretrained tag of RN50-quickgelu (openai, yfcc15m, "
     "cc12m) nor a checkpoint file"),
    ("open_clip:ViT-Q-99", "paper", ValueError, "open_clip has no model 'ViT-Q-99'"),
])
def test_refusals_name_the_model_and_the_way_out(spec, features, error, found):
    with pytest.raises(error) as raised:
        MonoCLIP(spec, device="cpu", features=features)
    assert found in str(raised.value) and documented(str(raised.value))


def test_every_listed_pretrained_tag_is_accepted():
    import open_clip_adapter
    for model, tag in open_clip.list_pretrained():
        assert open_clip_adapter.check(f"open_clip:{model}@{tag}") == (model, tag)


def test_failed_download_is_one_documented_line(monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("Failed to download weights for tag 'laion2b_s34b_b88k': no network\nmore detail")
    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(RuntimeError) as raised:
        MonoCLIP("open_clip:ViT-B-16@laion2b_s34b_b88k", device="cpu", features="tokens")
    message = str(raised.value)
    assert message == ("open_clip:ViT-B-16@laion2b_s34b_b88k: Failed to download weights for tag 'laion2b_s34b_b88k': "
                       "no network; open_clip keeps downloads in ~/.cache/huggingface, or pass a local file as "
                       "open_clip:ViT-B-16@/path/to/checkpoint") and documented(message)


def test_without_open_clip_torch_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(RuntimeError) as raised:
        MonoCLIP("open_clip:ViT-B-16", device="cpu")
    assert str(raised.value) == "open_clip models need the open_clip_torch package: pip install open_clip_torch"
    assert documented(str(raised.value))
