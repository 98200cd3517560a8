#!/bin/sh
# The paper's prompt and bin ablations and its baseline rows on NYU Depth V2, then one markdown table.
# Extra arguments go to every eval.py run, e.g.  sh ablations.sh --data_path /data/NYU_Depth_V2 --batch_size 16
# Results: $RESULTS (default results/ablations)/<run>.json and table.md.
set -e
out=${RESULTS:-results/ablations}
mkdir -p "$out"
run() { name=$1; shift; python3 eval.py --output "$out/$name.json" "$@"; }

run paper "$@"
for set in prompt1 prompt2 prompt3; do run "$set" --prompt_set "$set" "$@"; done
for set in class1 class2 class3 class4; do run "$set" --bin_set "$set" "$@"; done
run lower_bound --method lower_bound "$@"
run median --method median "$@"
python3 table.py "$out"/paper.json "$out"/prompt?.json "$out"/class?.json "$out"/lower_bound.json "$out"/median.json \
    > "$out/table.md.part"
mv "$out/table.md.part" "$out/table.md"
cat "$out/table.md"
