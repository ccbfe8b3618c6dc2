#!/usr/bin/env bash
# Creates ./.venv and installs tst_titan with CPU torch (no CUDA download), triton (torchtitan
# imports it), float8 (torchao), the large corpus's pinned sources (corpus), lm-eval (eval) and the
# development tools. Safe to re-run.
# GPU users: see README "Installing for a GPU" instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[cpu,float8,corpus,eval,dev]"
.venv/bin/python -c "import torch, torchtitan, tst_titan; print('tst_titan ready: torch', torch.__version__, '| torchtitan', torchtitan.__version__)"
