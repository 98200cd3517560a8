#!/bin/sh
# Backbones x dense features on NYU Depth V2, then one markdown table. Runs from any folder.
# OpenAI's nine CLIPs, then a curated set of open_clip models (needs open_clip_torch): ResNets trained on YFCC and
# CC12M, and LAION-2B / DataComp ViTs from B/16 to bigG/14. Needs the weights: OpenAI's download into ~/.cache/clip
# (about 5 GB), open_clip's into its own cache (tens of GB for all). Without network it stops at the first download.
# Extra arguments go to every eval.py run, e.g.  sh backbones.sh --data_path /data/NYU_Depth_V2 --device cuda
# Results: $RESULTS (default results/backbones)/<backbone>_<features>.json and table.md.
set -e
here=$(dirname "$0")
out=${RESULTS:-results/backbones}
mkdir -p "$out"
run() { model=$1; features=$2; shift 2
        python3 "$here/eval.py" --clip_model "$model" --features "$features" \
            --output "$out/$(echo "$model" | tr '/:@' '---')_$features.json" "$@"; }

run RN50 paper "$@"
for model in RN50 RN101 RN50x4 RN50x16 RN50x64 \
             open_clip:RN50-quickgelu@yfcc15m open_clip:RN50-quickgelu@cc12m open_clip:RN101-quickgelu@yfcc15m; do
    run "$model" maskclip "$@"
done
for model in ViT-B/32 ViT-B/16 ViT-L/14 ViT-L/14@336px \
             open_clip:ViT-B-16@laion2b_s34b_b88k open_clip:ViT-B-16@datacomp_xl_s13b_b90k \
             open_clip:ViT-L-14@laion2b_s32b_b82k open_clip:ViT-L-14@datacomp_xl_s13b_b90k \
             open_clip:ViT-H-14@laion2b_s32b_b79k open_clip:ViT-g-14@laion2b_s34b_b88k \
             open_clip:ViT-bigG-14@laion2b_s39b_b160k; do
    for features in maskclip value tokens; do run "$model" "$features" "$@"; done
done
python3 "$here/table.py" "$out"/*.json > "$out/table.md.part"
mv "$out/table.md.part" "$out/table.md"
cat "$out/table.md"
