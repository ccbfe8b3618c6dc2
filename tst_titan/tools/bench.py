"""``python -m tst_titan.tools.bench``: does TST beat its baseline at matched FLOPs? Measured on this machine.

Commands (each prints a table and writes JSON, and a plot where it has one):

* ``python -m tst_titan.tools.bench [frontier] [--quick] [--device cuda] [--corpus DIR]`` — the study
  (:mod:`tst_titan.experiments.frontier`): per model size, TST arms (s = 6 and 4, r = 0.3) against
  a frontier of fully trained warmup-stable-decay baselines of 0.5x to 2.83x the TST run's length
  (4x with ``--quick``), over seeds, each arm's learning rate tuned on its own grid (per flavor in
  the default preset). Reports first the iso-loss speedup
  (frontier FLOPs to reach TST's final val loss / TST's FLOPs, bootstrap and t 95% intervals),
  then the equal-FLOPs loss difference, wall-clock speedup, the A/A control and the old (biased)
  first-crossing figure. Writes ``frontier.json`` and ``frontier.png``. Default: micro and mini
  (≤ 2 h on 2 cores); ``--quick``: micro only (≤ 20 min); ``--device cuda``: a 22.5 M-parameter
  model on one GPU. Interrupted studies resume (finished runs are reused). ``--plan`` trains nothing
  and writes ``plan.json`` (steps, processes, how often the runs read the corpus), GPU or not.
* ``python -m tst_titan.tools.bench reanalyse PATH/frontier.json [MORE.json ...] [--out DIR]`` — a
  study's figures computed again from the runs its JSON records (no training), by this version's
  statistics; several studies of the same protocol on disjoint seeds are pooled into one (checked
  comparable: corpus, versions, plans, learning rates) into ``--out``. One study is written over
  the file read (its figure beside it, the same name in ``.png``) or into ``--out``, as
  ``frontier.json`` and ``frontier.png`` (refused if that folder holds another study's).
* ``python -m tst_titan.tools.bench coverage [--n-seeds 3,5,10,40] [--reps 2000]`` — how often each
  of the study's 95% intervals (expanded and plain percentile bootstrap, Student t) contains the
  truth when the per-seed values are normal, by seed count: how far to trust a study's intervals.
  Writes ``interval_coverage.json``.
* ``python -m tst_titan.tools.bench pair [--quick]`` — one TST run and one long baseline, for a quick
  look at the curves: learning rate tuned on the baseline, TST for N steps, the baseline for K·N,
  losses at equal steps/FLOPs, tokens read, step time and memory, data loading. No speedup: the long
  baseline has not decayed its learning rate at step N (its first crossing of TST's loss is
  reported as the biased ratio it is).
* ``python -m tst_titan.tools.bench regime`` — where does TST start to pay? Baseline/TST pairs over
  training tokens per parameter (≲1 … ≥150), each compared at equal FLOPs.
* ``python -m tst_titan.tools.bench loss`` — ``bag_cross_entropy`` against one cross-entropy and
  against s separate cross-entropies, time and peak memory, over s and vocab sizes.

Runs are subprocesses of ``python -m torchtitan.train`` (one process, gloo on CPU), so what is
measured is what a user runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace

from tst_titan.analysis.frontier import interval_coverage as coverage
from tst_titan.datastore.store import CorpusMismatchError
from tst_titan.experiments import bench, frontier, pairs

COVERAGE_FILE = "interval_coverage.json"
COMMANDS = ("frontier", "reanalyse", "coverage", "pair", "regime", "loss")  # no command: frontier


def _numbers(parser, option: str, text: str, kind=float) -> tuple:
    try:
        return tuple(kind(x) for x in text.split(","))
    except ValueError:
        parser.error(f"{option} must be comma-separated {'integers' if kind is int else 'numbers'}, got {text!r}")


def _corpus_options(parser) -> None:
    parser.add_argument("--corpus", help="a folder of text (txt/md/rst/py/jsonl, recursive) instead of the embedded corpus")
    parser.add_argument("--small-corpus", action="store_true",
                        help="the stdlib-only embedded corpus (~4 M tokens) instead of stdlib + "
                             "pinned packages (21.6 M training tokens at vocab 512, built once in under a minute)")


def _corpus(parser, args, setup):
    if args.small_corpus:
        setup = replace(setup, dataset="embedded")
    if args.corpus:
        if not os.path.isdir(args.corpus):
            parser.error(f"--corpus {args.corpus!r} is not a folder")
        setup = replace(setup, dataset="folder", dataset_path=os.path.abspath(args.corpus))
    return setup


def _out(args, name: str) -> str:
    """Each corpus its own folder by default; the studies refuse a folder of another corpus's results."""
    return args.out or os.path.join("outputs", name + (
        f"-{os.path.basename(os.path.normpath(args.corpus))}" if args.corpus
        else "-stdlib" if args.small_corpus else ""))


