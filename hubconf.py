"""torch.hub entry points, as depth models such as MiDaS and ZoeDepth offer them:

    model = torch.hub.load("<owner>/<repo>", "depthclip", clip_model="RN50")       # a ready MonoCLIP
    transform = torch.hub.load("<owner>/<repo>", "transform")                       # PIL image -> model input
    depth = model.predict(transform(image), size=(image.height, image.width))      # (1, 1, H, W) metres

torch.hub.load(<this folder>, ..., source="local") does the same from a clone.
"""
import functools

import options
import photos
from monoclip import CLIP_MODEL, MonoCLIP

dependencies = ["torch", "numpy", "PIL", "ftfy", "regex", "tqdm"]


def depthclip(pretrained=True, clip_model=CLIP_MODEL, **kwargs):
    """DepthCLIP (MonoCLIP) on CLIP's released weights: clip_model is an OpenAI CLIP name (downloaded into
    ~/.cache/clip with its SHA256 checked), a checkpoint path or 'open_clip:<model>[@<pretrained>]'; kwargs are
    MonoCLIP's (prompts or depth_classes, bins, templates, objects, temperature; features, device, precision).

    pretrained=False raises ValueError: in MiDaS it means an untrained network, but DepthCLIP trains nothing and
    without CLIP's weights it has no depth to give.
    """
    if not pretrained:
        raise ValueError("depthclip(pretrained=False): DepthCLIP is CLIP's released weights and nothing else; "
                         "without them there is no depth. Use pretrained=True (or clip_model=<checkpoint path>)")
    return MonoCLIP(clip_model, **kwargs)


def transform(long_side=options.LONG_SIDE, stride=32, normalize="imagenet"):
    """A function: PIL image (any mode, EXIF-rotated as stored) -> (1, 3, h, w) normalized tensor, the long side
    resized to long_side pixels in multiples of stride (32 for ResNets, the patch size for ViTs), as predict.py
    does; normalize: 'imagenet' (the authors'), 'clip', or a (mean, std) pair (e.g. model.mean_std)."""
    return functools.partial(_transform, long_side=long_side, stride=stride, normalize=normalize)


def _transform(image, long_side, stride, normalize):
    rgb, _ = photos.upright_rgb(image)
    return photos.model_input(rgb, long_side, stride, normalize)
