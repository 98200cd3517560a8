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
