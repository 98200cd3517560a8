#!/bin/sh
# DepthCLIP on NYU Depth V2, the paper's Table 1 row; runs from any folder. Extra arguments go to eval.py, e.g.
#   sh test.sh --output results.json --batch_size 16
# The authors' flags (--evaluate --gpu_num --encoder --other_method) are accepted and change nothing.
exec python3 "$(dirname "$0")/eval.py" --evaluate --dataset NYU --other_method MonoCLIP "$@"