def frontier_main(parser, argv) -> int:
    parser.add_argument("--quick", action="store_true", help="one flavor (micro), 3 seeds: ≤ 20 minutes on 2 cores")
    parser.add_argument("--device", choices=frontier.DEVICES, default="cpu",
                        help="cuda: the GPU preset (a 22.5 M-parameter model on one GPU; never run yet, see scripts/gpu_check.sh)")
    _corpus_options(parser)
    parser.add_argument("--plan", action="store_true",
                        help="train nothing: write <out>/plan.json (per flavor N, lengths, optimizer steps, "
                             "processes, how often the runs read the corpus); the device need not be here")
    parser.add_argument("--flavors", help="comma-separated tst_llama3 flavors (default: the preset's)")
    parser.add_argument("--arms", help=f"comma-separated TST arms, of {', '.join(frontier.ARMS)}")
    parser.add_argument("--seeds", help="comma-separated seeds (init and data order), at least 2")
    parser.add_argument("--factors", help="comma-separated frontier lengths in units of N, sorted, at least 4")
    parser.add_argument("--tokens-per-param", type=float, help="training positions per parameter of the TST runs")
    parser.add_argument("--baseline-lr-grid", help="comma-separated learning rates for the baseline")
    parser.add_argument("--tst-lr-grid", help="comma-separated learning rates, each TST arm tuned on them")
    parser.add_argument("--steptime-steps", type=int, help="timed steps of each variant per step-time measurement")
    args = parser.parse_args(argv)
    if args.quick and args.device == "cuda":
        parser.error("--quick and --device cuda are two presets: pick one")
    setup = frontier.CUDA if args.device == "cuda" else frontier.QUICK if args.quick else frontier.DEFAULT
    setup = _corpus(parser, args, setup)
    for option, attr, kind in (("flavors", "flavors", str), ("arms", "arms", str), ("seeds", "seeds", int),
                               ("factors", "factors", float), ("baseline_lr_grid", "baseline_lr_grid", float),
                               ("tst_lr_grid", "tst_lr_grid", float)):
        text = getattr(args, option)
        if text is not None:
            values = tuple(x.strip() for x in text.split(",")) if kind is str else \
                _numbers(parser, "--" + option.replace("_", "-"), text, kind)
            setup = replace(setup, **{attr: values})
            if option == "flavors":  # the preset's per-flavor grids, for the flavors still studied
                setup = replace(setup, flavor_lr_grids={f: g for f, g in setup.flavor_lr_grids.items() if f in values})
            elif option.endswith("lr_grid"):  # a grid given here is every flavor's
                role = option.removesuffix("_lr_grid")
                kept = {f: {r: g for r, g in grids.items() if r != role} for f, grids in setup.flavor_lr_grids.items()}
                setup = replace(setup, flavor_lr_grids={f: grids for f, grids in kept.items() if grids})
    for option in ("tokens_per_param", "steptime_steps"):
        if getattr(args, option) is not None:
            setup = replace(setup, **{option: getattr(args, option)})
    try:
        frontier.check_setup(setup, device_here=not args.plan)
    except ValueError as e:
        parser.error(str(e))
    preset = "cuda" if args.device == "cuda" else "quick" if args.quick else "default"
    out = _out(args, pairs.OUTPUT_FOLDERS["frontier", preset])
    if args.plan:
        try:
            plan = frontier.study_plan(setup, out)
        except CorpusMismatchError as e:
            parser.exit(2, f"{parser.prog}: error: {e}\n")
        for flavor, p in plan["flavors"].items():
            print(f"{flavor}: {p['parameters']:,} parameters, N = {p['steps']} steps, lengths {list(p['lengths'])}, "
                  f"{p['optimizer_steps']:,} optimizer steps in {p['processes']} processes; reads its train split "
                  + ", ".join(f"{k} {v:.2f}x" for k, v in p["train_epochs"].items()))
        print(f"wrote {out}/{frontier.PLAN_FILE}: {plan['optimizer_steps']:,} optimizer steps in "
              f"{plan['processes']} processes (trained nothing)")
        return 0
    try:
        result = frontier.frontier(setup, out, quiet=args.quiet)
    except CorpusMismatchError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    frontier.print_table(result)
    print(f"wrote {out}/{frontier.FRONTIER_FILE} and {out}/frontier.png (runs under {out}/<flavor>/)")
    return 0


