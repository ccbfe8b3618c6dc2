#!/usr/bin/env bash
# From nothing to a result: sets everything up, builds the embedded corpus and its tokenizer, then
# runs the quick benchmark: the tiny TST config and its baseline twin trained on CPU through the
# stock torchtitan entry point (learning rate tuned on the baseline), compared at matched FLOPs.
# Prints the comparison table and where the metrics and checkpoints of both runs are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m tst_titan.tools.bench --quick "$@"
