"""Build NYU Depth V2 `official_splits/{train,test}` from the labeled MATLAB file, as the authors' data was built.

    python -m datasets.prepare_nyu --download                  # fetch nyu_depth_v2_labeled.mat (2.8 GB) first
    python -m datasets.prepare_nyu --mat /data/nyu_depth_v2_labeled.mat --out datasets/NYU_Depth_V2

Image i (1-based) of the 1449 goes to official_splits/<train|test>/<sceneType>/ as rgb_{i-1:05d}.jpg (a 7-pixel
black border kept, JPEG quality 95) and sync_depth_{i-1:05d}.png (rawDepths in mm, uint16, truncated; 0 = no
reading). The split is splits.mat's 1-based trainNdxs/testNdxs. Needs h5py and scipy.
"""
import io
import os
import sys

if __name__ == "__main__" and not __package__:  # run by its path: import from the repository's root, as with -m
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from PIL import Image
from tqdm import tqdm

import cli
from downloads import download
from datasets.nyu import DEFAULT_DATA_PATH, DEFAULT_TEST_LIST, FRAME, HERE, SPLIT_DIR, DataError

URL = "http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat"
DEFAULT_MAT = os.path.join(HERE, "nyu_depth_v2_labeled.mat")
DEFAULT_SPLITS = os.path.join(HERE, "splits.mat")
KEPT_ROWS, KEPT_COLS = slice(7, 474), slice(7, 632)  # outside these the conversion writes black
JPEG_QUALITY = 95  # OpenCV's default, which the authors' converter used


def read_split(path):
    """{1-based image index: 'train' or 'test'} from splits.mat."""
    import scipy.io
    split = scipy.io.loadmat(path)
    return {**{int(i): "train" for i in split["trainNdxs"].ravel()}, **{int(i): "test" for i in split["testNdxs"].ravel()}}


def open_labeled(path):
    """The labeled file's images (N, 3, 640, 480), rawDepths (N, 640, 480) and scene names, lazily from HDF5."""
    import h5py
    try:
        mat = h5py.File(path, "r")
    except OSError as error:
        raise DataError(f"{path} is not a MATLAB v7.3 (HDF5) file ({error}); expected nyu_depth_v2_labeled.mat") from None
    missing = [key for key in ("images", "rawDepths", "sceneTypes") if key not in mat]
    if missing:
        raise DataError(f"{path} has no {', '.join(missing)}; expected nyu_depth_v2_labeled.mat")
    scenes = ["".join(map(chr, np.asarray(mat[ref]).ravel())) for ref in mat["sceneTypes"][0]]
    return mat["images"], mat["rawDepths"], scenes


def save(path, array, **options):
    """Write a PNG or JPEG under a temporary name, renamed when complete: no half-written file survives."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG" if path.endswith(".jpg") else "PNG", **options)
    cli.write_file(path, buffer.getvalue())


def convert(images, raw_depths, scenes, split, out):
    """Write every image of the split; returns the number written."""
    for i in tqdm(range(len(scenes)), desc="convert", unit="image"):
        part = split.get(i + 1)
        if part is None:
            continue
        folder = os.path.join(out, "official_splits", part, scenes[i])
        os.makedirs(folder, exist_ok=True)
        rgb = np.zeros((*FRAME, 3), np.uint8)
        rgb[KEPT_ROWS, KEPT_COLS] = images[i].T[KEPT_ROWS, KEPT_COLS]  # (3, 640, 480) -> (480, 640, 3)
        depth = (raw_depths[i].T * 1000.0).astype(np.uint16)  # (640, 480) m -> (480, 640) mm, truncated as theirs
        save(os.path.join(folder, f"rgb_{i:05d}.jpg"), rgb, quality=JPEG_QUALITY)
        save(os.path.join(folder, f"sync_depth_{i:05d}.png"), depth)
    return len(split)


def check_test_pairs(out, test_list):
    """Every file the evaluation list names must now exist under out/official_splits/test."""
    with open(test_list) as f:
        names = [name for line in f for name in line.split()[:2]]
    missing = [name for name in names if not os.path.isfile(os.path.join(out, SPLIT_DIR, name))]
    if missing:
        raise DataError(f"{len(missing)} of the {len(names)} files in {os.path.basename(test_list)} were not written "
                        f"(first: {', '.join(missing[:3])}): {out} holds another split; check --mat and --splits")


def main(argv=None):
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mat", default=DEFAULT_MAT, help="nyu_depth_v2_labeled.mat (MATLAB v7.3)")
    p.add_argument("--download", action="store_true", help=f"fetch the file from {URL} to --mat if it is not there")
    p.add_argument("--data_path", default=DEFAULT_DATA_PATH, help="the folder to hold official_splits/ (eval.py's "
                   "--data_path)")
    p.add_argument("--splits_mat", default=DEFAULT_SPLITS, help="splits.mat with 1-based trainNdxs/testNdxs")
    for old, new, dest in (("--output", "--data_path", "data_path"), ("--out", "--data_path", "data_path"),
                           ("--splits", "--splits_mat", "splits_mat")):  # names another script gives another meaning
        p.add_argument(old, dest=dest, action=cli.OldSpelling, new=new)
    p.add_argument("--testfile_nyu", "--test_list", dest="testfile_nyu", default=DEFAULT_TEST_LIST,
                   help="the test list (eval.py's --testfile_nyu) whose pairs must exist afterwards")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    args = p.parse_args(argv)
    try:
        import h5py  # noqa: F401
        import scipy  # noqa: F401
    except ImportError as error:
        raise RuntimeError(f"prepare_nyu.py needs h5py and scipy ({error}); pip install h5py scipy") from None

    if not os.path.isfile(args.mat):
        if not args.download:
            raise DataError(f"{args.mat} does not exist; pass --mat with its path, or --download to fetch it from {URL}")
        with cli.output_dir(os.path.dirname(os.path.abspath(args.mat)), "--mat folder"):
            download(URL, args.mat, hint="download it by hand and pass --mat /path/to/nyu_depth_v2_labeled.mat")
    with cli.output_dir(args.data_path, "--data_path"):
        images, raw_depths, scenes = open_labeled(args.mat)
        count = convert(images, raw_depths, scenes, read_split(args.splits_mat), args.data_path)
    check_test_pairs(args.data_path, args.testfile_nyu)
    print(f"{count} images written under {os.path.join(args.data_path, 'official_splits')}; "
          f"all pairs of {os.path.basename(args.testfile_nyu)} present")


if __name__ == "__main__":
    cli.run(main)
