"""The TST run and baseline run the notebooks analyse: found (:func:`find_runs`), or trained now
with our own code as a demo pair (:func:`make_demo_runs`: tiny model, embedded corpus,
checkpoints around the switch) when no benchmark output exists."""

from __future__ import annotations

import json
import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from tst_titan.analysis.runs import checkpoint_dir, checkpoint_steps, relpath, stage_checkpoints
from tst_titan.experiments.bench import BenchSetup, prepare_data, run_overrides
from tst_titan.experiments.runner import Progress, run_training
from tst_titan.method.schedule import switch_step
from tst_titan.run_files import METRICS_FILE

#: The folder a demo pair goes to when no benchmark output exists (relative to the current directory).
DEMO_DIR = os.path.join("outputs", "notebook_demo")
#: ``<dir>/tst`` and ``<dir>/baseline``: the runs the notebooks read instead of the defaults.
RUNS_ENV = "TST_NOTEBOOK_RUNS"
#: Where ``python -m tst_titan.tools.bench`` writes, per (command, preset), under ``outputs/`` (a
#: study of another corpus adds ``-<its folder's name>``): the folders the notebooks look in.
OUTPUT_FOLDERS = {("frontier", "default"): "frontier", ("frontier", "quick"): "frontier_quick",
                  ("frontier", "cuda"): "frontier_cuda", ("pair", "default"): "bench", ("pair", "quick"): "bench_quick"}
#: Benchmark outputs the notebooks look for, the newest first: the frontier study's
#: (``python -m tst_titan.tools.bench [--quick | --device cuda]``, its ``pair.json``) and the one-pair
#: view's (``python -m tst_titan.tools.bench pair [--quick]``, its ``tst/`` and ``baseline/``).
BENCH_DIRS = tuple(os.path.join("outputs", d) for d in OUTPUT_FOLDERS.values())
#: The frontier study's pointer to the pair the notebooks read (see :func:`write_pair_record`).
PAIR_FILE = "pair.json"
#: A frontier.json the notebooks read instead of the defaults.
FRONTIER_ENV = "TST_FRONTIER"
#: The frontier studies' output folders (newest first) and, without any, the committed results.
FRONTIER_DIRS = tuple(os.path.join("outputs", d) for (command, _), d in OUTPUT_FOLDERS.items() if command == "frontier")
FRONTIER_RESULTS = tuple(os.path.join("results", f) for f in ("frontier.json", "frontier_quick.json"))


def find_frontier(path: str | None = None) -> dict[str, str]:
    """The frontier study the notebooks show and where it came from (``source``): ``path`` when
    given; ``$TST_FRONTIER``; the newest ``outputs/frontier*/frontier.json``; the committed
    ``results/frontier.json``, then ``results/frontier_quick.json``."""
    if path:
        return {"path": os.path.abspath(path), "source": "given"}
    env = os.environ.get(FRONTIER_ENV)
    if env:
        if not os.path.exists(env):
            raise FileNotFoundError(f"${FRONTIER_ENV}={env!r} does not exist")
        return {"path": os.path.abspath(env), "source": f"${FRONTIER_ENV}"}
    made = [os.path.join(d, "frontier.json") for d in FRONTIER_DIRS]
    made = sorted((p for p in made if os.path.exists(p)), key=os.path.getmtime, reverse=True)
    if made:
        return {"path": os.path.abspath(made[0]), "source": "benchmark " + relpath(os.path.dirname(made[0]))}
    for p in FRONTIER_RESULTS:
        if os.path.exists(p):
            return {"path": os.path.abspath(p), "source": "committed " + p}
    raise FileNotFoundError("no frontier study: run `python -m tst_titan.tools.bench --quick` "
                            f"(or set ${FRONTIER_ENV})")


def _pair(folder: str) -> dict[str, str] | None:
    record = os.path.join(folder, PAIR_FILE)
    if os.path.exists(record):
        with open(record) as f:
            rel = json.load(f)
        tst, base = (os.path.join(folder, rel[k]) for k in ("tst", "baseline"))
    else:
        tst, base = os.path.join(folder, "tst"), os.path.join(folder, "baseline")
    if all(os.path.exists(os.path.join(p, METRICS_FILE)) for p in (tst, base)):
        return {"tst": tst, "baseline": base}
    return None


