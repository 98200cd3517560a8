"""RSA's scene descriptions, read in their layout (github.com/Adonis-galaxy/RSA, RSA/text/, at rsa.RSA_COMMIT).

    <root>/text_all/<nyu|kitti|void>/<train|test>/<image path without extension>.txt
        15 lines per image: 10 captions of the image by vision-language models, then 5 sentences built from its
        panoptic labels ("An image with two sinks, a mirror, ..."), each with the objects in another order.
        This is what their get_text reads (train_3d.py's --txt_path and --txt_path_eval).
    <root>/seg_txt_panoptic/<nyu|kitti|void>/<train|test>/<image path without extension>.txt
        One line per panoptic segment: its label, a space, the fraction of the image it covers ("sink 0.0561");
        their text/move_text.py built text_all's last 5 lines from these. Read here, not used by their training.

The image path is the first field of a split-list line (NYU: 'bathroom/rgb_00045.jpg'; KITTI:
'2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000006.png'; VOID: 'void_1500/data/desktop2/image/
1552625295.7828.png'); get_text drops its last 4 characters (the extension) and adds '.txt'.
"""
import os
import random

RSA_REPO = "Adonis-galaxy/RSA"
RSA_COMMIT = "7e88bc22b4091f17f6ae115a36372f5e405dfd39"  # the commit of their repository rsa.py, train_scale.py and
# this module were read from, and whose caption files prepare_captions fetches
CAPTIONS_PER_IMAGE = 15  # lines of every text_all file; their training draws random.randint(0, 14)
KINDS = ("text_all", "seg_txt_panoptic")
DATASETS = {"NYU": "nyu", "KITTI": "kitti", "VOID": "void"}  # eval.py's --dataset -> their folder name
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ROOT = os.path.join(HERE, "RSA_text")  # where prepare_captions puts their text/ folder
HINT = "python -m datasets.prepare_captions --download fetches their caption files (docs/rsa.md)"


def split_folder(root, dataset, split="test", kind="text_all"):
    """The folder holding one dataset's split of captions. root may be their text/ folder (holding text_all/),
    text_all/ itself (holding nyu/, kitti/, void/), or the split folder already (e.g. text_all/nyu/test)."""
    name = DATASETS.get(dataset.upper(), dataset.lower())
    for candidate in (os.path.join(root, kind, name, split), os.path.join(root, name, split)):
        if os.path.isdir(candidate):
            return candidate
    return root


def caption_path(folder, image_path):
    """The .txt beside an image path (a split list's first field) in a split folder, as their get_text builds it:
    the path's last 4 characters (its extension) dropped. (A leading '/', which their NYU training list has, is
    harmless: os.path.join would drop the folder, so it is stripped.)"""
    return os.path.join(folder, image_path.split(" ")[0].lstrip("/")[:-4] + ".txt")


def read_captions(path, need=CAPTIONS_PER_IMAGE):
    """A text_all file -> its captions, trailing newlines removed (CLIP's tokenizer drops them: the same tokens).
    need: how many lines the file must have: their 15 for training (their get_text would crash on a shorter file
    or, worse, reuse the previous image's caption of the batch); 1 for evaluation, which reads line 0 only (a
    caption file of your own may hold one line). ValueError (one line, with what to do) when it is missing or
    short."""
    if not os.path.isfile(path):
        raise ValueError(f"no caption file {path} for this image; {HINT}, or give --captions the folder holding "
                         f"<image path>.txt files")
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    if len(lines) < need or not lines[0].strip():
        use = f"training draws one of {CAPTIONS_PER_IMAGE}" if need > 1 else "evaluation reads the first, not empty"
        raise ValueError(f"{path} has {len(lines)} line(s){' and an empty first one' if lines else ''}: {use} "
                         f"(RSA's caption files hold {CAPTIONS_PER_IMAGE}, one caption per line)")
    return lines


def pick_caption(captions, mode, rng=random):
    """Their get_text's choice of one caption: training, a uniformly random one of the 15 (rng.randint(0, 14),
    their draw from Python's global random); evaluation, the first line."""
    if mode == "train":
        return captions[rng.randint(0, CAPTIONS_PER_IMAGE - 1)]
    if mode == "eval":
        return captions[0]
    raise ValueError(f"unknown caption mode {mode!r}; choose train or eval")


def get_text(folder, image_paths, mode, rng=random):
    """Their utils.get_text for a batch: image paths (split-list lines or their first fields) -> one caption each
    (trailing newline removed)."""
    need = CAPTIONS_PER_IMAGE if mode == "train" else 1
    return [pick_caption(read_captions(caption_path(folder, path), need), mode, rng) for path in image_paths]


def read_panoptic(path):
    """A seg_txt_panoptic file -> [(label, fraction of the image)]; a label may hold spaces ('traffic light'), the
    fraction is the last field. ValueError when missing or a line does not end in a number."""
    if not os.path.isfile(path):
        raise ValueError(f"no panoptic description {path}; {HINT}")
    segments = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            label, _, fraction = line.rstrip("\n").rpartition(" ")
            try:
                segments.append((label, float(fraction)))
            except ValueError:
                raise ValueError(f"{path}:{number}: expected '<label> <fraction>', got {line.strip()!r}") from None
    return segments
