#!/usr/bin/env bash
# First the GPU tests (pytest -m gpu: bf16 bag loss vs float64, phase-1 vs baseline peak memory at
# vocab 128k, no host-device sync in a step, compile with bags, FSDP2 on one GPU; ~1 minute), their
# figures to gpu_tests.json and their report to gpu_tests.xml in the output folder.
# Then the one-GPU performance check (< 8 minutes on one H200): the 270M TST config and its baseline twin
# with torch.compile and real float8 (plus a bf16 reference), and the debug MoE with grouped GEMMs
# (plus an exploratory float8 grouped-GEMM run), a few steps each on GPU 0. Writes step times per
# phase, tokens/s, peak memory and MFU to outputs/gpu_check/gpu_check.json (--out DIR to change);
# each run's log and metrics.jsonl are kept next to it. See tst_titan/experiments/gpucheck.py.
# Last the frontier study's GPU preset (`python -m tst_titan.tools.bench --device cuda`: TST against
# fully trained baselines, 3 seeds, a 22.5 M-parameter model) into <out>/frontier_cuda (frontier.json,
# frontier.png). Never run yet: 33,075 optimizer steps in 41 processes, about 8 minutes of steps at
# an assumed 15 ms a step, plus each process's start-up and the stable runs' checkpoints: expect
# 15-20 minutes (`python -m tst_titan.tools.bench --device cuda --plan` writes the plan). It resumes
# where it stopped: finished runs are reused.
#
# Time: the tests take a minute or two, the performance check under 8 minutes, the frontier
# 15-20 minutes; GPU_CHECK_STAGES="tests perf" leaves the frontier out.
#
# On a machine without internet access and without torchtitan (a bare GPU image): first run
# `bash scripts/gpu_bundle.sh` where PyPI is reachable and send .gpu_bundle/ along; this script
# installs it (see below).
#
#   bash scripts/gpu_check.sh               # on a GPU machine with the package installed
#   bash scripts/gpu_check.sh --cpu-smoke   # the performance check's mechanics on CPU in ~1 minute (tests run it)
#   GPU_CHECK_STAGES="tests frontier" bash scripts/gpu_check.sh   # some stages (default: tests perf frontier)
#
# Python: $PYTHON, else .venv/bin/python, else python3. Needs torch with CUDA, torchtitan 0.2.2,
# torchao (pip install -e ".[float8]"); float8 needs an SM89+ GPU (H100/H200/B200).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
stages="${GPU_CHECK_STAGES:-tests perf frontier}"
for stage in $stages; do
    case "$stage" in
        tests|perf|frontier) ;;
        *) echo "gpu_check: unknown stage '$stage' in GPU_CHECK_STAGES; allowed: tests, perf, frontier" >&2; exit 2 ;;
    esac
done
has_stage() { [[ " $stages " == *" $1 "* ]]; }
# The bundle of scripts/gpu_bundle.sh (GPU_BUNDLE, default .gpu_bundle), for a GPU machine that
# cannot download and lacks torchtitan's stack: its wheels installed into a folder of their own
# (the machine's packages stay as they are), its token store unpacked where the benchmark looks for
# it. Whatever stack is used must import, with torchtitan 0.2.2, before any stage starts.
bundle="${GPU_BUNDLE:-.gpu_bundle}"
if ! "$PYTHON" -c "import torchtitan" 2>/dev/null; then
    if [[ ! -d "$bundle/wheels" ]]; then
        echo "gpu_check: $PYTHON cannot import torchtitan and there is no $bundle/wheels: install the" \
             "package (pip install -e '.[float8]'), or run scripts/gpu_bundle.sh where PyPI is reachable" \
             "and bring $bundle" >&2
        exit 2
    fi
    here=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    built=$(cat "$bundle/python_version" 2>/dev/null || echo unknown)
    if [[ "$here" != "$built" ]]; then
        echo "gpu_check: $bundle was built for Python $built, this is Python $here: run" \
             "GPU_PYTHON_VERSION=$here bash scripts/gpu_bundle.sh" >&2
        exit 2
    fi
    site="${TST_GPU_SITE:-/tmp/tst_gpu_site}"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$bundle"/wheels/*.whl
    export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    echo "gpu_check: installed $bundle/wheels into $site"
fi
# The bundle's wheels come without their dependencies: what they need must be on this machine.
if ! missing=$("$PYTHON" -c "
import importlib
for name in ('torchtitan', 'torchdata', 'datasets', 'tyro', 'tokenizers', 'einops', 'tst_titan'):
    try:
        importlib.import_module(name)
    except ImportError as e:
        print(f'{name} ({e})')
        raise SystemExit(1)
import torchtitan
if torchtitan.__version__ != '0.2.2':
    print(f'torchtitan 0.2.2 (this Python has {torchtitan.__version__})')
    raise SystemExit(1)
" 2>/dev/null); then
    echo "gpu_check: $PYTHON cannot run tst_titan: missing or wrong: $missing" >&2
    exit 2
fi
if [[ -f "$bundle/embedded_pinned_v2048.tar.xz" && ! -d data/embedded_pinned_v2048 ]]; then
    mkdir -p data
    tar -C data -xJf "$bundle/embedded_pinned_v2048.tar.xz"
    echo "gpu_check: unpacked the GPU preset's token store into data/embedded_pinned_v2048"
fi
smoke=0
if [[ " $* " == *" --cpu-smoke "* ]]; then smoke=1; fi
if (( ! smoke )); then
    export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
fi
out=outputs/gpu_check
args=("$@")
for ((i = 0; i < ${#args[@]} - 1; i++)); do
    if [[ "${args[i]}" == "--out" ]]; then out="${args[i+1]}"; fi
done
tests_status=0
if (( ! smoke )) && has_stage tests; then
    mkdir -p "$out"
    rm -f "$out/gpu_tests.json"
    TST_GPU_RECORD="$out/gpu_tests.json" "$PYTHON" -m pytest -q -m gpu tests/integration/test_gpu.py \
        -p no:cacheprovider --junitxml="$out/gpu_tests.xml" || tests_status=$?
fi
check_status=0
if has_stage perf; then
    "$PYTHON" -m tst_titan.tools.gpucheck "$@" || check_status=$?
fi
frontier_status=0
if (( ! smoke )) && has_stage frontier; then  # needs CUDA: the CPU study is `python -m tst_titan.tools.bench`
    "$PYTHON" -m tst_titan.tools.bench --device cuda --out "$out/frontier_cuda" || frontier_status=$?
fi
if (( tests_status != 0 )); then
    echo "gpu_check: the GPU tests failed (status $tests_status); see $out/gpu_tests.xml" >&2
    exit "$tests_status"
fi
if (( check_status != 0 )); then exit "$check_status"; fi
if (( frontier_status != 0 )); then
    echo "gpu_check: the frontier study failed (status $frontier_status)" >&2
fi
exit "$frontier_status"
