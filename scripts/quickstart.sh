#!/usr/bin/env bash
# From nothing to a result: sets everything up, builds the embedded corpus and its tokenizer, then
# runs the quick frontier study (python -m tst_titan.tools.bench --quick: 14.0 minutes of training on
# 2 idle CPU cores, results/frontier_quick.json, after a few minutes of installing): the micro llama3, TST s=6 and s=4 (r=0.3) against a frontier of fully trained
# warmup-stable-decay baselines of 0.5x-4x the TST run's length, 3 seeds, every arm's learning rate
# tuned on its own grid, all trained through the stock torchtitan entry point. Prints the iso-loss
# speedup against the decayed baselines first (bootstrap and t 95% intervals), then the equal-FLOPs
# loss difference, wall-clock speedup, the A/A control and the old (biased) first-crossing figure;
# writes outputs/frontier_quick/frontier.json and frontier.png. Interrupted? Run it again: finished
# runs are reused. (`... bench pair --quick` shows one TST/baseline pair's curves instead.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m tst_titan.tools.bench --quick "$@"
