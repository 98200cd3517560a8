"""eval.py --cache DIR: each image's patch features (MonoCLIP's image side), kept between runs.

    DIR/<settings key>/settings.json            what the key stands for (for people; the key decides)
    DIR/<settings key>/<rgb sha256>.npy         the image's patch features, (h, w, C) as numpy writes them
    DIR/<settings key>/<rgb sha256>-mirror.npy  the same for its mirror image (flip averaging)

The settings key is a hash of everything that determines the features besides the image: the checkpoint's
SHA256 (an open_clip pretrained tag by its name), the dense feature, precision, device type, dataset, input
size, normalization and this file's FORMAT. The image is named by its RGB file's SHA256, so a changed file or model is never served stale
features. Entries are plain .npy arrays (read ten times faster than torch.save files, and without pickle),
written to a temporary name and renamed. Delete DIR (or one key's folder) to clear it.

The cache is a speed-up and never stops a run: a folder that cannot be created, read or written, or whose
settings.json records other settings than its key stands for, is one warning line and the run goes on without it;
an entry that is unreadable (truncated, corrupt) or of another shape than this run's features (copied in from other
settings) is named in a warning, recomputed and rewritten.
"""
import collections
import hashlib
import io
import json
import os
import sys

import numpy as np
import torch
from tqdm import tqdm

from datasets.images import mean_std
from downloads import sha256_of_file
from files import write_file

FORMAT = 4  # bump when what an entry holds, or how it is computed, changes
VIEWS = ("", "-mirror")


def model_settings(model):
    """What determines a MonoCLIP's image side wherever the weights file lies and on whichever GPU: the weights'
    SHA256 (open_clip's model and tag), dense feature, precision, device type, and a graph runtime with its version
    where one runs the tower (a cached feature never mixes runtimes)."""
    return {"weights": model.backbone.weights_id(), "features": model.features, "precision": model.precision,
            "device": model.device.type, **({"runtime": model.backbone.runtime_name()}
                                            if model.backbone.runtime != "torch" else {})}


class FeatureCache:
    """The features of one setting (settings: a dict of what determines them) under folder/<key>."""

    @classmethod
    def of(cls, folder, model, dataset_name, dataset):
        """The cache of a model's features of a dataset's images (its input size and normalization)."""
        return cls(folder, {**model_settings(model), "dataset": dataset_name, "input_size": dataset.input_size,
                            "normalize": mean_std(dataset.normalize)})

    def __init__(self, folder, settings):
        settings = {**settings, "format": FORMAT}
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
        self.folder = os.path.join(folder, key)
        self.hits = self.misses = 0
        self.readable = self.writable = True
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as error:
            self.stop(f"--cache {folder} cannot be created ({error.strerror or error}); choose another place")
            return
        description = os.path.join(self.folder, "settings.json")
        written = json.loads(json.dumps(settings))  # as settings.json holds them (tuples become lists)
        try:
            with open(description) as f:
                recorded = json.load(f)
            if not isinstance(recorded, dict):
                raise ValueError(f"a JSON {type(recorded).__name__}, not an object")
        except FileNotFoundError:
            recorded = None
        except (OSError, ValueError) as error:  # a damaged description: the key still decides, so rewrite it
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            tqdm.write(f"warning: --cache {description} is unreadable ({reason}); writing it again", file=sys.stderr)
            recorded = None
        if recorded is None:
            self.write(description, (json.dumps(settings, indent=2) + "\n").encode())
        elif recorded != written:  # edited by hand, or a folder copied under another key: its entries are suspect
            other = sorted(name for name in {*written, *recorded} if written.get(name) != recorded.get(name))
            self.stop(f"--cache {self.folder} holds features of other settings (its settings.json differs in "
                      f"{', '.join(other)}); delete that folder")

    def stop(self, reason):
        """One warning line, and no more reading or writing: the run goes on without the cache."""
        self.readable = self.writable = False
        tqdm.write(f"warning: {reason}; going on without caching", file=sys.stderr)

    def write(self, path, data):
        """An entry, atomically; if the place cannot take it (a full disk, say), one warning and no more caching:
        the run goes on without it."""
        if not self.writable:
            return
        try:
            write_file(path, data, "--cache")
        except ValueError as error:
            self.stop(str(error))
        except OSError as error:  # the rename into place: a folder where the entry should be, say
            self.stop(f"cannot write {path} ({error.strerror or error}); choose another place (--cache)")

    def path(self, rgb_sha, view):
        return os.path.join(self.folder, f"{rgb_sha}{VIEWS[view]}.npy")

    def load(self, rgb_sha, view):
        """(patches (hw, C), grid (h, w)), or None if absent or unreadable (then said in one warning line)."""
        path = self.path(rgb_sha, view)
        if not self.readable or not os.path.isfile(path):
            return None
        try:
            array = np.load(path, allow_pickle=False)
            if array.ndim != 3:
                raise ValueError(f"an array of shape {array.shape}, not (h, w, C)")
        except PermissionError as error:
            self.stop(f"--cache {self.folder} cannot be read ({error.strerror or error}); choose another place")
            return None
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
        those the model computes: on a CPU each view runs alone anyway. A stored entry of another shape than this
        run's features (see expected_shape) is named in a warning and recomputed."""
        shas = [sha256_of_file(path) for path in files]
        views = [(i, view) for view in range(2 if flip else 1) for i in range(len(files))]  # images, then mirrors
        found = {(i, view): self.load(shas[i], view) for i, view in views}
        computed = self.compute(model, files, load_rgb, shas, found, [key for key in views if found[key] is None])
        shape = expected_shape(model, [found[key] for key in views], [found[key] for key in computed])
        wrong = [key for key in views if key not in computed and entry_shape(found[key]) != shape]
        for i, view in wrong:
            tqdm.write(f"warning: cache entry {self.path(shas[i], view)} holds features of shape "
                       f"{entry_shape(found[i, view])}, not this run's {shape} (another setting's); recomputing it",
                       file=sys.stderr)
        computed += self.compute(model, files, load_rgb, shas, found, wrong)
        self.hits += len(views) - len(computed)
        self.misses += len(computed)
        patches = torch.stack([found[key][0].to(model.device) for key in views])  # (V, hw, C)
        return patches, found[views[0]][1]

    def compute(self, model, files, load_rgb, shas, found, missing):
        """Run the image tower for the views `missing` ((image, view) keys), store them and put them into found;
        returns missing."""
        if missing:
            rgb = {i: load_rgb(files[i]) for i in sorted({i for i, _ in missing})}
            images = torch.stack([rgb[i].flip(2) if view else rgb[i] for i, view in missing])
            patches, grid = model.view_features(images, flip=False)
            for (i, view), one in zip(missing, patches):
                self.store(shas[i], view, one, grid)
                found[(i, view)] = (one, grid)
        return list(missing)


def entry_shape(entry):
    """(patches (hw, C), grid (h, w)) -> (h, w, C)."""
    patches, grid = entry
    return (*grid, patches.shape[-1])


def expected_shape(model, entries, computed):
    """The (h, w, C) this run's features have: those just computed, if any; else the model's channels (patch
    features live in the text embedding space: the head takes their dot products with the prompts' (C, K) columns)
    and the grid most stored entries of those channels have (the views of one batch share it)."""
    if computed:
        return entry_shape(computed[0])
    channels = model.encoded.text.shape[0]
    grids = collections.Counter(entry[1] for entry in entries if entry[0].shape[-1] == channels)
    return (*grids.most_common(1)[0][0], channels) if grids else (None, None, channels)
