from .clip import (CLIP_MEAN, CLIP_STD, available_models, checkpoint_sha256, download, load, sha256_of_file, to_tensor,
                   tokenize)
