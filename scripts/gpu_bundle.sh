#!/usr/bin/env bash
# Packs, on a machine that reaches PyPI, what `scripts/gpu_check.sh` needs on a GPU machine that
# reaches nothing and already holds torch (CUDA), numpy, pandas, pyarrow, tokenizers, tensorboard,
# matplotlib and the like, but not torchtitan's stack:
#
#   .gpu_bundle/wheels/   the missing packages as wheels for the GPU machine's Python (3.12 by
#                         default, GPU_PYTHON_VERSION to change), at the versions installed here
#                         (the pins of pyproject.toml and what the suite runs with), without their
#                         dependencies: torchtitan, torchdata, tyro (docstring-parser, typeguard),
#                         datasets (dill, multiprocess), tomli, torchao (float8)
#   .gpu_bundle/embedded_pinned_v2048.tar.xz
#                         the benchmark's token store for the GPU preset's model (`small`, vocab
#                         2048), built here if missing: the GPU machine need not hold the pinned
#                         sources it is built from, and the study trains on the corpus hashed here
#
# About 13 MB. gpu_check.sh installs and unpacks the bundle when it finds it; send the folder
# along with the repository (it is git-ignored). `--list` prints the wheels' NAME==VERSION only.
#
#   bash scripts/gpu_bundle.sh           # then, on the GPU machine: bash scripts/gpu_check.sh
#   bash scripts/gpu_bundle.sh --list
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# The versions this environment runs (installed by scripts/setup.sh from pyproject.toml's pins).
# (Captured by an assignment, which set -e checks, so a package missing here stops the script.)
listed=$("$PYTHON" - <<'EOF'
import importlib.metadata as md
for name in ("torchtitan", "torchdata", "tyro", "docstring-parser", "typeguard", "datasets", "dill",
             "multiprocess", "tomli", "torchao"):
    print(f"{name}=={md.version(name)}")
EOF
)
mapfile -t wheels <<<"$listed"
if [[ " $* " == *" --list "* ]]; then
    printf '%s\n' "${wheels[@]}"
    exit 0
fi
bundle=.gpu_bundle
rm -rf "$bundle/wheels"
mkdir -p "$bundle/wheels"
py="${GPU_PYTHON_VERSION:-3.12}"
echo "$py" > "$bundle/python_version"  # gpu_check.sh refuses the wheels on another Python
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$bundle/wheels" "${wheels[@]}"
store=data/embedded_pinned_v2048
"$PYTHON" -c "
from tst_titan.datastore.build import ensure_store
m = ensure_store('$store', 2048, include_site_packages=True)
print('token store', '$store', 'corpus_sha256', m['corpus_sha256'])"
tar -C data -cJf "$bundle/embedded_pinned_v2048.tar.xz" embedded_pinned_v2048
du -sh "$bundle"
echo "gpu_bundle: send $bundle with the repository; scripts/gpu_check.sh installs it there"
