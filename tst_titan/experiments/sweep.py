"""TST over a grid of superposition fraction r x bag size s, plus ablations (modes, loss
weightings, keeping or resetting the optimizer at the switch), each cell compared with one
baseline at equal FLOPs: the library of ``python -m tst_titan.tools.sweep``, and the reader of a
sweep's ``sweep.json`` for ``notebooks/03_ablations.ipynb``.

A cell's score is its final next-token validation loss minus the baseline's (same N steps of the
same positions, learning rate, schedule, seed, data and held-out tokens): negative means TST wins.
The heat map is ``fractions`` x ``bag_sizes`` with the first listed mode, weighting and optimizer
option; every further value of those is an ablation that changes that one knob, run at
``ablation_fraction`` for each of ``ablation_bag_sizes`` next to its reference cell (the heat-map
setting at the same r and s). Runs go through :func:`tst_titan.experiments.runner.run_training`
with ``reuse``, so an interrupted sweep continues where it stopped and a grown grid trains only
its new cells.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace

import matplotlib.colors as mcolors
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from tst_titan.analysis import compare
from tst_titan.analysis.runs import relpath
from tst_titan.datastore.store import corpus_record
from tst_titan.experiments.bench import BenchSetup, claim_output_folder, prepare_data, run_overrides
from tst_titan.experiments.runner import BASE_CONFIG, RUN_RECORD, Progress, finished_run, run_training, versions
from tst_titan.job_config import LOSS_WEIGHTINGS, MODES, OPTIMIZER_AT_SWITCH, ConfigError
from tst_titan.method.schedule import switch_step

#: Where the notebook looks for a sweep when it is not told (newest first), and its own demo.
SWEEP_DIRS = (os.path.join("outputs", "sweep"), os.path.join("outputs", "sweep_quick"))
DEMO_DIR = os.path.join("outputs", "sweep_demo")
#: A sweep folder (or its sweep.json) for the notebook, instead of the defaults.
SWEEP_ENV = "TST_SWEEP"
#: Settings of the baseline's [tst] keys (ignored with tst.enable = false, but part of its
#: reuse key: fixed, so a changed grid does not retrain the baseline).
_BASELINE_TST = {"bag_size": 4, "superposition_fraction": 0.3}


@dataclass
class SweepSetup:
    # -- every run (the benchmark's model and data, cheaper: no LR tuning, no long baseline) ---
    flavor: str = "micro"
    seq_len: int = 128
    batch: int = 16
    steps: int = 930  # N, for every cell and the baseline
    lr: float = 6e-3
    warmup_fraction: float = 0.05
    val_every: int = 93
    val_steps: int = 16
    dataset: str = "embedded_large"
    dataset_path: str | None = None
    model_name: str = "tst_llama3"
    # -- the grid ----------------------------------------------------------------------------
    fractions: tuple = (0.1, 0.2, 0.3, 0.4, 0.6, 0.8)
    bag_sizes: tuple = (2, 4, 6, 8, 12, 16)
    modes: tuple = ("full", "input_only", "output_only")
    weightings: tuple = ("uniform", "power", "mi", "mi_decay", "exponential")
    optimizer_at_switch: tuple = ("keep", "reset_moments", "reset_rewarm")
    ablation_fraction: float | None = None  # None: the grid fraction closest to 0.3
    ablation_bag_sizes: tuple | None = None  # None: every grid bag size
    jobs: int = 1  # runs at once (each with cpus / jobs threads)

    def ablation_r(self) -> float:
        if self.ablation_fraction is not None:
            return self.ablation_fraction
        return min(self.fractions, key=lambda r: (abs(r - 0.3), r))

    def ablation_s(self) -> tuple:
        return tuple(self.ablation_bag_sizes) if self.ablation_bag_sizes is not None else tuple(self.bag_sizes)


#: The default grid: a 6 x 6 heat map and every ablation at r = 0.3 and every s: 84 cells and the
#: baseline, 85 runs of the benchmark's default length (1860 steps).
DEFAULT = SweepSetup(steps=1860, val_every=186, jobs=2)
#: ``--quick``: a 4 x 4 heat map and every ablation at r = 0.3, s = 4 and 16: 32 cells and the
#: baseline, 33 runs of the quick benchmark's length (930 steps).
QUICK = SweepSetup(steps=930, val_every=93, fractions=(0.1, 0.3, 0.5, 0.7), bag_sizes=(2, 4, 8, 16),
                   ablation_fraction=0.3, ablation_bag_sizes=(4, 16), jobs=2)
#: A few-second sweep of the tiny model for tests, the notebook's CI run and its demo fallback.
TINY = SweepSetup(flavor="tiny", seq_len=32, batch=4, steps=8, lr=6e-3, val_every=4, val_steps=2,
                  dataset="embedded", fractions=(0.5,), bag_sizes=(4, 16), modes=("full", "input_only", "output_only"),
                  weightings=("uniform", "power"), optimizer_at_switch=("keep", "reset_moments"), ablation_fraction=0.5,
                  ablation_bag_sizes=(4, 16), jobs=2)


@dataclass(frozen=True)
class Cell:
    """One TST run of the sweep. ``kind``: "grid" (the heat map), "reference" (a heat-map-setting
    cell outside the heat map, for an ablation), or the knob an ablation changes: "mode",
    "weighting", "optimizer"."""

    superposition_fraction: float
    bag_size: int
    mode: str = "full"
    weighting: str = "uniform"
    optimizer_at_switch: str = "keep"
    kind: str = field(default="grid", compare=False)

    @property
    def name(self) -> str:
        return (f"r{self.superposition_fraction:g}_s{self.bag_size}_{self.mode}_{self.weighting}_"
                f"{self.optimizer_at_switch}")


def plan_cells(setup: SweepSetup) -> list[Cell]:
    """The cells of a sweep, in the order they are trained (heat map first); no duplicates."""
    m0, w0, o0 = setup.modes[0], setup.weightings[0], setup.optimizer_at_switch[0]
    cells = [Cell(r, s, m0, w0, o0, "grid") for r in setup.fractions for s in setup.bag_sizes]
    r = setup.ablation_r()
    for s in setup.ablation_s():
        cells.append(Cell(r, s, m0, w0, o0, "reference"))
        cells += [Cell(r, s, m, w0, o0, "mode") for m in setup.modes[1:]]
        cells += [Cell(r, s, m0, w, o0, "weighting") for w in setup.weightings[1:]]
        cells += [Cell(r, s, m0, w0, o, "optimizer") for o in setup.optimizer_at_switch[1:]]
    unique: dict[str, Cell] = {}
    for cell in cells:
        unique.setdefault(cell.name, cell)  # a reference cell inside the heat map stays "grid"
    return list(unique.values())


# -- checks -------------------------------------------------------------------------------------
def check_setup(setup: SweepSetup) -> None:
    """Stop a bad sweep before any training, naming the option (``--fractions`` = ``fractions``)."""
    if isinstance(setup.steps, bool) or not isinstance(setup.steps, int) or setup.steps < 2:
        raise ConfigError(f"--steps must be an integer >= 2, got {setup.steps!r}")
    if not isinstance(setup.jobs, int) or setup.jobs < 1:
        raise ConfigError(f"--jobs must be an integer >= 1, got {setup.jobs!r}")
    for option, values in (("--fractions", setup.fractions), ("--bag-sizes", setup.bag_sizes),
                           ("--modes", setup.modes), ("--weightings", setup.weightings),
                           ("--optimizer-at-switch", setup.optimizer_at_switch)):
        if not values:
            raise ConfigError(f"{option}: empty grid, give at least one value")
    if setup.ablation_bag_sizes is not None and not setup.ablation_bag_sizes:
        raise ConfigError("--ablation-bag-sizes: empty, give at least one bag size (or leave it out)")

    def check_fraction(option, r):
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 < r < 1.0:
            raise ConfigError(f"{option}: superposition fractions must be numbers in (0, 1), got {r!r}")
        if switch_step(r, setup.steps) < 1:
            raise ConfigError(f"{option}: r = {r:g} gives no bag step in --steps {setup.steps} "
                              f"(round(r x steps) = 0); use a larger r or more steps")

    for r in setup.fractions:
        check_fraction("--fractions", r)
    if setup.ablation_fraction is not None:
        check_fraction("--ablation-fraction", setup.ablation_fraction)
    for option, sizes in (("--bag-sizes", setup.bag_sizes), ("--ablation-bag-sizes", setup.ablation_bag_sizes or ())):
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, int) or s < 1:
                raise ConfigError(f"{option}: bag sizes must be integers >= 1, got {s!r}")
    for option, values, allowed, key in (("--modes", setup.modes, MODES, "tst.mode"),
                                         ("--weightings", setup.weightings, LOSS_WEIGHTINGS, "tst.loss_weighting"),
                                         ("--optimizer-at-switch", setup.optimizer_at_switch, OPTIMIZER_AT_SWITCH,
                                          "tst.optimizer_at_switch")):
        for v in values:
            if v not in allowed:
                raise ConfigError(f"{option}: unknown {key} {v!r}; allowed: {', '.join(map(repr, allowed))}")
    for cell in plan_cells(setup):
        if cell.mode != "full" and cell.bag_size < 2:
            option = ("--bag-sizes" if cell.kind == "grid" or setup.ablation_bag_sizes is None
                      else "--ablation-bag-sizes")
            raise ConfigError(
                f"{option}: a bag size of 1 with --modes {cell.mode}: tst.mode = {cell.mode!r} needs "
                "s >= 2 (with one token per bag it is the baseline itself); drop 1 from the bag sizes "
                "or that mode")


def _dedupe(values) -> tuple:
    return tuple(dict.fromkeys(values))


# -- running ------------------------------------------------------------------------------------
def bench_setup(setup: SweepSetup, bag_size: int, fraction: float) -> BenchSetup:
    return BenchSetup(flavor=setup.flavor, seq_len=setup.seq_len, batch=setup.batch, steps=setup.steps,
                      bag_size=bag_size, superposition_fraction=fraction, warmup_fraction=setup.warmup_fraction,
                      val_every=setup.val_every, val_steps=setup.val_steps, dataset=setup.dataset,
                      dataset_path=setup.dataset_path, model_name=setup.model_name)


def cell_overrides(setup: SweepSetup, cell: Cell | None) -> list[str]:
    """torchtitan overrides of one run (``cell`` None: the baseline). No checkpoints: the sweep
    keeps metrics only."""
    if cell is None:
        bs = bench_setup(setup, _BASELINE_TST["bag_size"], _BASELINE_TST["superposition_fraction"])
        return run_overrides(bs, steps=setup.steps, lr=setup.lr, tst=False) + ["--checkpoint.no-enable"]
    bs = bench_setup(setup, cell.bag_size, cell.superposition_fraction)
    overrides = run_overrides(bs, steps=setup.steps, lr=setup.lr, tst=True) + [
        "--checkpoint.no-enable", "--tst.mode", cell.mode, "--tst.loss_weighting", cell.weighting,
        "--tst.optimizer_at_switch", cell.optimizer_at_switch]
    if cell.optimizer_at_switch == "reset_rewarm":  # over the run's own warmup length
        overrides += ["--tst.rewarm_steps", str(bs.warmup())]
    return overrides


def _run_summary(run: dict, dump: str, reused: bool) -> dict:
    rows = run["rows"]
    val = compare.curve(rows)
    last = rows[-1]
    return {"final_val_loss": val[-1][1], "val_curve": [[int(s), v] for s, v in val],
            "raw_tokens_seen": last["raw_tokens_seen"], "flops_seen": last["flops_seen"],
            "train_wall_s": last["wall_time_s"], "process_wall_s": run["process_wall_s"],
            "run": relpath(dump), "reused": reused}


def sweep(setup: SweepSetup, out_dir: str, quiet: bool = False) -> dict:
    """Train (or reuse) the baseline and every cell; write ``sweep.json`` and ``sweep.png``."""
    setup = replace(setup, **{f: _dedupe(getattr(setup, f)) for f in
                              ("fractions", "bag_sizes", "modes", "weightings", "optimizer_at_switch")})
    if setup.ablation_bag_sizes is not None:
        setup = replace(setup, ablation_bag_sizes=_dedupe(setup.ablation_bag_sizes))
    check_setup(setup)
    # Evaluate at the last step: the evaluation interval must divide N.
    setup = replace(setup, val_every=max(d for d in range(1, min(setup.val_every, setup.steps) + 1)
                                         if setup.steps % d == 0))
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.perf_counter()
    store_dir = prepare_data(bench_setup(setup, 1, 0.3))
    corpus = corpus_record(store_dir)
    claim_output_folder(out_dir, corpus)  # never mixes or replaces another corpus's cells
    if setup.dataset in ("embedded", "embedded_large"):  # the store built for this flavor's vocab
        setup = replace(setup, dataset_path=store_dir)
    cells = plan_cells(setup)
    jobs = [("baseline", None)] + [(c.name, c) for c in cells]
    progress = Progress(setup.steps * len(jobs), quiet)

    def train(job):
        name, cell = job
        overrides = cell_overrides(setup, cell)
        record = os.path.join(out_dir, name, RUN_RECORD)
        reused = finished_run(record, overrides, BASE_CONFIG, setup.steps) is not None
        run = run_training(name, overrides, out_dir, setup.steps, progress, reuse=True)
        return name, _run_summary(run, os.path.join(out_dir, name), reused)

    results, failures = {}, {}
    lock = threading.Lock()
    saved_threads = os.environ.get("OMP_NUM_THREADS")
    if setup.jobs > 1 and saved_threads is None:  # share the cores instead of oversubscribing them
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // setup.jobs))
    try:
        with ThreadPoolExecutor(setup.jobs) as pool:
            futures = {pool.submit(train, job): job[0] for job in jobs}
            for future, name in futures.items():
                try:
                    key, summary = future.result()
                    with lock:
                        results[key] = summary
                except Exception as e:  # noqa: BLE001 -- the others go on; reported below
                    failures[name] = str(e)
                    if not quiet:
                        print(f"[sweep] {name} failed: {str(e).splitlines()[0]}", flush=True)
    finally:
        if setup.jobs > 1 and saved_threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)

    result = summarize(setup, cells, results, failures)
    result["corpus_sha256"] = corpus["corpus_sha256"]
    result["corpus"] = corpus
    result["total_wall_s"] = time.perf_counter() - t_start
    result["threads_per_run"] = (max(1, (os.cpu_count() or 1) // setup.jobs)
                                 if setup.jobs > 1 and saved_threads is None else saved_threads)
    with open(os.path.join(out_dir, "sweep.json"), "w") as f:
        json.dump(result, f, indent=1)
    if result["cells"] and "baseline" in results:
        plot_heatmap_file(result, os.path.join(out_dir, "sweep.png"))
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(jobs)} runs failed (the others are in "
                           f"{out_dir}/sweep.json; rerun to retry only these):\n" +
                           "\n".join(f"--- {n}\n{e}" for n, e in failures.items()))
    return result


def summarize(setup: SweepSetup, cells: list[Cell], results: dict, failures: dict) -> dict:
    base = results.get("baseline")
    out_cells = []
    for cell in cells:
        if cell.name not in results:
            continue
        summary = results[cell.name]
        row = {"name": cell.name, "kind": cell.kind, **{k: v for k, v in asdict(cell).items() if k != "kind"},
               "switch_step": switch_step(cell.superposition_fraction, setup.steps), **summary}
        row["difference"] = summary["final_val_loss"] - base["final_val_loss"] if base else None
        out_cells.append(row)
    grid = [c for c in out_cells if c["kind"] == "grid" and c["difference"] is not None]
    best = min(grid, key=lambda c: c["difference"]) if grid else None
    scored = [c for c in out_cells if c["difference"] is not None]
    best_any = min(scored, key=lambda c: c["difference"]) if scored else None
    return {
        "setup": {f.name: getattr(setup, f.name) for f in fields(setup)},
        "grid": {"fractions": list(setup.fractions), "bag_sizes": list(setup.bag_sizes),
                 "heatmap_setting": {"mode": setup.modes[0], "weighting": setup.weightings[0],
                                     "optimizer_at_switch": setup.optimizer_at_switch[0]},
                 "modes": list(setup.modes), "weightings": list(setup.weightings),
                 "optimizer_at_switch": list(setup.optimizer_at_switch),
                 "ablation_fraction": setup.ablation_r(), "ablation_bag_sizes": list(setup.ablation_s())},
        "baseline": base,
        "cells": out_cells,
        "best": _brief(best),
        "best_overall": _brief(best_any),
        "failed": failures,
        "complete": not failures and base is not None and len(out_cells) == len(cells),
        "rule": "difference = the cell's final next-token validation loss minus the baseline's; both "
                "run training.steps steps of the same positions (equal FLOPs) with the same learning "
                "rate, schedule, seed and data order, and are evaluated on the same held-out tokens",
        "versions": versions(),
    }


def _brief(cell: dict | None) -> dict | None:
    if cell is None:
        return None
    keys = ("name", "kind", "superposition_fraction", "bag_size", "mode", "weighting", "optimizer_at_switch",
            "final_val_loss", "difference")
    return {k: cell[k] for k in keys}


# -- reading a sweep (the notebook) ---------------------------------------------------------------
def load_sweep(path: str) -> dict:
    """A sweep's result from its folder or its ``sweep.json``."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "sweep.json")
    with open(path) as f:
        result = json.load(f)
    result["path"] = os.path.abspath(path)
    return result


