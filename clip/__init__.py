from .clip import CLIP_MEAN, CLIP_STD, available_models, checkpoint_sha256, download, load, to_tensor, tokenize
