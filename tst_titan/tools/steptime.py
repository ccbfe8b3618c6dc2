"""``python -m tst_titan.tools.steptime CONFIG [--steps N] [--warmup W] [--out FILE] [overrides]``:
phase-1, phase-2 and baseline step times and memory through torchtitan's own train step,
interleaved in one process (see :mod:`tst_titan.experiments.steptime`). CONFIG is a TST config
(a TOML file or a packaged config name such as ``debug_tst.toml``); other arguments are torchtitan
overrides. Prints the table, writes JSON with ``--out``."""

from __future__ import annotations

import argparse
import os

from tst_titan.experiments.steptime import VARIANTS, measure, write
from tst_titan.train_spec import config_path


def print_table(result: dict) -> None:
    print(f"{'variant':<20} {'median s':>10} {'IQR s':>10} {'peak MiB':>10}")
    for name in VARIANTS:
        s = result["step_s"][name]
        print(f"{name:<20} {s['median']:>10.4f} {s['iqr']:>10.4f} {result['peak_memory_bytes'][name] / 2**20:>10.1f}")
    print(f"TST step (phase 1 / next-token, same kernel): {result['tst_step_ratio']:.3f}x time, "
          f"{result['tst_memory_ratio']:.3f}x memory")
    print(f"phase 1 / baseline as run:                    {result['phase1_vs_baseline']:.3f}x time, "
          f"{result['phase1_vs_baseline_memory']:.3f}x memory")
    print(f"the chunked kernel's own gain (baseline / it): {result['kernel_gain']:.3f}x time, "
          f"{result['kernel_memory_gain']:.3f}x memory")
    print(f"control, phase 2 / baseline (must be ~1):     {result['control_phase2_vs_baseline']:.3f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tst_titan.tools.steptime", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a TST config: a TOML file or a packaged config name")
    parser.add_argument("--steps", type=int, default=100, help="timed steps of each variant (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps of each variant first (default 5)")
    parser.add_argument("--out", help="write the JSON report to this file")
    args, overrides = parser.parse_known_args(argv)
    config = args.config if os.path.exists(args.config) else config_path(args.config)
    result = measure(config, overrides, steps=args.steps, warmup=args.warmup)
    print_table(result)
    if args.out:
        write(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
