#!/bin/sh
# The paper's prompt and bin ablations (configs/ablations.json, one image pass for all eight) and its baseline
# rows on NYU Depth V2, then one markdown table beside the paper's numbers. Runs from any folder.
# Extra arguments go to every eval.py run, e.g.  sh ablations.sh --data_path /data/NYU_Depth_V2 --cache features/
# Results: $RESULTS (default results/ablations)/{sweep,lower_bound,constant}.json and table.md.
set -e
here=$(dirname "$0")
out=${RESULTS:-results/ablations}
mkdir -p "$out"
python3 "$here/eval.py" --sweep "$here/configs/ablations.json" --output "$out/sweep.json" "$@"
python3 "$here/eval.py" --method lower_bound --output "$out/lower_bound.json" "$@"
python3 "$here/eval.py" --method constant --output "$out/constant.json" "$@"
python3 "$here/table.py" "$out/sweep.json" "$out/lower_bound.json" "$out/constant.json" > "$out/table.md.part"
mv "$out/table.md.part" "$out/table.md"
cat "$out/table.md"
