"""One-GPU performance check of the paper configs: ``bash scripts/gpu_check.sh [--cpu-smoke]``.

Runs the 270M TST config and its baseline twin (torch.compile, float8, plus a bf16 baseline) and
the debug MoE with grouped GEMMs, a few steps each with a time limit, and writes step times per
phase, tokens/s, peak memory and MFU to ``<out>/gpu_check.json`` (see
:mod:`tst_titan.experiments.gpucheck`). ``--cpu-smoke`` runs the same mechanics on CPU in about a
minute. Exit status 1 when a run other than the exploratory float8 grouped-GEMM one failed.
"""

from __future__ import annotations

import argparse
import os

from tst_titan.experiments import gpucheck


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny flavors, few steps, no float8/compile: the mechanics on CPU")
    parser.add_argument("--out", default=os.path.abspath(os.path.join("outputs", "gpu_check")), metavar="DIR")
    parser.add_argument("--only", nargs="*", default=None, metavar="RUN", help="run only these")
    args = parser.parse_args(argv)
    report, path = gpucheck.run_check(args.out, cpu_smoke=args.cpu_smoke, only=args.only)
    print(path)
    return 1 if gpucheck.fatal_failures(report) else 0


if __name__ == "__main__":
    raise SystemExit(main())