def heatmap(result: dict) -> tuple[list[float], list[int], list[list[float]]]:
    """``(fractions, bag_sizes, difference[r][s])`` of the heat-map cells (NaN where missing)."""
    rs, ss = result["grid"]["fractions"], result["grid"]["bag_sizes"]
    value = {(c["superposition_fraction"], c["bag_size"]): c["difference"]
             for c in result["cells"] if c["kind"] == "grid" and c["difference"] is not None}
    return rs, ss, [[value.get((r, s), math.nan) for s in ss] for r in rs]


def ablation(result: dict, kind: str) -> list[dict]:
    """The cells of one ablation (``kind``: "mode", "weighting" or "optimizer") with their
    reference cells (the heat-map setting at the same r and s), sorted by bag size. Each row:
    ``bag_size, value`` (the knob's setting), ``final_val_loss, difference`` (vs the baseline),
    ``vs_reference`` (vs the reference cell)."""
    key = {"mode": "mode", "weighting": "weighting", "optimizer": "optimizer_at_switch"}[kind]
    r = result["grid"]["ablation_fraction"]
    setting = result["grid"]["heatmap_setting"]
    cells = [c for c in result["cells"] if c["superposition_fraction"] == r and c["difference"] is not None]
    rows = []
    for s in result["grid"]["ablation_bag_sizes"]:
        ref = next((c for c in cells if c["bag_size"] == s and c["mode"] == setting["mode"]
                    and c["weighting"] == setting["weighting"]
                    and c["optimizer_at_switch"] == setting["optimizer_at_switch"]), None)
        members = [c for c in cells if c["bag_size"] == s and (c["kind"] == kind or c is ref)]
        for c in sorted(members, key=lambda c: result["grid"][_LISTS[kind]].index(c[key])):
            rows.append({"bag_size": s, "value": c[key], "name": c["name"], "final_val_loss": c["final_val_loss"],
                         "difference": c["difference"], "val_curve": c["val_curve"],
                         "vs_reference": None if ref is None else c["final_val_loss"] - ref["final_val_loss"]})
    return rows


