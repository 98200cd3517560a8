#!/bin/sh
# Every CLIP backbone with each dense feature it supports, on NYU Depth V2, then one markdown table. Runs from
# any folder. Needs the released weights (downloaded on first use into ~/.cache/clip, about 5 GB for all nine).
# Extra arguments go to every eval.py run, e.g.  sh backbones.sh --data_path /data/NYU_Depth_V2 --device cuda
# Results: $RESULTS (default results/backbones)/<backbone>_<features>.json and table.md.
set -e
here=$(dirname "$0")
out=${RESULTS:-results/backbones}
mkdir -p "$out"
run() { model=$1; features=$2; shift 2
        python3 "$here/eval.py" --clip_model "$model" --features "$features" \
            --output "$out/$(echo "$model" | tr / -)_$features.json" "$@"; }

run RN50 paper "$@"
for model in RN50 RN101 RN50x4 RN50x16 RN50x64; do run "$model" value "$@"; done
for model in ViT-B/32 ViT-B/16 ViT-L/14 ViT-L/14@336px; do
    for features in value tokens; do run "$model" "$features" "$@"; done
done
python3 "$here/table.py" "$out"/RN50_paper.json "$out"/RN*_value.json "$out"/ViT-*.json > "$out/table.md.part"
mv "$out/table.md.part" "$out/table.md"
cat "$out/table.md"