def write_pair_record(out_dir: str, tst: str, baseline: str, **about: Any) -> None:
    """Point the notebooks at a TST run and a baseline inside a study's ``out_dir`` (paths kept
    relative, so the folder can move); ``about`` says what they are."""
    rel = {k: os.path.relpath(p, out_dir) for k, p in (("tst", tst), ("baseline", baseline))}
    with open(os.path.join(out_dir, PAIR_FILE), "w") as f:
        json.dump({**rel, **about}, f, indent=1)


def find_runs(tst: str | None = None, baseline: str | None = None, *, need_checkpoints: bool = False,
              demo_dir: str = DEMO_DIR, make_demo: bool = True, demo_steps: int = 300) -> dict[str, str]:
    """The TST run and baseline run to analyse, and where they came from (``source``):

    1. ``tst`` and ``baseline`` when given (the notebooks' parameters cell);
    2. ``$TST_NOTEBOOK_RUNS/{tst,baseline}``;
    3. the newest benchmark output, ``outputs/bench`` or ``outputs/bench_quick`` (skipped when
       ``need_checkpoints`` and its TST run has no checkpoints on both sides of the switch: the
       benchmark keeps only the last one);
    4. a demo pair in ``demo_dir``, made by :func:`make_demo_runs` if missing (``make_demo``).
    """
    if tst or baseline:
        if not (tst and baseline):
            raise ValueError("give both the TST run and the baseline run")
        return {"tst": os.path.abspath(tst), "baseline": os.path.abspath(baseline), "source": "given"}
    env = os.environ.get(RUNS_ENV)
    if env:
        pair = _pair(os.path.abspath(env))
        if pair is None:
            raise FileNotFoundError(f"${RUNS_ENV}={env!r} has no tst/ and baseline/ runs with metrics.jsonl")
        return {**pair, "source": f"${RUNS_ENV}"}
    benches = [p for p in (_pair(os.path.abspath(d)) for d in BENCH_DIRS) if p is not None]
    benches.sort(key=lambda p: os.path.getmtime(os.path.join(p["tst"], METRICS_FILE)), reverse=True)
    for pair in benches:
        if not need_checkpoints or stage_checkpoints(pair["tst"]) is not None:
            return {**pair, "source": "benchmark " + relpath(os.path.dirname(pair["tst"]))}
    demo = os.path.abspath(demo_dir)
    pair = _pair(demo)
    if pair is not None and os.path.exists(os.path.join(demo, "demo.json")):
        return {**pair, "source": "demo " + relpath(demo)}
    if not make_demo:
        raise FileNotFoundError("no benchmark output and no demo runs: run "
                                "tst_titan.experiments.pairs.make_demo_runs")
    made = make_demo_runs(demo, steps=demo_steps)
    return {"tst": made["tst"], "baseline": made["baseline"], "source": "demo " + relpath(demo) + " (made now)"}


def _demo_setup(**kw) -> BenchSetup:
    base = dict(flavor="tiny", seq_len=128, batch=16, steps=300, bag_size=4, superposition_fraction=0.3,
                k=2.0, val_every=10, val_steps=8)
    base.update(kw)
    return BenchSetup(**base)


