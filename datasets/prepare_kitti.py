"""KITTI's Eigen splits: what is there, what to fetch, and fetching only that.

    python -m datasets.prepare_kitti --check      # how many list entries are present; the missing drives
    python -m datasets.prepare_kitti --urls       # the archives the test split needs, one URL a line
    python -m datasets.prepare_kitti --download   # fetch and unzip the missing ones (resumes a partial file)
    python -m datasets.prepare_kitti --split train --check   # the same for BTS's Eigen training list (train.py)

The test split needs the raw-data zips of its 28 drives (the RGB frames, about 17 GB) and the annotated
depth (data_depth_annotated.zip, 14 GB, of which the split's drives' maps are kept); the training split needs 33
other drives' zips. Drive zips unzip into --data_path as <date>/<drive>/...; the annotated depth's train/ and val/
folders are merged into --gt_path as <drive>/proj_depth/..., the layout eval.py and train.py --dataset KITTI read.
"""
import os
import sys
import zipfile

if __name__ == "__main__" and not __package__:  # run by its path: import from the repository's root, as with -m
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import cli
from downloads import download
from datasets.images import DataError, read_list
from datasets.kitti import DEFAULT_DATA_PATH, DEFAULT_TEST_LIST, GT_FOLDER, TRAIN_LIST, drive_of

MIRROR = "https://s3.eu-central-1.amazonaws.com/avg-kitti"
ANNOTATED = "data_depth_annotated.zip"


def drive_url(drive, mirror=MIRROR):
    """'2011_09_26_drive_0002_sync' -> its raw-data zip's URL."""
    return f"{mirror}/raw_data/{drive[:-len('_sync')]}/{drive}.zip"


def status(data_path, gt_path, entries):
    """(entries present, [drives whose RGB is missing], annotated depth missing for some entry?)."""
    present, missing_drives, missing_gt = 0, set(), False
    for rgb, gt in entries:
        rgb_there = os.path.isfile(os.path.join(data_path, rgb))
        gt_there = gt is None or os.path.isfile(os.path.join(gt_path, gt))
        present += rgb_there and gt_there
        if not rgb_there:
            missing_drives.add(drive_of(rgb))
        missing_gt |= not gt_there
    return present, sorted(missing_drives), missing_gt


def unzip(archive, destination, strip_first=False, keep=None):
    """Extract a zip into destination (without its first folder with strip_first; only the folders named in keep,
    if given), refusing paths that would leave it."""
    root = os.path.abspath(destination)
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.infolist():
            name = member.filename.split("/", 1)[1] if strip_first and "/" in member.filename else member.filename
            if keep is not None and name.split("/")[0] not in keep:
                continue
            target = os.path.abspath(os.path.join(root, name))
            if not target.startswith(root + os.sep):
                raise DataError(f"{archive} holds {member.filename}, which would land outside {destination}")
            if member.is_dir() or not name:
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with zipped.open(member) as source:
                cli.write_file(target, source.read())


def main(argv=None):
    p = cli.ArgumentParser(prog="prepare_kitti", description=__doc__.splitlines()[0])
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="report what the list needs and what is present")
    action.add_argument("--urls", action="store_true", help="print the archives the split needs")
    action.add_argument("--download", action="store_true", help="fetch and unzip what is missing")
    p.add_argument("--data_path", default=DEFAULT_DATA_PATH, help="the raw-data root (eval.py's --data_path)")
    p.add_argument("--gt_path", help=f"the annotated-depth root (default <data_path>/{GT_FOLDER})")
    p.add_argument("--split", default="test", choices=["test", "train"], help="test: the Eigen test list's drives; "
                   "train: BTS's Eigen training list's (train.py --dataset KITTI)")
    p.add_argument("--testfile_kitti", help="another list of images (default: the --split's list)")
    p.add_argument("--mirror", default=MIRROR, help="where the archives are served")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    args = p.parse_args(argv)
    gt_path = args.gt_path or os.path.join(args.data_path, GT_FOLDER)
    args.testfile_kitti = args.testfile_kitti or (DEFAULT_TEST_LIST if args.split == "test" else TRAIN_LIST)
    entries = [(rgb, None if gt == "None" else gt) for _, rgb, gt in read_list(args.testfile_kitti, "--testfile_kitti")]
    drives = sorted({drive_of(rgb) for rgb, _ in entries})
    if args.urls:
        print("\n".join([drive_url(drive, args.mirror) for drive in drives] + [f"{args.mirror}/{ANNOTATED}"]))
        return None
    present, missing_drives, missing_gt = status(args.data_path, gt_path, entries)
    if args.download:
        with cli.output_dir(args.data_path, "--data_path"), cli.output_dir(gt_path, "--gt_path"):
            hint = "check the network, or fetch the archive by hand (--urls lists them) and unzip it"
            for drive in missing_drives:
                archive = download(drive_url(drive, args.mirror), os.path.join(args.data_path, f"{drive}.zip"),
                                   hint=hint, resume=True)
                unzip(archive, args.data_path)
                os.remove(archive)
            if missing_gt:
                archive = download(f"{args.mirror}/{ANNOTATED}", os.path.join(args.data_path, ANNOTATED), hint=hint,
                                   resume=True)
                unzip(archive, gt_path, strip_first=True, keep=set(drives))  # {train,val}/<drive>/... -> <drive>/...
                os.remove(archive)
        present, missing_drives, missing_gt = status(args.data_path, gt_path, entries)
    scored = sum(gt is not None for _, gt in entries)
    print(f"{present} of {len(entries)} entries of {os.path.basename(args.testfile_kitti)} present ({scored} with "
          f"ground truth) under {args.data_path} and {gt_path}")
    if missing_drives:
        print(f"missing drives ({len(missing_drives)} of {len(drives)}): {', '.join(missing_drives)}")
    if missing_gt:
        print(f"missing annotated depth: {ANNOTATED} unzipped into {gt_path}")
    if missing_drives or missing_gt:
        again = "" if args.split == "test" else " --split train"
        print(f"python -m datasets.prepare_kitti{again} --download fetches them; --urls lists the archives")
    return present, missing_drives, missing_gt


if __name__ == "__main__":
    cli.run(main)