def reanalyse_main(parser, argv) -> int:
    parser.add_argument("paths", nargs="+", metavar="path",
                        help="a study's JSON (e.g. frontier.json) or its folder; several: studies of disjoint "
                             "seeds pooled into one (needs --out)")
    args = parser.parse_args(argv)
    paths = [os.path.join(p, frontier.FRONTIER_FILE) if os.path.isdir(p) else p for p in args.paths]
    if len(paths) > 1 and not args.out:
        parser.error("pooling several studies writes a new one: give --out")
    studies = []
    for path in paths:
        try:
            with open(path) as f:
                studies.append(json.load(f))
        except (OSError, json.JSONDecodeError) as e:
            parser.error(f"cannot read a study from {path!r}: {e}")
    try:
        result = frontier.reanalyse(studies[0], source=paths[0]) if len(paths) == 1 else \
            frontier.merge_studies(studies, paths)
    except ValueError as e:  # CorpusMismatchError included
        parser.error(f"{' + '.join(paths)}: {e}")
    # in place: the file read, its figure beside it; --out: <out>/frontier.json, never over another study's
    target = os.path.join(args.out, frontier.FRONTIER_FILE) if args.out else paths[0]
    if os.path.exists(target) and not any(os.path.samefile(target, p) for p in paths):
        parser.error(f"{target} holds another study's figures: writing there would replace them; "
                     "give an --out folder without a frontier.json")
    png = frontier.write_result(result, target)
    frontier.print_table(result)
    print(f"wrote {target}{f' and {png}' if png else ''} (figures recomputed from {' + '.join(paths)})")
    return 0


def coverage_main(parser, argv) -> int:
    parser.add_argument("--n-seeds", default="3,5,10,40", help="comma-separated seed counts, each >= 2")
    parser.add_argument("--reps", type=int, default=2000, help="simulated studies per seed count (>= 100)")
    args = parser.parse_args(argv)
    try:
        result = coverage(_numbers(parser, "--n-seeds", args.n_seeds, int), reps=args.reps)
    except ValueError as e:
        parser.error(str(e))
    out = args.out or "outputs"
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, COVERAGE_FILE), "w") as f:
        json.dump(result, f, indent=1)
    print(f"\n  coverage of the 95% intervals of a mean over seeds (normal per-seed values, {result['reps']} "
          "simulated studies each)")
    print(f"  {'seeds':>5}  {'bootstrap, expanded (ci95)':>27}  {'bootstrap, plain':>16}  {'Student t':>9}")
    for row in result["rows"]:
        c = row["coverage"]
        print(f"  {row['n_seeds']:>5}  {c['ci95']:>27.3f}  {c['ci95_percentile']:>16.3f}  {c['ci95_t']:>9.3f}")
    print(f"  (binomial sd of each figure: {result['rows'][0]['binomial_sd']:.3f})\nwrote {out}/{COVERAGE_FILE}")
    return 0


