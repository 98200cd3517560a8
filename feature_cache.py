"""eval.py --cache DIR: each image's patch features (MonoCLIP's image side), kept between runs.

    DIR/<settings key>/settings.json            what the key stands for (for people; the key decides)
    DIR/<settings key>/<rgb sha256>.npy         the image's patch features, (h, w, C) as numpy writes them
    DIR/<settings key>/<rgb sha256>-mirror.npy  the same for its mirror image (flip averaging)

The settings key is a hash of everything that determines the features besides the image: the checkpoint's
SHA256 (an open_clip pretrained tag by its name), the dense feature, precision, device type, dataset, input
size, normalization and this file's FORMAT. The image is named by its RGB file's SHA256, so a changed file or model is never served stale
features. Entries are plain .npy arrays (read ten times faster than torch.save files, and without pickle),
written to a temporary name and renamed; an unreadable one is reported, recomputed and rewritten. Delete DIR
(or one key's folder) to clear it.
"""
import hashlib
import io
import json
import os
import sys

import numpy as np
import torch
from tqdm import tqdm

import cli
from downloads import sha256_of_file

FORMAT = 4  # bump when what an entry holds, or how it is computed, changes
VIEWS = ("", "-mirror")


class FeatureCache:
    def __init__(self, folder, settings):
        settings = {**settings, "format": FORMAT}
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
        self.folder = os.path.join(folder, key)
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as error:
            raise ValueError(f"--cache {folder} cannot be created ({error.strerror}); choose another place") from None
        self.hits = self.misses = 0
        self.writable = True
        description = os.path.join(self.folder, "settings.json")
        if not os.path.isfile(description):
            self.write(description, (json.dumps(settings, indent=2) + "\n").encode())

    def write(self, path, data):
        """An entry, atomically; if the place cannot take it (a full disk, say), one warning and no more caching:
        the run goes on without it."""
        if not self.writable:
            return
        try:
            cli.write_file(path, data, "--cache")
        except ValueError as error:
            self.writable = False
            tqdm.write(f"warning: {error}; going on without caching", file=sys.stderr)

    def path(self, rgb_sha, view):
        return os.path.join(self.folder, f"{rgb_sha}{VIEWS[view]}.npy")

    def load(self, rgb_sha, view):
        """(patches (hw, C), grid (h, w)), or None if absent or unreadable (then said in one warning line)."""
        path = self.path(rgb_sha, view)
        if not os.path.isfile(path):
            return None
        try:
            array = np.load(path, allow_pickle=False)
            if array.ndim != 3:
                raise ValueError(f"an array of shape {array.shape}, not (h, w, C)")
        except Exception as error:  # truncated, corrupt or foreign: recompute, never fail the run for it
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            tqdm.write(f"warning: cache entry {path} is unreadable ({reason}); recomputing it", file=sys.stderr)
            return None
        h, w, channels = array.shape
        return torch.from_numpy(array).view(h * w, channels), (h, w)

    def store(self, rgb_sha, view, patches, grid):
        buffer = io.BytesIO()
        np.save(buffer, patches.cpu().view(*grid, -1).numpy(), allow_pickle=False)
        self.write(self.path(rgb_sha, view), buffer.getvalue())

    def view_features(self, model, files, load_rgb, flip=True):
        """model.view_features for the images `files` (their RGB files' paths), computing only what is not stored
        (and storing it): load_rgb(file) gives an image's (3, H, W) input, decoded only for those. The values are
        those the model computes: on a CPU each view runs alone anyway."""
        shas = [sha256_of_file(path) for path in files]
        views = [(i, view) for view in range(2 if flip else 1) for i in range(len(files))]  # images, then mirrors
        found = {(i, view): self.load(shas[i], view) for i, view in views}
        missing = [key for key in views if found[key] is None]
        self.hits += len(views) - len(missing)
        self.misses += len(missing)
        if missing:
            rgb = {i: load_rgb(files[i]) for i in sorted({i for i, _ in missing})}
            images = torch.stack([rgb[i].flip(2) if view else rgb[i] for i, view in missing])
            patches, grid = model.view_features(images, flip=False)
            for (i, view), one in zip(missing, patches):
                self.store(shas[i], view, one, grid)
                found[(i, view)] = (one, grid)
        patches = torch.stack([found[key][0].to(model.device) for key in views])  # (V, hw, C)
        return patches, found[views[0]][1]
