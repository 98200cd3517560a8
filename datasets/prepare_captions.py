"""RSA's caption files (datasets/captions.py) from their repository, at the commit rsa.py was read from.

    python -m datasets.prepare_captions --check      # complete? per dataset and split: what is missing
    python -m datasets.prepare_captions --urls       # where they come from
    python -m datasets.prepare_captions --download   # fetch their repository's archive (resumable), keep the text

--root defaults to datasets/RSA_text (eval.py --captions' default). The download is GitHub's archive of
github.com/Adonis-galaxy/RSA at RSA_COMMIT (about 200 MB, no published checksum); of it only RSA/text/text_all,
RSA/text/seg_txt_panoptic (195,486 small files, about 150 MB) and RSA/data_splits/void (VOID's lists) are kept,
as <root>/text_all, <root>/seg_txt_panoptic and <root>/data_splits/void. --splits test keeps only the test captions
(2,106 per kind). The checks count caption files against the evaluated lists: NYU's 654 test images, KITTI's 652
Eigen test images with ground truth, VOID's 800 (datasets/lists); training: BTS's NYU and KITTI lists, their VOID
train_image.txt.
"""
import gzip
import os
import sys
import tarfile

if __name__ == "__main__" and not __package__:  # run by its path: import from the repository's root, as with -m
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import cli
from datasets import captions, kitti, nyu, void
from datasets.captions import RSA_COMMIT, RSA_REPO
from downloads import download

CODELOAD = "https://codeload.github.com"  # GitHub's archive server: <server>/<owner>/<repo>/tar.gz/<commit>
SPLITS = ("test", "train")
KEPT = {"RSA/text/text_all/": "text_all/", "RSA/text/seg_txt_panoptic/": "seg_txt_panoptic/",
        "RSA/data_splits/void/": "data_splits/void/"}  # their archive's folders -> under --root


def archive_url(mirror=CODELOAD):
    return f"{mirror}/{RSA_REPO}/tar.gz/{RSA_COMMIT}"


def image_paths(dataset, split, root):
    """The image paths (their lists' first fields) whose captions a split should have; None when the list is not
    at hand (VOID's training list comes with the download)."""
    if dataset == "VOID":
        listing = void.DEFAULT_TEST_LIST if split == "test" else os.path.join(root, "data_splits", "void",
                                                                            "train_image.txt")
        if not os.path.isfile(listing):
            return None
        with open(listing) as f:
            return [line.split()[0] for line in f if line.strip()]
    listing = {("NYU", "test"): nyu.DEFAULT_TEST_LIST, ("NYU", "train"): nyu.BTS_TRAIN_LIST,
               ("KITTI", "test"): kitti.DEFAULT_TEST_LIST, ("KITTI", "train"): kitti.TRAIN_LIST}[dataset, split]
    with (gzip.open if listing.endswith(".gz") else open)(listing, "rt") as f:
        fields = [line.split() for line in f if line.strip()]
    return [line[0] for line in fields if len(line) < 2 or line[1] != "None"]  # their KITTI test captions: with gt


def check(root, splits=SPLITS, kinds=captions.KINDS):
    """(complete, [one line per dataset, split and kind])."""
    lines, complete = [], True
    for kind in kinds:
        for dataset in captions.DATASETS:
            for split in splits:
                paths = image_paths(dataset, split, root)
                folder = os.path.join(root, kind, captions.DATASETS[dataset], split)
                if paths is None:
                    complete = False
                    lines.append(f"{kind} {dataset} {split}: its list {root}/data_splits/void/train_image.txt is "
                                 f"missing (it comes with --download)")
                    continue
                missing = [p for p in paths if not os.path.isfile(captions.caption_path(folder, p))]
                complete &= not missing
                lines.append(f"{kind} {dataset} {split}: {len(paths) - len(missing)} of {len(paths)} caption files"
                             + (f"; missing, e.g. {captions.caption_path(folder, missing[0])}" if missing else ""))
    return complete, lines


def kept_name(member, splits):
    """An archive member's path under --root, or None when it is not kept."""
    parts = member.name.split("/", 1)  # the archive's top folder (RSA-<commit>) first
    if len(parts) < 2 or not member.isfile():
        return None
    for source, target in KEPT.items():
        if parts[1].startswith(source):
            rest = parts[1][len(source):]
            fields = rest.split("/")  # <dataset>/<split>/... for the captions
            if target != "data_splits/void/" and (len(fields) < 3 or fields[1] not in splits):
                return None
            return target + rest
    return None


def unpack(archive, root, splits):
    """Their caption folders (and VOID's lists) from the archive into root; returns the count of files."""
    count = 0
    with tarfile.open(archive) as tar:
        for member in tar:
            name = kept_name(member, splits)
            if name is None:
                continue
            member.name = name
            tar.extract(member, root, filter="data")  # no member outside root, no links out of it
            count += 1
    if not count:
        raise ValueError(f"{archive} holds none of their caption folders (RSA/text/text_all, ...); is it their "
                         f"repository's archive at {RSA_COMMIT[:7]}?")
    return count


def main(argv=None):
    p = cli.ArgumentParser(prog="prepare_captions", description=__doc__.splitlines()[0])
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="say whether the caption files are complete (exit 1 "
                        "if not)")
    action.add_argument("--urls", action="store_true", help="print where they come from")
    action.add_argument("--download", action="store_true", help="fetch their repository's archive and keep its text")
    p.add_argument("--root", default=captions.DEFAULT_ROOT, help="where text_all/ and seg_txt_panoptic/ go")
    p.add_argument("--splits", default="test,train", help="test, train or test,train: what --download keeps and "
                   "--check counts")
    p.add_argument("--mirror", default=CODELOAD, help="the archive server (GitHub's codeload)")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    args = p.parse_args(argv)
    splits = tuple(s.strip() for s in args.splits.split(","))
    if not splits or any(s not in SPLITS for s in splits):
        p.error(f"--splits {args.splits}: give test, train or test,train")
    url = archive_url(args.mirror)
    if args.urls:
        print(f"{url}  (github.com/{RSA_REPO} at {RSA_COMMIT}: RSA/text/text_all, RSA/text/seg_txt_panoptic, "
              f"RSA/data_splits/void)")
        return 0
    if args.download:
        with cli.output_dir(args.root, "--root"):
            target = download(url, os.path.join(args.root, f"RSA-{RSA_COMMIT[:7]}.tar.gz"),
                              hint="check the network, or fetch it by hand (--urls) and place it there", resume=True)
            count = unpack(target, args.root, splits)
            os.remove(target)
        print(f"{count} files of their text kept under {args.root}")
    complete, lines = check(args.root, splits)
    print("\n".join(lines))
    if not complete:
        raise SystemExit(1)
    return 0


if __name__ == "__main__":
    cli.run(main)
