"""Results files (eval.py --output, single runs or sweeps) -> one markdown table, each run beside the paper's
number where it has one.

    python table.py results/ablations/sweep.json results/ablations/lower_bound.json > table.md
    python table.py --suite results/suite/*/*.json      # benchmark.sh's: a row per setting, a column per dataset

A sweep's runs are named by their "name"; a single run by its file name (paper.json -> paper). Names of the
paper's rows get its numbers.
"""
import json
import os

import cli
from calculate_error import TABLE_COLUMNS
from options import DATASETS

PAPER = {  # NYU Depth V2, all 654 test images: δ1, δ2, δ3, rel, log10, rmse
    "paper": (0.394, 0.683, 0.851, 0.388, 0.156, 1.167),
    "prompt1": (0.341, 0.623, 0.816, 0.379, 0.175, 1.274),
    "prompt2": (0.377, 0.667, 0.845, 0.385, 0.161, 1.196),
    "prompt3": (0.380, 0.670, 0.846, 0.375, 0.160, 1.196),
    "class1": (0.373, 0.653, 0.828, 0.467, 0.166, 1.228),
    "class2": (0.366, 0.641, 0.819, 0.496, 0.170, 1.248),
    "class3": (0.333, 0.621, 0.818, 0.353, 0.176, 1.290),
    "class4": (0.288, 0.548, 0.752, 0.663, 0.201, 1.439),
    "lower_bound": (0.140, 0.297, 0.471, 1.327, 0.323, 2.934),
}


def named_runs(path):
    """[(name, results)] of one results file: a sweep's runs, or the file itself named after it."""
    with open(path) as f:
        results = json.load(f)
    if "runs" in results:
        return [(run["name"], run) for run in results["runs"]]
    return [(os.path.splitext(os.path.basename(path))[0], results)]


def markdown_table(paths):
    lines = ["| run | images | " + " | ".join(title for title, _ in TABLE_COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(TABLE_COLUMNS)]
    names = []
    for path in paths:
        for name, results in named_runs(path):
            cells = [f"{results['metrics'][key]:.3f}" for _, key in TABLE_COLUMNS]
            if name in PAPER:
                cells = [f"{cell} ({paper:.3f})" for cell, paper in zip(cells, PAPER[name])]
            lines.append(f"| {name} | {results['count']} | " + " | ".join(cells) + " |")
            names.append(name)
    if any(name in PAPER for name in names):
        lines.append("\nIn parentheses: the paper's number (NYU Depth V2, 654 test images).")
    return "\n".join(lines)


def suite_table(paths):
    """benchmark.sh's results (<setting>/<DATASET>.json) -> one markdown table in Marigold's shape: a row per setting,
    each dataset's AbsRel and δ1, and the average rank over those columns (1 = best; AbsRel lower, δ1 higher)."""
    scores = {}  # setting -> {dataset: metrics}
    for path in paths:
        with open(path) as f:
            results = json.load(f)
        setting = os.path.basename(os.path.dirname(os.path.abspath(path)))
        scores.setdefault(setting, {})[results["dataset"]] = results["metrics"]
    datasets = [name for name in DATASETS if any(name in row for row in scores.values())]
    columns = [(name, metric) for name in datasets for metric in ("abs_rel", "a1")]
    ranks = {setting: [] for setting in scores}
    for name, metric in columns:
        present = [(row[name][metric], setting) for setting, row in scores.items() if name in row]
        ordered = sorted(present, reverse=metric == "a1")
        for value, setting in present:
            ranks[setting].append(1 + sum(other > value if metric == "a1" else other < value for other, _ in ordered))
    lines = ["| setting | " + " | ".join(f"{name} {'AbsRel' if m == 'abs_rel' else 'δ1'}" for name, m in columns)
             + " | avg. rank |", "|---|" + "---:|" * (len(columns) + 1)]
    for setting, row in sorted(scores.items(), key=lambda item: (sum(ranks[item[0]]) / len(ranks[item[0]]), item[0])):
        cells = [f"{row[name][metric]:.3f}" if name in row else "–" for name, metric in columns]
        lines.append(f"| {setting} | " + " | ".join(cells) + f" | {sum(ranks[setting]) / len(ranks[setting]):.1f} |")
    lines.append("\nETH3D, ScanNet, DIODE: Marigold's protocol; iBims-1, SUN RGB-D: ZoeDepth's; each with the --align "
                 "in its results' config. NYU and KITTI: their own protocols (metric depth). Only numbers this "
                 "repository computed.")
    return "\n".join(lines)


def main(argv=None):
    p = cli.ArgumentParser(prog="table.py", description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", help="results files written by eval.py --output (single runs or sweeps)")
    p.add_argument("--suite", action="store_true", help="benchmark.sh's <setting>/<DATASET>.json files: one row per "
                   "setting, each dataset's AbsRel and δ1, the average rank")
    args = p.parse_args(argv)
    for path in args.results:
        if not os.path.isfile(path):
            raise ValueError(f"results file {path} does not exist; run eval.py --output {path} first")
    print(suite_table(args.results) if args.suite else markdown_table(args.results))


if __name__ == "__main__":
    cli.run(main)
