"""The zero-shot suite's data (datasets/zeroshot.py): is a dataset's layout complete, and fetching it where its
source publishes it.

    python -m datasets.prepare_zeroshot eth3d --check       # complete? else one line: what is missing
    python -m datasets.prepare_zeroshot eth3d --urls        # where it comes from
    python -m datasets.prepare_zeroshot eth3d --download    # fetch (resumable) and unpack into --data_path

--data_path defaults to datasets/<NAME> (eval.py --data_path). ETH3D, ScanNet and DIODE come as Marigold serves them
(their README's evaluation_dataset folder: one tar each, no published checksums); iBims-1 and SUN RGB-D have no
download here: docs/data.md says where their sources publish them.
"""
import os
import sys
import tarfile

if __name__ == "__main__" and not __package__:  # run by its path: import from the repository's root, as with -m
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import cli
from downloads import download
from datasets.images import DataError
from datasets.zeroshot import DIODE_SPLITS, HERE, MARIGOLD_DATA, PROTOCOLS, default_list, read_entries

ELSEWHERE = {"IBIMS": "the iBims-1 core set from its authors (TUM; docs/data.md)",
             "SUNRGBD": "SUN RGB-D's test images, arranged as ZoeDepth's rgb/rgb and gt/gt (docs/data.md)"}


def default_root(name):
    return os.path.join(HERE, name)


def check(name, root, listing=None):
    """(complete, one line saying so or what is missing)."""
    try:
        entries = read_entries(name, root, listing)
    except DataError as error:
        return False, str(error)
    return True, f"{name}: {len(entries)} images complete under {root}"


def main(argv=None):
    p = cli.ArgumentParser(prog="prepare_zeroshot", description=__doc__.splitlines()[0])
    p.add_argument("name", type=str.upper, choices=list(PROTOCOLS), help="(any capitals)")
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="say whether the layout is complete (exit 1 if not)")
    action.add_argument("--urls", action="store_true", help="print where the data comes from")
    action.add_argument("--download", action="store_true", help="fetch and unpack what its source serves")
    p.add_argument("--data_path", help="the dataset's folder (default datasets/<NAME>)")
    p.add_argument("--testfile", help="another split list (Marigold's datasets)")
    p.add_argument("--diode_split", default="all", choices=DIODE_SPLITS)
    p.add_argument("--mirror", default=MARIGOLD_DATA, help="where Marigold's evaluation tars are served")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    args = p.parse_args(argv)
    root = args.data_path or default_root(args.name)
    archive = PROTOCOLS[args.name].archive
    if args.urls:
        print(f"{args.mirror}/{archive}" if archive else f"no download here: {ELSEWHERE[args.name]}")
        return 0
    listing = args.testfile or default_list(args.name, args.diode_split)
    if args.download:
        if not archive:
            raise ValueError(f"{args.name} has no download here: get {ELSEWHERE[args.name]}, then --check")
        with cli.output_dir(root, "--data_path"):
            target = download(f"{args.mirror}/{archive}", os.path.join(root, os.path.basename(archive)),
                              hint="check the network, or fetch it by hand (--urls) into --data_path", resume=True)
            with tarfile.open(target) as tar:
                tar.extractall(root, filter="data")  # no member outside root, no links out of it
            os.remove(target)
    complete, line = check(args.name, root, listing)
    print(line)
    if not complete:
        raise SystemExit(1)
    return 0


if __name__ == "__main__":
    cli.run(main)
