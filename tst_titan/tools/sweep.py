"""``python -m tst_titan.tools.sweep``: TST over a grid of superposition fraction r x bag size s,
plus ablations (modes, loss weightings, keeping or resetting the optimizer at the switch), each
cell compared with one baseline at equal FLOPs.

Every cell is a full TST run of N steps (phase 1, then next-token recovery) trained through the
stock torchtitan entry point; the baseline is one N-step next-token run with the same learning
rate, schedule, seed and data. A cell's score is its final next-token validation loss minus the
baseline's (same held-out tokens; same positions per step, hence equal FLOPs): negative means TST
wins. The paper's Fig. 4 is this heat map.

The grid:

* ``--fractions`` x ``--bag-sizes`` with the *first* listed mode, weighting and optimizer option:
  the heat map;
* every further value of ``--modes``, ``--weightings`` and ``--optimizer-at-switch`` is an ablation
  that changes that one knob, run at ``--ablation-fraction`` (default: the grid's r closest to the
  paper's 0.3) for each of ``--ablation-bag-sizes`` (default: the grid's s), next to its reference
  cell (the heat-map setting at the same r and s, added if the grid lacks it).

Resumable: a cell already finished in the output folder with identical settings is read back, not
retrained; so an interrupted sweep continues where it stopped and a grown grid trains only its new
cells. Writes ``<out>/sweep.json`` (setup, baseline, every cell with its validation curve, the
best cell) and ``<out>/sweep.png`` (the heat map, best cell marked).
``notebooks/03_ablations.ipynb`` reads the JSON.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

from tst_titan.experiments import sweep
from tst_titan.job_config import ConfigError


def _list(parser, option: str, text: str, kind):
    try:
        values = tuple(kind(x.strip()) for x in text.split(",") if x.strip())
    except ValueError:
        parser.error(f"{option} must be a comma-separated list of {kind.__name__}s, got {text!r}")
    if not values:
        parser.error(f"{option}: empty grid, give at least one value")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tst_titan.tools.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the quick grid (see README for its time)")
    parser.add_argument("--tiny", action="store_true",
                        help="a few-second grid of the tiny model (the tests' and the notebook demo's): it "
                             "checks the machinery, its numbers mean nothing")
    parser.add_argument("--out", help="output folder (default outputs/sweep, outputs/sweep_quick)")
    parser.add_argument("--fractions", help="comma-separated superposition fractions r, e.g. 0.1,0.3,0.5")
    parser.add_argument("--bag-sizes", help="comma-separated bag sizes s, e.g. 2,4,8,16")
    parser.add_argument("--modes", help="tst.mode values; the first is the heat map's: full,input_only,output_only")
    parser.add_argument("--weightings", help="tst.loss_weighting values; the first is the heat map's")
    parser.add_argument("--optimizer-at-switch", help="tst.optimizer_at_switch values (keep,reset_moments,reset_rewarm; reset_rewarm re-warms over the run's warmup length); the first is the heat map's")
    parser.add_argument("--ablation-fraction", type=float, help="r of the ablation cells (default: the grid's r closest to 0.3)")
    parser.add_argument("--ablation-bag-sizes", help="s values of the ablation cells (default: the grid's)")
    parser.add_argument("--steps", type=int, help="N, the steps of every run")
    parser.add_argument("--lr", type=float, help="learning rate of every run")
    parser.add_argument("--flavor", help="tst_llama3 flavor (default: micro)")
    parser.add_argument("--jobs", type=int, help="runs at once, sharing the cores")
    parser.add_argument("--small-corpus", action="store_true",
                        help="the stdlib-only embedded corpus instead of stdlib + installed packages")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if args.quick and args.tiny:
        parser.error("--quick and --tiny are two different grids: give one")
    setup = sweep.QUICK if args.quick else sweep.TINY if args.tiny else sweep.DEFAULT
    lists = (("fractions", "--fractions", float), ("bag_sizes", "--bag-sizes", int), ("modes", "--modes", str),
             ("weightings", "--weightings", str), ("optimizer_at_switch", "--optimizer-at-switch", str),
             ("ablation_bag_sizes", "--ablation-bag-sizes", int))
    for attr, option, kind in lists:
        text = getattr(args, attr)
        if text is not None:
            setup = replace(setup, **{attr: _list(parser, option, text, kind)})
    for attr in ("ablation_fraction", "steps", "lr", "flavor", "jobs"):
        if getattr(args, attr) is not None:
            setup = replace(setup, **{attr: getattr(args, attr)})
    if args.small_corpus:
        setup = replace(setup, dataset="embedded")
    try:
        sweep.check_setup(setup)
    except ConfigError as e:
        parser.error(str(e))
    out = args.out or os.path.join("outputs", "sweep_quick" if args.quick else "sweep_tiny" if args.tiny else "sweep")
    result = sweep.sweep(setup, out, quiet=args.quiet)
    sweep.print_summary(result)
    print(f"wrote {out}/sweep.json and {out}/sweep.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
