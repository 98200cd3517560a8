#!/bin/sh
# DepthCLIP zero-shot on every dataset of the suite that is present, then one table. Runs from any folder.
#   sh benchmark.sh [eval.py flags]       e.g. sh benchmark.sh --clip_model ViT-B/16 --features maskclip
# Data: datasets/<NAME> (NYU: datasets/NYU_Depth_V2, KITTI: datasets/KITTI; docs/data.md), or DATA_ROOT=DIR for
# DIR/<NAME>. Results: results/suite/$SETTING/<NAME>.json (SETTING=depthclip by default; one row of the table per
# setting folder). ALIGN=lstsq (default), lstsq_disparity, median or none scores ETH3D, ScanNet, DIODE, iBims-1
# and SUN RGB-D; NYU and KITTI keep their own protocols (metric depth). Image features go to features/ (--cache).
here="$(cd "$(dirname "$0")" && pwd)"
setting="${SETTING:-depthclip}"
align="${ALIGN:-lstsq}"
out="results/suite/$setting"
mkdir -p "$out"
for name in NYU KITTI ETH3D SCANNET DIODE IBIMS SUNRGBD; do
    case $name in
        NYU) root="${DATA_ROOT:-$here/datasets}/NYU_Depth_V2"; extra="" ;;
        KITTI) root="${DATA_ROOT:-$here/datasets}/KITTI"; extra="" ;;
        *) root="${DATA_ROOT:-$here/datasets}/$name"; extra="--align $align" ;;
    esac
    [ -d "$root" ] || { echo "$name: no data at $root (docs/data.md says how to get it)"; continue; }
    python3 "$here/eval.py" --dataset "$name" --data_path "$root" $extra --cache features --output "$out/$name.json" \
        "$@" || echo "$name: not scored (the line above says why)"
done
python3 "$here/table.py" --suite results/suite/*/*.json