def _set_flag(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


def demo_checkpoint_plan(steps: int, fraction: float) -> dict[str, int]:
    """Checkpoint interval and the steps a demo keeps: 1 (start), the switch (end of phase 1),
    one interval later (shortly after the switch) and the end. The interval is the largest
    divisor of the switch step up to ``steps // 25`` (at least 1), so the switch is saved."""
    switch = switch_step(fraction, steps)
    if not 1 <= switch < steps:
        raise ValueError(f"superposition_fraction {fraction} of {steps} steps leaves no phase on one side")
    limit = max(1, steps // 25)
    interval = max(d for d in range(1, limit + 1) if switch % d == 0)
    return {"interval": interval, "start": 1, "end of phase 1": switch,
            "after switch": min(switch + interval, steps), "end": steps}


def switch_checkpoint_overrides(args: list[str], steps: int, fraction: float) -> list[str]:
    """``args`` changed to save the checkpoints of :func:`demo_checkpoint_plan` (every interval,
    all kept, and step 1); :func:`prune_checkpoints` then removes the others."""
    plan = demo_checkpoint_plan(steps, fraction)
    args = _set_flag(args, "--checkpoint.interval", str(plan["interval"]))
    args = _set_flag(args, "--checkpoint.keep_latest_k", "0")
    return args + ["--checkpoint.enable_first_step_checkpoint"]


def prune_checkpoints(run_dir: str, plan: dict[str, int]) -> None:
    """Remove the checkpoints of ``run_dir`` other than the steps of ``plan`` and the run's last."""
    steps = checkpoint_steps(run_dir)
    keep = {plan["start"], plan["end of phase 1"], plan["after switch"], plan["end"]} | set(steps[-1:])
    for step in steps:
        if step not in keep:
            shutil.rmtree(checkpoint_dir(run_dir, step))


def make_demo_runs(out_dir: str = DEMO_DIR, steps: int = 300, *, bag_size: int = 4, fraction: float = 0.3,
                   k: float = 2.0, lr: float = 6e-3, flavor: str = "tiny", seq_len: int = 128, batch: int = 16,
                   val_every: int = 10, val_steps: int = 8, log_freq: int = 5, parallel: bool = False,
                   quiet: bool = True) -> dict[str, Any]:
    """Train a TST run (``steps``) and its baseline (``k·steps``, same LR, seed and data) with
    ``python -m torchtitan.train`` (:func:`tst_titan.experiments.runner.run_training`) into
    ``out_dir/tst`` and ``out_dir/baseline``, keeping checkpoints at step 1, at the end of phase 1,
    shortly after the switch and at the end (:func:`demo_checkpoint_plan`; the baseline keeps the
    same steps and its own end). ``parallel`` trains both at once (faster; wall-clock numbers then
    share the CPUs). Writes ``out_dir/demo.json`` last (its presence marks a complete pair)."""
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    marker = os.path.join(out_dir, "demo.json")
    if os.path.exists(marker):
        os.remove(marker)
    setup = _demo_setup(flavor=flavor, seq_len=seq_len, batch=batch, steps=steps, bag_size=bag_size,
                        superposition_fraction=fraction, k=k, val_every=val_every, val_steps=val_steps)
    store_dir = prepare_data(setup)
    plan = demo_checkpoint_plan(steps, fraction)
    base_steps = max(steps, int(math.ceil(k * steps / val_every)) * val_every)

    def overrides(n: int, tst: bool) -> list[str]:
        args = switch_checkpoint_overrides(run_overrides(setup, steps=n, lr=lr, tst=tst), steps, fraction)
        args = _set_flag(args, "--metrics.log_freq", str(log_freq))
        args = _set_flag(args, "--training.dataset_path", store_dir)
        return _set_flag(args, "--model.hf_assets_path", store_dir)

    jobs = [("tst", overrides(steps, True), steps), ("baseline", overrides(base_steps, False), base_steps)]
    progress = None if quiet else Progress(steps + base_steps)
    if parallel:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda j: run_training(j[0], j[1], out_dir, j[2], progress), jobs))
    else:
        results = [run_training(name, args, out_dir, n, progress) for name, args, n in jobs]
    for result in results:
        prune_checkpoints(result["dump"], plan)
    record = {"setup": asdict(setup), "lr": lr, "baseline_steps": base_steps, "checkpoints": plan,
              "store_dir": store_dir, "parallel": parallel,
              "process_wall_s": {r["name"]: r["process_wall_s"] for r in results}}
    with open(marker, "w") as f:
        json.dump(record, f, indent=1)
    return {"tst": os.path.join(out_dir, "tst"), "baseline": os.path.join(out_dir, "baseline"), **record}
