"""``python -m tst_titan.tools.bench``: does TST beat its baseline at matched FLOPs? Measured on this machine.

Commands (each prints a table and writes JSON, and a plot where it has one):

* ``python -m tst_titan.tools.bench [--quick] [--corpus DIR]`` — tunes the baseline's learning rate
  on a small grid, trains the TST run (N steps) and the baseline (up to K·N steps) through the
  stock torchtitan entry point, and reports the speedup to TST's final next-token validation loss
  in steps and wall-clock, losses at equal steps/FLOPs, tokens read, phase-1 vs baseline step time
  and memory (interleaved in one process), data-loading share and token-store speed.
* ``python -m tst_titan.tools.bench regime`` — where does TST start to pay? Baseline/TST pairs over
  training tokens per parameter (≲1 … ≥150), each compared at equal FLOPs.
* ``python -m tst_titan.tools.bench loss`` — ``bag_cross_entropy`` against one cross-entropy and
  against s separate cross-entropies, time and peak memory, over s and vocab sizes.

Runs are subprocesses of ``python -m torchtitan.train`` (one process, gloo on CPU), so what is
measured is what a user runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

from tst_titan.experiments import bench


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in ("regime", "loss") else "compare"
    parser = argparse.ArgumentParser(
        prog=f"python -m tst_titan.tools.bench{'' if command == 'compare' else ' ' + command}",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    if command == "compare":
        parser.add_argument("--quick", action="store_true", help="the ≤10-minute configuration")
        parser.add_argument("--corpus", help="a folder of text (txt/md/rst/py/jsonl, recursive) instead of the embedded corpus")
        parser.add_argument("--steps", type=int, help="N, the TST run's steps")
        parser.add_argument("--k", type=float, help="the baseline runs up to k·N steps")
        parser.add_argument("--bag-size", type=int)
        parser.add_argument("--fraction", type=float, help="superposition_fraction r")
        parser.add_argument("--lr-grid", help="comma-separated learning rates for the baseline tuning")
        parser.add_argument("--flavor", help="tst_llama3 flavor (default: micro)")
        parser.add_argument("--small-corpus", action="store_true",
                            help="the stdlib-only embedded corpus (~4 M tokens) instead of stdlib + "
                                 "pinned packages (~22 M tokens at vocab 512, built once in under a minute)")
        args = parser.parse_args(argv)
        setup = bench.QUICK if args.quick else bench.DEFAULT
        if args.small_corpus:
            setup = replace(setup, dataset="embedded")
        if args.corpus:
            if not os.path.isdir(args.corpus):
                parser.error(f"--corpus {args.corpus!r} is not a folder")
            setup = replace(setup, dataset="folder", dataset_path=os.path.abspath(args.corpus))
        for key, attr in (("steps", "steps"), ("k", "k"), ("bag_size", "bag_size"),
                          ("fraction", "superposition_fraction"), ("flavor", "flavor")):
            if getattr(args, key) is not None:
                setup = replace(setup, **{attr: getattr(args, key)})
        if args.lr_grid:
            try:
                setup = replace(setup, lr_grid=tuple(float(x) for x in args.lr_grid.split(",")))
            except ValueError:
                parser.error(f"--lr-grid must be comma-separated numbers, got {args.lr_grid!r}")
        if setup.steps < 10 or setup.k < 1:
            parser.error("--steps must be >= 10 and --k >= 1")
        # Each corpus its own folder by default; bench() refuses a folder of another corpus's results.
        out = args.out or os.path.join("outputs", ("bench_quick" if args.quick else "bench") + (
            f"-{os.path.basename(os.path.normpath(args.corpus))}" if args.corpus
            else "-stdlib" if args.small_corpus else ""))
        result = bench.bench(setup, out, quiet=args.quiet)
        bench.print_table(result)
        for name in ("tst", "baseline"):
            run = os.path.join(out, name)
            print(f"  {name:<8} metrics {run}/metrics.jsonl   checkpoints {run}/checkpoint   log {run}/train.log")
        print(f"wrote {out}/bench.json and {out}/bench.png")
    elif command == "regime":
        parser.add_argument("--tokens-per-param", help="comma-separated targets, e.g. 0.5,2,8,32,100,200")
        parser.add_argument("--lr", type=float)
        args = parser.parse_args(argv)
        setup = bench.RegimeSetup()
        if args.tokens_per_param:
            setup = replace(setup, tokens_per_param=tuple(float(x) for x in args.tokens_per_param.split(",")))
        if args.lr:
            setup = replace(setup, lr=args.lr)
        out = args.out or os.path.join("outputs", "bench_regime")
        result = bench.regime(setup, out, quiet=args.quiet)
        bench.print_regime_table(result)
        print(f"wrote {out}/regime.json and {out}/regime.png")
    else:
        parser.add_argument("--positions", type=int, default=1024)
        parser.add_argument("--bag-sizes", default="1,4,6,8,16")
        parser.add_argument("--vocabs", default="2048,32768,131072")
        args = parser.parse_args(argv)
        bench.loss_bench(tuple(int(x) for x in args.bag_sizes.split(",")),
                         tuple(int(x) for x in args.vocabs.split(",")),
                         args.positions, out_dir=args.out or os.path.join("outputs", "bench_loss"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