def pair_main(parser, argv) -> int:
    parser.add_argument("--quick", action="store_true", help="the ≤10-minute configuration")
    _corpus_options(parser)
    parser.add_argument("--steps", type=int, help="N, the TST run's steps")
    parser.add_argument("--k", type=float, help="the baseline runs up to k·N steps")
    parser.add_argument("--bag-size", type=int)
    parser.add_argument("--fraction", type=float, help="superposition_fraction r")
    parser.add_argument("--lr-grid", help="comma-separated learning rates for the baseline tuning")
    parser.add_argument("--flavor", help="tst_llama3 flavor (default: micro)")
    args = parser.parse_args(argv)
    setup = _corpus(parser, args, bench.QUICK if args.quick else bench.DEFAULT)
    for key, attr in (("steps", "steps"), ("k", "k"), ("bag_size", "bag_size"),
                      ("fraction", "superposition_fraction"), ("flavor", "flavor")):
        if getattr(args, key) is not None:
            setup = replace(setup, **{attr: getattr(args, key)})
    if args.lr_grid:
        setup = replace(setup, lr_grid=_numbers(parser, "--lr-grid", args.lr_grid))
    if setup.steps < 10 or setup.k < 1:
        parser.error("--steps must be >= 10 and --k >= 1")
    out = _out(args, pairs.OUTPUT_FOLDERS["pair", "quick" if args.quick else "default"])
    result = bench.bench(setup, out, quiet=args.quiet)
    bench.print_table(result)
    for name in ("tst", "baseline"):
        run = os.path.join(out, name)
        print(f"  {name:<8} metrics {run}/metrics.jsonl   checkpoints {run}/checkpoint   log {run}/train.log")
    print(f"wrote {out}/bench.json and {out}/bench.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "frontier"
    parser = argparse.ArgumentParser(
        prog=f"python -m tst_titan.tools.bench{'' if command == 'frontier' else ' ' + command}",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    if command == "frontier":
        return frontier_main(parser, argv)
    if command == "coverage":
        return coverage_main(parser, argv)
    if command == "reanalyse":
        return reanalyse_main(parser, argv)
    if command == "pair":
        return pair_main(parser, argv)
    if command == "regime":
        parser.add_argument("--tokens-per-param", help="comma-separated targets, e.g. 0.5,2,8,32,100,200")
        parser.add_argument("--lr", type=float)
        args = parser.parse_args(argv)
        setup = bench.RegimeSetup()
        if args.tokens_per_param:
            setup = replace(setup, tokens_per_param=_numbers(parser, "--tokens-per-param", args.tokens_per_param))
        if args.lr:
            setup = replace(setup, lr=args.lr)
        out = args.out or os.path.join("outputs", "bench_regime")
        result = bench.regime(setup, out, quiet=args.quiet)
        bench.print_regime_table(result)
        print(f"wrote {out}/regime.json and {out}/regime.png")
        return 0
    parser.add_argument("--positions", type=int, default=1024)
    parser.add_argument("--bag-sizes", default="1,4,6,8,16")
    parser.add_argument("--vocabs", default="2048,32768,131072")
    args = parser.parse_args(argv)
    bench.loss_bench(_numbers(parser, "--bag-sizes", args.bag_sizes, int),
                     _numbers(parser, "--vocabs", args.vocabs, int),
                     args.positions, out_dir=args.out or os.path.join("outputs", "bench_loss"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