_LISTS = {"mode": "modes", "weighting": "weightings", "optimizer": "optimizer_at_switch"}


def plot_heatmap(result: dict, ax) -> None:
    """The heat map of final val loss minus baseline on ``ax`` (r rows, s columns), best cell boxed."""
    rs, ss, diff = heatmap(result)
    data = np.array(diff, dtype=float)
    finite = data[np.isfinite(data)]
    lim = float(np.max(np.abs(finite))) if finite.size else 1.0
    lim = lim or 1e-6
    im = ax.imshow(data, cmap="RdBu_r", norm=mcolors.TwoSlopeNorm(0.0, -lim, lim), aspect="auto", origin="lower")
    ax.set_xticks(range(len(ss)), [str(s) for s in ss])
    ax.set_yticks(range(len(rs)), [f"{r:g}" for r in rs])
    ax.grid(False)
    ax.set_xlabel("bag size s")
    ax.set_ylabel("superposition fraction r")
    for i in range(len(rs)):
        for j in range(len(ss)):
            if np.isfinite(data[i, j]):
                ax.text(j, i, f"{data[i, j]:+.3f}", ha="center", va="center", fontsize=8,
                        color="white" if abs(data[i, j]) > 0.6 * lim else "black")
    best = result.get("best")
    if best:
        i, j = rs.index(best["superposition_fraction"]), ss.index(best["bag_size"])
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.5, ec="black"))
        ax.text(j, i + 0.3, "best", ha="center", va="center", fontsize=7, fontweight="bold",
                color="white" if abs(data[i, j]) > 0.6 * lim else "black")
    ax.figure.colorbar(im, ax=ax, label="final val loss − baseline (nats; < 0: TST wins)")
    setting = result["grid"]["heatmap_setting"]
    base = result["baseline"]["final_val_loss"] if result.get("baseline") else math.nan
    ax.set_title(f"{setting['mode']}, {setting['weighting']}, optimizer {setting['optimizer_at_switch']}; "
                 f"baseline {base:.4f} ({result['setup']['steps']} steps)", fontsize=9)


