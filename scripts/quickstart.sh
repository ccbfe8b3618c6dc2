#!/usr/bin/env bash
# From nothing to a result: sets everything up, builds the embedded corpus and tokenizer, then
# trains the debug TST config and its baseline twin on CPU with the stock torchtitan entry point.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
for name in debug_tst debug_baseline; do
  echo "=== training train_configs/${name}.toml"
  .venv/bin/torchrun --nproc_per_node=1 --standalone -m torchtitan.train \
    --job.config_file "train_configs/${name}.toml" "$@"
done
.venv/bin/python -m tst_titan.report outputs/debug_tst outputs/debug_baseline
