from .clip import CLIP_MEAN, CLIP_STD, available_models, load, tokenize
