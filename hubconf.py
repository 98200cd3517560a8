"""torch.hub entry points, as depth models such as MiDaS and ZoeDepth offer them. From a clone of this repository:

    import torch
    from PIL import Image
    model = torch.hub.load(".", "depthclip", source="local", clip_model="RN50")    # a ready MonoCLIP
    transform = torch.hub.load(".", "transform", source="local")                   # PIL image -> model input
    image = Image.open("examples/synthetic_room.jpg")
    depth = model.predict(transform(image), size=(image.height, image.width))      # (1, 1, H, W) metres

From GitHub, the first argument is "OWNER/REPO" (source="github", the default) instead of the folder.

This file imports the library only (no command-line code). The repository's own packages `clip` and `datasets` are
loaded even where the caller has imported others of those names (OpenAI's `clip`, Hugging Face's `datasets`):
theirs are set aside while ours load and put back after, so both keep working.
"""
import os
import sys

dependencies = ["torch", "numpy", "PIL", "ftfy", "regex", "tqdm"]  # what the modules below import
HERE = os.path.dirname(os.path.abspath(__file__))
SHARED_NAMES = ("clip", "datasets")  # this repository's packages whose names other packages also use


def ours(module):
    """Whether a module was loaded from this folder."""
    file = getattr(module, "__file__", None)
    return bool(file) and os.path.isfile(file) and os.path.abspath(file).startswith(HERE + os.sep)


def import_library():
    """Import the modules the entry points use, with this folder's clip and datasets packages."""
    others = {name: module for name, module in sys.modules.items()
              if name.split(".")[0] in SHARED_NAMES and not ours(module)}
    for name in others:
        del sys.modules[name]
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    try:
        import monoclip
        import photos
    finally:
        if others:
            for name in [name for name in sys.modules if name.split(".")[0] in SHARED_NAMES]:
                del sys.modules[name]  # ours stay bound in the modules that imported them
            sys.modules.update(others)
    return monoclip, photos


monoclip, photos = import_library()


def depthclip(pretrained=True, clip_model=monoclip.CLIP_MODEL, **kwargs):
    """DepthCLIP (MonoCLIP) on CLIP's released weights: clip_model is an OpenAI CLIP name (downloaded into
    ~/.cache/clip with its SHA256 checked), a checkpoint path or 'open_clip:<model>[@<pretrained>]'; kwargs are
    MonoCLIP's (prompts or depth_classes, bins, templates, objects, temperature; features, device, precision).

    pretrained=False raises ValueError: in MiDaS it means an untrained network, but DepthCLIP trains nothing and
    without CLIP's weights it has no depth to give.
    """
    if not pretrained:
        raise ValueError("depthclip(pretrained=False): DepthCLIP is CLIP's released weights and nothing else; "
                         "without them there is no depth. Use pretrained=True (or clip_model=<checkpoint path>)")
    return monoclip.MonoCLIP(clip_model, **kwargs)


def transform(long_side=None, stride=32, normalize="imagenet"):
    """A function: PIL image (any mode, EXIF-rotated as stored) -> (1, 3, h, w) normalized tensor, the long side
    resized to long_side pixels (default photos.LONG_SIDE, 544) in multiples of stride (32 for ResNets, the patch
    size for ViTs), as predict.py does; normalize: 'imagenet' (the authors'), 'clip', or a (mean, std) pair (e.g.
    model.mean_std)."""
    long_side = long_side or photos.LONG_SIDE

    def to_input(image):
        rgb, _ = photos.upright_rgb(image)
        return photos.model_input(rgb, long_side, stride, normalize)
    return to_input