def plot_heatmap_file(result: dict, path: str) -> None:
    rs, ss, _ = heatmap(result)
    fig = Figure(figsize=(1.2 * len(ss) + 3, 0.7 * len(rs) + 2.2))
    ax = fig.subplots()
    plot_heatmap(result, ax)
    fig.suptitle(f"TST sweep: {result['setup']['flavor']} llama3, equal FLOPs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def find_sweep(path: str | None = None, *, make_demo: bool = True) -> dict:
    """The sweep the notebook reads, and where it came from (``source``): ``path`` when given, else
    ``$TST_SWEEP``, else the newest complete ``outputs/sweep`` / ``outputs/sweep_quick``, else a
    tiny demo sweep in ``outputs/sweep_demo`` (trained now if missing, about a minute). Relative
    paths are relative to the current directory."""
    if path:
        return {"result": load_sweep(path), "source": "given"}
    env = os.environ.get(SWEEP_ENV)
    if env:
        return {"result": load_sweep(env), "source": f"${SWEEP_ENV}"}
    found = []
    for d in SWEEP_DIRS:
        p = os.path.join(d, "sweep.json")
        if os.path.exists(p):
            result = load_sweep(p)
            if result.get("complete"):
                found.append((os.path.getmtime(p), d, result))
    if found:
        _, d, result = max(found, key=lambda t: t[0])
        return {"result": result, "source": d}
    demo = os.path.join(DEMO_DIR, "sweep.json")
    if not os.path.exists(demo):
        if not make_demo:
            raise FileNotFoundError("no sweep output: run `python -m tst_titan.tools.sweep --quick`")
        sweep(TINY, DEMO_DIR, quiet=True)
    return {"result": load_sweep(demo), "source": f"demo {DEMO_DIR}"}


# -- printing -------------------------------------------------------------------------------------
def print_summary(result: dict) -> None:
    rs, ss, diff = heatmap(result)
    base = result["baseline"]
    print(f"\n  baseline final val loss {base['final_val_loss']:.4f} ({result['setup']['steps']} steps)")
    print("  final val loss − baseline (rows r, columns s; < 0: TST wins at equal FLOPs)")
    print("  " + "r \\ s".rjust(7) + "".join(f"{s:>9}" for s in ss))
    for r, row in zip(rs, diff):
        print("  " + f"{r:g}".rjust(7) + "".join(f"{d:>+9.4f}" if d == d else f"{'-':>9}" for d in row))
    for kind, label in (("mode", "modes"), ("weighting", "loss weightings"), ("optimizer", "optimizer at the switch")):
        rows = ablation(result, kind)
        if len({row["value"] for row in rows}) > 1:
            print(f"  {label} at r = {result['grid']['ablation_fraction']:g}:")
            for row in rows:
                print(f"    s = {row['bag_size']:<3} {row['value']:<12} {row['final_val_loss']:.4f} "
                      f"({row['difference']:+.4f} vs baseline)")
    b = result["best"]
    if b:
        print(f"  best heat-map cell: r = {b['superposition_fraction']:g}, s = {b['bag_size']}: "
              f"{b['difference']:+.4f}")
    print(f"  total {result['total_wall_s'] / 60:.1f} min, "
          f"{sum(not c['reused'] for c in result['cells']) + (not base['reused'])} runs trained, "
          f"{sum(c['reused'] for c in result['cells']) + base['reused']} reused\n")
