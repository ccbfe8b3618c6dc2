"""The honest TST benchmark (``python -m tst_titan.tools.bench``, issue 11): TST runs against a
*frontier* of fully trained baselines, over seeds and model sizes.

Per model flavor:

1. ``N``, the TST runs' length: ``tokens_per_param x parameters / (batch x seq_len)`` (parameters
   as torchtitan counts them), rounded to a multiple of the validation interval ``v`` (itself a
   multiple of 10). A step costs ``flops_per_position x batch x seq_len`` FLOPs, TST (phase 1 or 2)
   and baseline alike: a phase-1 step has the same L positions, only its inputs are bags.
2. Learning rates, on the tuning seed only, each arm on its own grid: the baseline as full N-step
   warmup-stable-decay (WSD) runs, each TST arm as full N-step TST runs; the best final
   validation loss wins. A grid of one rate is not tuned (no runs).
3. Per seed ``i`` (``--debug.seed i --tst.data_seed i``: initialisation and data order; every run
   reads its windows shuffled, ``--tst.window_order shuffled``, so that each step sees text from
   the whole corpus and no run's decay sits on a few files), at the
   chosen rates: the baseline frontier, WSD runs of ``factor x N`` steps (rounded to multiples of
   ``v``) trained as one stable run plus a cool-down branch per length
   (:func:`tst_titan.experiments.wsd.run_wsd`, the stable run as one process); each TST arm,
   one N-step run; the A/A control, one N-step baseline with another initialisation
   (``debug.seed = 1000 + i``) and the same data order, read as a treatment against seed i's
   frontier. The study's seeds differ from the tuning seed by default, so that no reported run
   is the one its learning rate was picked on (picking the best of a grid on a run favours it).
4. The old, biased figure once: the first seed's stable run (the baseline's rate never decayed)
   first reaching the primary arm's final loss, divided by N.
5. Step times: one ``python -m tst_titan.tools.steptime`` process per flavor and arm; wall-clock
   speedup = iso-loss speedup x baseline step / mean TST step.

Statistics: :mod:`tst_titan.analysis.frontier` (``summary_row``: the paired equal-FLOPs loss
difference with a Student-t 95% interval, the iso-loss speedup with a bootstrap 95% interval and
the t-interval, bounds when the frontier does not bracket TST's loss). Outputs
``<out>/frontier.json`` and ``<out>/frontier.png``. Finished runs are reused (an interrupted
study resumes), progress lines carry an ETA over the whole study, and an output folder belongs to
one corpus (:func:`tst_titan.experiments.bench.claim_output_folder`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import torch

import tst_titan
from tst_titan.analysis.frontier import (AA_ARM, MIN_SEEDS, first_crossing_speedup, mean_tst_step_s, plot_frontier,
                                         summary_row)
from tst_titan.datastore.store import CorpusMismatchError, corpus_record, read_manifest
from tst_titan.experiments.bench import BenchSetup, _build_model, claim_output_folder, prepare_data, run_overrides
from tst_titan.experiments.pairs import (demo_checkpoint_plan, prune_checkpoints, switch_checkpoint_overrides,
                                         write_pair_record)
from tst_titan.experiments.runner import (BASE_CONFIG, RUN_RECORD, Progress, free_port, run_training,
                                         training_source_sha256, versions)
from tst_titan.experiments.wsd import DECAY_RATIO, plan_wsd, run_wsd, scaled_lengths
from tst_titan.method.schedule import switch_step
from tst_titan.train_spec import flavors_of

#: The TST arms: name -> (bag size s, superposition fraction r). The paper's headline setting is
#: the pre-registered primary arm.
ARMS = {"s6_r0.3": (6, 0.3), "s4_r0.3": (4, 0.3)}
PRIMARY_ARM = "s6_r0.3"
BASELINE = "baseline"
#: The frontier's lengths in units of N: about sqrt(2) apart from 0.5 to 4.
FACTORS = (0.5, 0.71, 1.0, 1.41, 2.0, 2.83, 4.0)
MIN_FACTORS = 4
DEVICES = ("cpu", "cuda")
#: The A/A control's initialisation seed is this plus the frontier's seed.
AA_SEED_OFFSET = 1000
#: The issue's targets: the primary arm's lower 95% bound at the largest flavor; the A/A control.
TARGET_LOWER_BOUND = 1.5
AA_TARGET = (0.95, 1.05)
FRONTIER_FILE = "frontier.json"


@dataclass(frozen=True)
class FrontierSetup:
    flavors: tuple[str, ...] = ("micro", "mini")
    tokens_per_param: float = 18.0
    arms: tuple[str, ...] = ("s6_r0.3", "s4_r0.3")
    seeds: tuple[int, ...] = (1, 2, 3)
    tuning_seed: int = 0
    factors: tuple[float, ...] = FACTORS
    baseline_lr_grid: tuple[float, ...] = (3e-3, 6e-3, 1.2e-2)
    tst_lr_grid: tuple[float, ...] = (3e-3, 6e-3, 1.2e-2)  # each arm tuned on it, on its own
    #: Per-flavor grids replacing the two above where named: ``{flavor: {"baseline" | "tst": grid}}``.
    #: Sizes want different rates, and a grid wide enough for every size costs a run per extra point.
    flavor_lr_grids: dict = field(default_factory=dict)
    seq_len: int = 128
    batch: int = 16
    evals_per_run: int = 16  # the validation interval is about N / evals_per_run (a multiple of 10)
    val_steps: int = 16
    warmup_fraction: float = 0.05  # warmup steps = round(fraction x N), the same for every run
    steptime_steps: int = 100
    device: str = "cpu"
    dataset: str = "embedded_large"  # or "embedded" (stdlib only), "folder" (dataset_path: a folder of text)
    dataset_path: str | None = None
    model_name: str = "tst_llama3"
    extra_overrides: tuple[str, ...] = ()  # torchtitan overrides added to every run (e.g. bf16 on GPU)

    def lr_grid(self, flavor: str, arm: str) -> tuple[float, ...]:
        """The learning rates ``arm`` (a TST arm or BASELINE) is tuned on at ``flavor``."""
        role = "baseline" if arm == BASELINE else "tst"
        default = self.baseline_lr_grid if role == "baseline" else self.tst_lr_grid
        return tuple(self.flavor_lr_grids.get(flavor, {}).get(role, default))


# The presets. A flavor's study trains 3 g N steps of tuning (g: grid size, 3 arms) and per seed
# the frontier's stable run and branches plus 3 N-step runs (2 arms, the A/A control), about 10
# processes a seed. Costs through torchtitan.train on an idle 2-core CPU (2026-12-02, windows
# shuffled): micro about 20 ms a step; mini 91 s for a 2400-step run, process start and validation
# included (38 ms a step; 57-82 ms were measured beside other work: another process on the same
# cores slows torch several-fold). QUICK (micro, N = 680, 3 seeds): 14.0 minutes of training
# processes on an idle machine (results/frontier_quick.json). DEFAULT's micro: about 10 minutes
# for 3 seeds, 44.6 for 16 (results/frontier_micro16.json); DEFAULT's five seeds: 108.9 minutes,
# 14 of them beside another run (results/frontier.json).
# DEFAULT stops the frontier at 2.83 N (a first 2-seed study put the primary arm at 1.39x at mini;
# a speedup beyond the last length is reported as a bound) and trains five seeds, decided before
# the three-seed figures were read: the 2-seed A/A control at mini read 1.20x, seed noise as large
# as any effect, and five seeds fit the 2-hour aim at the idle pace.
# Learning rates: in that 2-seed study (grids 6e-3..2.4e-2 for all) micro's baseline picked the
# top, 2.4e-2, and mini's TST arms the bottom, 6e-3; each flavor's grid is centred on its pick.
DEFAULT = FrontierSetup(tokens_per_param=18.0, factors=FACTORS[:-1], seeds=(1, 2, 3, 4, 5),
                        baseline_lr_grid=(6e-3, 1.2e-2, 2.4e-2), tst_lr_grid=(6e-3, 1.2e-2, 2.4e-2),
                        flavor_lr_grids={"micro": {"baseline": (1.2e-2, 2.4e-2, 4.8e-2)},
                                         "mini": {"tst": (3e-3, 6e-3, 1.2e-2)}})
# QUICK's grids are DEFAULT's micro grids: on the narrower 3e-3..1.2e-2 (until 2026-12-02) every
# arm picked the top rate.
QUICK = FrontierSetup(flavors=("micro",), tokens_per_param=24.0, baseline_lr_grid=(1.2e-2, 2.4e-2, 4.8e-2),
                      tst_lr_grid=(6e-3, 1.2e-2, 2.4e-2))
#: ``--device cuda``: a 22.5 M-parameter model on one GPU, bf16 autocast. Never run yet: 33,075
#: optimizer steps of training runs (``total_steps``; the two step-time processes time a few hundred
#: more) in 41 processes (``bench --device cuda --plan``), about 8 minutes of steps at an assumed
#: 15 ms a step, plus the processes' start-up and the stable runs' checkpoints (64 a seed, one per
#: 63 steps).
#: Its evaluation, 16 x 32 samples of 513 tokens, fits the pinned corpus's val split at vocab 2048
#: (326,379 tokens; tested). That corpus's train split (14,959,987 tokens) is read up to 4.9 times
#: by the longest baseline and 3.1 times by TST s = 6 (``train_epochs`` in frontier.json), where the
#: CPU presets read at most 0.64 of theirs: a GPU figure includes repeated text.
CUDA = FrontierSetup(flavors=("small",), tokens_per_param=0.8, batch=32, seq_len=512, device="cuda",
                     baseline_lr_grid=(1e-3, 2e-3), tst_lr_grid=(1e-3, 2e-3), val_steps=16,
                     extra_overrides=("--training.mixed_precision_param", "bfloat16"))
PRESETS = {"default": DEFAULT, "quick": QUICK, "cuda": CUDA}


#: What frontier.json's figures are, written into it.
NOTES = {
    "iso_loss_speedup": "baseline-frontier FLOPs to reach TST's final val loss / TST's FLOPs, per seed "
                        "(interpolated in log FLOPs between the bracketing baselines; iso_loss_speedup_fit: "
                        "the power law L = E + A C^-alpha); the geometric mean over seeds; median and ci95 "
                        "from a bootstrap over seeds, ci95 the expanded percentile interval (Hesterberg 2015; "
                        "ci95_percentile the plain 2.5-97.5% one, too narrow with few seeds: 84% coverage "
                        "at 5); ci95_t: Student t on the log speedups, the interval to trust with few "
                        "seeds; a bound ('>' or '<') where the frontier does not bracket TST's loss",
    "equal_flops_delta": "TST final val loss - frontier loss at TST's FLOPs, mean over seeds, Student t",
    "old_metric": "biased: the baseline's learning rate has not decayed where it is read",
    "runs_wall_s": "wall time of the study's training processes summed over every invocation (a resumed "
                   "study's total_wall_s is only its last invocation's); step-time measurements excluded",
    "window_order": "every run draws its samples' windows in a random order seeded by its data "
                    "seed (tst.window_order = shuffled), not one after the other",
}


# -- the plan ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlavorPlan:
    """What one flavor's study trains."""

    flavor: str
    parameters: int
    flops_per_position: int
    flops_per_step: int
    steps: int  # N
    val_every: int
    warmup_steps: int
    lengths: tuple[int, ...]
    tokens_per_param: float  # of the N-step runs, after rounding N
    bench: BenchSetup = field(repr=False)

    def frontier_steps(self) -> int:
        return plan_wsd(self.lengths, self.warmup_steps, DECAY_RATIO, one_stable_run=True).total_steps()


def _positive_numbers(values, name: str, minimum: int = 1) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) < minimum:
        raise ValueError(f"{name} must be a list of at least {minimum} positive numbers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must hold positive numbers, got {v!r} in {values!r}")
        out.append(float(v))
    return tuple(out)


def _check_choices(name: str, values, allowed, what: str, context: str = "") -> None:
    """``values``: a non-empty list of distinct members of ``allowed``, or a ValueError naming ``name``."""
    if not values or isinstance(values, str):
        raise ValueError(f"{name} must be a non-empty list; allowed: {sorted(allowed)}, got {values!r}")
    for v in values:
        if v not in allowed:
            raise ValueError(f"{name}: unknown {what} {v!r}{context}; allowed: {sorted(allowed)}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name}: each at most once, got {list(values)}")


def check_setup(setup: FrontierSetup, device_here: bool = True) -> None:
    """Refuse a setup that cannot give the study's figures, before anything is built or trained:
    a ValueError naming the setting and what it allows. ``device_here=False`` (a plan, which
    trains nothing) does not ask for the device to be on this machine."""
    known = flavors_of(setup.model_name)
    _check_choices("flavors", setup.flavors, known, "flavor", f" of {setup.model_name}")
    vocabs = {f: known[f].vocab_size for f in setup.flavors}
    if len(set(vocabs.values())) > 1:
        raise ValueError(f"flavors must share a vocabulary size (one token store, one corpus): got {vocabs}")
    _check_choices("arms", setup.arms, ARMS, "arm")
    seeds = setup.seeds
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__len__") or len(seeds) < MIN_SEEDS:
        raise ValueError(f"seeds: at least {MIN_SEEDS} are needed for a confidence interval, got {seeds!r}")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct integers >= 0, got {list(seeds)}")
    if isinstance(setup.tuning_seed, bool) or not isinstance(setup.tuning_seed, int) or setup.tuning_seed < 0:
        raise ValueError(f"tuning_seed must be an integer >= 0, got {setup.tuning_seed!r}")
    factors = _positive_numbers(setup.factors, "factors", MIN_FACTORS)
    if any(b <= a for a, b in zip(factors, factors[1:])):
        raise ValueError(f"factors must be sorted, strictly increasing, got {list(factors)}")
    if not factors[0] <= 1.0 <= factors[-1]:
        raise ValueError(f"factors must bracket 1 (the TST run's length: its FLOPs must lie on the "
                         f"frontier), got {list(factors)}")
    _positive_numbers(setup.baseline_lr_grid, "baseline_lr_grid")
    _positive_numbers(setup.tst_lr_grid, "tst_lr_grid")
    if not isinstance(setup.flavor_lr_grids, dict):
        raise ValueError(f"flavor_lr_grids must map flavor -> {{'baseline' | 'tst': grid}}, got {setup.flavor_lr_grids!r}")
    for flavor, grids in setup.flavor_lr_grids.items():
        if flavor not in setup.flavors:
            raise ValueError(f"flavor_lr_grids: {flavor!r} is not one of the study's flavors {list(setup.flavors)}")
        if not isinstance(grids, dict) or not grids or set(grids) - {"baseline", "tst"}:
            raise ValueError(f"flavor_lr_grids[{flavor!r}] must map 'baseline' and/or 'tst' to a grid, got {grids!r}")
        for role, grid in grids.items():
            _positive_numbers(grid, f"flavor_lr_grids[{flavor!r}][{role!r}]")
    _positive_numbers((setup.tokens_per_param,), "tokens_per_param")
    for name in ("seq_len", "batch", "evals_per_run", "val_steps"):
        v = getattr(setup, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if not isinstance(setup.steptime_steps, int) or setup.steptime_steps < 4:
        raise ValueError(f"steptime_steps must be an integer >= 4 (quartiles), got {setup.steptime_steps!r}")
    if not 0 <= setup.warmup_fraction < 0.5:
        raise ValueError(f"warmup_fraction must be in [0, 0.5), got {setup.warmup_fraction!r}")
    if setup.device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {setup.device!r}")
    if device_here and setup.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda': torch finds no CUDA device on this machine "
                         "(torch.cuda.is_available() is False); allowed here: 'cpu'")
    if setup.dataset not in ("embedded", "embedded_large", "folder", "store"):
        raise ValueError(f"dataset must be one of embedded, embedded_large, folder, store; got {setup.dataset!r}")
    if setup.dataset in ("folder", "store") and not setup.dataset_path:
        raise ValueError(f"dataset {setup.dataset!r} needs dataset_path")


def plan_flavor(setup: FrontierSetup, flavor: str) -> FlavorPlan:
    """N, the validation interval, the warmup and the frontier's lengths of one flavor (checked:
    every length a WSD run torchtitan trains as such, at least MIN_FACTORS distinct lengths)."""
    _, parameters, flops_per_position = _build_model(setup.model_name, flavor, setup.seq_len, "meta")
    positions = setup.batch * setup.seq_len
    raw = setup.tokens_per_param * parameters / positions
    val_every = 10 * max(1, round(raw / (10 * setup.evals_per_run)))
    steps = val_every * max(1, round(raw / val_every))
    bench_setup = BenchSetup(flavor=flavor, seq_len=setup.seq_len, batch=setup.batch, steps=steps,
                             warmup_fraction=setup.warmup_fraction, val_every=val_every, val_steps=setup.val_steps,
                             dataset=setup.dataset, dataset_path=setup.dataset_path, model_name=setup.model_name)
    warmup = bench_setup.warmup()  # the runs' own warmup (run_overrides), the WSD family's too
    lengths = tuple(scaled_lengths(steps, setup.factors, multiple_of=val_every))
    if len(lengths) < MIN_FACTORS:
        raise ValueError(
            f"factors {list(setup.factors)} x N = {steps} steps, rounded to multiples of the validation "
            f"interval {val_every}, give only {len(lengths)} distinct lengths {list(lengths)} for {flavor}: "
            f"at least {MIN_FACTORS} are needed; raise tokens_per_param or evals_per_run"
        )
    plan_wsd(lengths, warmup, DECAY_RATIO, one_stable_run=True)  # every length a proper WSD run, or ValueError
    return FlavorPlan(flavor, parameters, flops_per_position, flops_per_position * positions, steps, val_every,
                      warmup, lengths, steps * positions / parameters, bench_setup)


def overrides(plan: FlavorPlan, setup: FrontierSetup, arm: str, lr: float, init_seed: int, data_seed: int) -> list[str]:
    """The torchtitan overrides of one N-step run (``arm``: a TST arm or BASELINE), full WSD
    schedule; the WSD family replaces the schedule keys."""
    tst = arm != BASELINE
    bag_size, fraction = ARMS[arm] if tst else ARMS[PRIMARY_ARM]  # the [tst] keys of a baseline are inert
    bench_setup = replace(plan.bench, bag_size=bag_size, superposition_fraction=fraction)
    return [*run_overrides(bench_setup, steps=plan.steps, lr=lr, tst=tst),
            "--debug.seed", str(init_seed), "--tst.data_seed", str(data_seed),
            "--tst.window_order", "shuffled", *setup.extra_overrides]


# -- step times ------------------------------------------------------------------------------------
def run_steptime(config: str, run_overrides_: list[str], steps: int, out_path: str) -> dict:
    """``python -m tst_titan.tools.steptime`` in a fresh process (a Trainer initialises
    torch.distributed), its JSON read back."""
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    cmd = [sys.executable, "-m", "tst_titan.tools.steptime", config, "--steps", str(steps), "--out", out_path,
           *run_overrides_]
    log_path = os.path.splitext(out_path)[0] + ".log"
    with open(log_path, "w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd())
    if done.returncode != 0:
        with open(log_path) as f:
            raise RuntimeError(f"step-time measurement failed (exit {done.returncode}); log {log_path}:\n{f.read()[-4000:]}")
    with open(out_path) as f:
        return json.load(f)


def _step_times(plan: FlavorPlan, setup: FrontierSetup, arm: str, lr: float, out_dir: str, steptime, quiet) -> dict:
    path = os.path.join(out_dir, plan.flavor, f"steptime_{arm}.json")
    args = overrides(plan, setup, arm, lr, setup.tuning_seed, setup.tuning_seed)
    result = None
    if os.path.exists(path):
        with open(path) as f:
            result = json.load(f)
        if result.get("overrides") != args or result["step_s"]["phase1"]["n"] != setup.steptime_steps:
            result = None
        elif not quiet:
            print(f"[frontier] {plan.flavor}/steptime_{arm}: reusing {path}", flush=True)
    if result is None:
        if not quiet:
            print(f"[frontier] {plan.flavor}/steptime_{arm}: {setup.steptime_steps} interleaved steps of each "
                  "variant", flush=True)
        result = steptime(BASE_CONFIG, args, setup.steptime_steps, path)
    s = result["step_s"]
    r = ARMS[arm][1]
    return {
        "baseline_step_s": s["baseline"]["median"], "phase1_step_s": s["phase1"]["median"],
        "phase2_step_s": s["phase2"]["median"], "superposition_fraction": r,
        "tst_mean_step_s": mean_tst_step_s(s["phase1"]["median"], s["phase2"]["median"], r),
        "kernel_gain": result["kernel_gain"], "tst_step_ratio": result["tst_step_ratio"],
        "phase1_vs_baseline": result["phase1_vs_baseline"],
        "control_phase2_vs_baseline": result["control_phase2_vs_baseline"],
        "steps_timed_each": s["phase1"]["n"],
        # the measurement itself: each variant's median, quartiles and IQR; peak memory and its ratios
        "step_s": s, "peak_memory_bytes": result.get("peak_memory_bytes"),
        **{k: result.get(k) for k in ("tst_memory_ratio", "phase1_vs_baseline_memory", "kernel_memory_gain")},
        "path": path,
        "note": "baseline step = torchtitan's own cross-entropy, as the baseline runs; mean TST step = "
                "r x phase 1 + (1 - r) x phase 2; kernel_gain = baseline / next-token step through the "
                "chunked kernel (the kernel's own effect, not TST's); tst_step_ratio = phase 1 / the "
                "next-token step through the same kernel (TST's own cost, like for like)",
    }


# -- the study ---------------------------------------------------------------------------------------
def _final_val(rows) -> float | None:
    vals = [r for r in rows if "val_loss" in r]
    return vals[-1]["val_loss"] if vals and vals[-1]["step"] == rows[-1]["step"] else None


def _run_entry(name, flavor, seed, arm, steps, lr, plan, final, path, role) -> dict:
    return {"name": name, "flavor": flavor, "seed": seed, "arm": arm, "role": role, "steps": steps, "lr": lr,
            "flops": steps * plan.flops_per_step, "final_val_loss": final, "path": path}


def _tune(plan, setup, arm, grid, out_dir, train, progress, runs) -> dict:
    """The learning rate of one arm (or the baseline) on the tuning seed: full N-step runs."""
    if len(grid) == 1:
        return {"grid": list(grid), "chosen": grid[0], "runs": [], "at_grid_edge": None,
                "note": "a grid of one learning rate: not tuned"}
    tried = []
    for lr in grid:
        name = f"{plan.flavor}/tune/{arm}_lr{lr:g}"
        run = train(name, overrides(plan, setup, arm, lr, setup.tuning_seed, setup.tuning_seed), out_dir,
                    plan.steps, progress, reuse=True)
        final = _final_val(run["rows"])
        tried.append({"lr": lr, "final_val_loss": final, "path": os.path.join(out_dir, name)})
        runs.append(_run_entry(name, plan.flavor, setup.tuning_seed, arm, plan.steps, lr, plan, final,
                               os.path.join(out_dir, name), "tuning"))
    best = min(tried, key=lambda t: t["final_val_loss"])
    edge = best["lr"] in (min(grid), max(grid))
    return {"grid": list(grid), "chosen": best["lr"], "runs": tried, "at_grid_edge": edge,
            "rule": f"lowest final val loss of a full {plan.steps}-step run, seed {setup.tuning_seed}",
            **({"note": "the best rate lies on the grid's edge: a wider grid may find a better one"} if edge else {})}


@contextlib.contextmanager
def _device(device: str):
    """Runs on ``device``: torchtitan takes CUDA whenever it sees it, so a CPU study on a GPU
    machine hides the GPUs from its processes."""
    hide = device == "cpu" and torch.cuda.is_available()
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hide:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        yield
    finally:
        if hide:
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved


def total_steps(plans: list[FlavorPlan], setup: FrontierSetup) -> int:
    """Optimizer steps of the whole study (tuning, frontiers, TST arms, A/A): the ETA's total."""
    total = 0
    for p in plans:
        grids = [setup.lr_grid(p.flavor, arm) for arm in (BASELINE, *setup.arms)]
        total += sum(p.steps * len(g) for g in grids if len(g) > 1)
        total += len(setup.seeds) * (p.frontier_steps() + p.steps * (len(setup.arms) + 1))
    return total


def processes(plans: list[FlavorPlan], setup: FrontierSetup) -> int:
    """Training processes of the whole study: per flavor the tuning runs (a grid of one rate trains
    none), per seed the stable run, one cool-down branch per length, each arm and the A/A
    replicate, and one step-time process per arm."""
    total = 0
    for p in plans:
        grids = [setup.lr_grid(p.flavor, arm) for arm in (BASELINE, *setup.arms)]
        total += sum(len(g) for g in grids if len(g) > 1)
        total += len(setup.seeds) * (1 + len(p.lengths) + len(setup.arms) + 1) + len(setup.arms)
    return total


def train_epochs(plan: FlavorPlan, setup: FrontierSetup, train_tokens: int) -> dict:
    """How many times each kind of run reads the corpus's train split: the longest frontier run
    (one input token per position) and each TST arm (s per position in phase 1, one after). Above 1
    a run sees text again, which the frontier's longest runs would feel first. (A sample also reads
    the labels' one extra token or bag: (L + 1) / L more, 0.8% at L = 128, left out.)"""
    positions = setup.batch * setup.seq_len
    read = {"longest_baseline": max(plan.lengths) * positions}
    for arm in setup.arms:
        bag_size, fraction = ARMS[arm]
        phase1 = switch_step(fraction, plan.steps)
        read[arm] = (phase1 * bag_size + plan.steps - phase1) * positions
    return {name: tokens / train_tokens for name, tokens in read.items()}


PLAN_FILE = "plan.json"


def _prepare(setup: FrontierSetup, out_dir: str, device_here: bool = True):
    """Check the setup, plan each flavor, build (or find) the token store and claim ``out_dir``
    for its corpus: (plans, store_dir, corpus record with the tokens of each split)."""
    check_setup(setup, device_here)
    plans = [plan_flavor(setup, f) for f in setup.flavors]
    store_dir = prepare_data(plans[0].bench)
    corpus = corpus_record(store_dir)
    claim_output_folder(out_dir, corpus)
    # the corpus's size as trained on (the README quotes it from here)
    corpus = dict(corpus, tokens={split: info["tokens"] for split, info in read_manifest(store_dir)["splits"].items()})
    return plans, store_dir, corpus


def _plan_record(plan: FlavorPlan, setup: FrontierSetup, train_tokens: int) -> dict:
    """A flavor's plan as the JSON files keep it, with how often its runs read the train split."""
    return {**{k: v for k, v in asdict(plan).items() if k != "bench"},
            "train_epochs": train_epochs(plan, setup, train_tokens)}


def study_plan(setup: FrontierSetup, out_dir: str) -> dict:
    """What :func:`frontier` would train, training nothing, into ``out_dir/plan.json``: per flavor
    N, the lengths, the optimizer steps and processes, and how often the runs read the corpus's
    train split (the store is built if missing). The device need not be here: a GPU study's cost
    can be read before a GPU is rented. The folder is claimed for the corpus, as the study does."""
    plans, _, corpus = _prepare(setup, out_dir, device_here=False)
    tokens = corpus["tokens"]
    result = {
        "corpus_sha256": corpus["corpus_sha256"], "corpus_tokens": tokens, "versions": versions(),
        "setup": asdict(setup),
        "flavors": {p.flavor: {**_plan_record(p, setup, tokens["train"]), "optimizer_steps": total_steps([p], setup),
                               "processes": processes([p], setup)} for p in plans},
        "optimizer_steps": total_steps(plans, setup), "processes": processes(plans, setup),
        "note": "optimizer_steps: the training runs' (tuning, frontiers, arms, A/A); the step-time processes "
                "time steptime_steps steps of each variant on top. Nothing here is measured: it is the plan.",
    }
    with open(os.path.join(out_dir, PLAN_FILE), "w") as f:
        json.dump(result, f, indent=1)
    return result


def frontier(setup: FrontierSetup, out_dir: str, quiet: bool = False, train=run_training,
             steptime=run_steptime) -> dict:
    """The whole study into ``out_dir``; returns what ``frontier.json`` holds. ``train`` is
    :func:`run_training` and ``steptime`` :func:`run_steptime` (stand-ins in tests)."""
    t_start = time.perf_counter()
    plans, store_dir, corpus = _prepare(setup, out_dir)
    if setup.dataset == "embedded_large":
        setup = replace(setup, dataset_path=store_dir)
        plans = [replace(p, bench=replace(p.bench, dataset_path=store_dir)) for p in plans]
    progress = Progress(total_steps(plans, setup), quiet)
    if not quiet:
        for plan in plans:
            epochs = train_epochs(plan, setup, corpus["tokens"]["train"])
            print(f"[frontier] {plan.flavor}: reads the train split ({corpus['tokens']['train']:,} tokens) "
                  + ", ".join(f"{k} {v:.2f}x" for k, v in epochs.items()), flush=True)
    runs, tuning, step_times, old = [], {}, {}, {}
    with _device(setup.device):
        for plan in plans:
            tuning[plan.flavor], step_times[plan.flavor], old[plan.flavor] = \
                _study_flavor(plan, setup, out_dir, train, steptime, progress, runs, quiet)
    _point_notebooks_at(out_dir, plans, setup)
    # the figures (summary ... frontier_checks) are computed from the recorded runs by _figures, as
    # `reanalyse` computes them again from frontier.json: one computation for both
    result = _figures({
        "corpus_sha256": corpus["corpus_sha256"], "corpus": corpus, "versions": versions(),
        "training_source_sha256": training_source_sha256(BASE_CONFIG),
        "device": setup.device, "setup": asdict(setup), "window_order": "shuffled",
        "plans": {p.flavor: _plan_record(p, setup, corpus["tokens"]["train"]) for p in plans},
        "primary_arm": PRIMARY_ARM, "runs": runs, "tuning": tuning, "summary": None, "aa_control": None,
        "old_metric": old, "step_times": step_times, "targets": None, "frontier_checks": None,
        "frontier_shape": None, "notes": NOTES,
    })
    result["total_wall_s"] = time.perf_counter() - t_start
    result["runs_wall_s"] = runs_wall_s(out_dir)
    write_result(result, os.path.join(out_dir, FRONTIER_FILE))
    return result


def runs_wall_s(out_dir: str) -> float:
    """Wall time of every training process of the study in ``out_dir``, whichever invocation ran it
    (each run's record keeps its own): what the study cost even when it was resumed, where
    ``total_wall_s`` is only the last invocation's. Step-time measurements are not included."""
    total = 0.0
    for folder, _, files in os.walk(out_dir):
        if RUN_RECORD in files:
            with open(os.path.join(folder, RUN_RECORD)) as f:
                total += json.load(f).get("process_wall_s") or 0.0
    return total


def _point_notebooks_at(out_dir: str, plans, setup) -> None:
    """``pair.json``: the largest flavor's primary-arm run of the first seed (it kept checkpoints
    around its switch) and that seed's A/A replicate, the N-step baseline the notebooks compare it with."""
    if PRIMARY_ARM not in setup.arms:
        return
    plan, seed = max(plans, key=lambda p: p.parameters), setup.seeds[0]
    folder = os.path.join(out_dir, plan.flavor, f"seed{seed}")
    write_pair_record(out_dir, os.path.join(folder, PRIMARY_ARM), os.path.join(folder, AA_ARM),
                      flavor=plan.flavor, seed=seed, arm=PRIMARY_ARM,
                      baseline_is=f"the A/A control of seed {seed}: an N-step baseline with its own complete WSD "
                                  f"schedule and the same data order, initialised with debug.seed = "
                                  f"{AA_SEED_OFFSET + seed}")


def _study_flavor(plan, setup, out_dir, train, steptime, progress, runs, quiet):
    flavor, n = plan.flavor, plan.steps
    if not quiet:
        print(f"[frontier] {flavor}: {plan.parameters:,} parameters, N = {n} steps "
              f"({plan.tokens_per_param:.1f} tokens/param), frontier lengths {list(plan.lengths)}, "
              f"seeds {list(setup.seeds)}, arms {list(setup.arms)}", flush=True)
    # 1. learning rates, each arm on its own grid
    tuning = {arm: _tune(plan, setup, arm, setup.lr_grid(flavor, arm), out_dir, train, progress, runs)
              for arm in (BASELINE, *setup.arms)}
    lr = {k: v["chosen"] for k, v in tuning.items()}
    # 2. per seed: the frontier, each arm, the A/A replicate
    treated, families = {arm: {} for arm in setup.arms}, {}
    for seed in setup.seeds:
        if not quiet:
            print(f"[frontier] {flavor} seed {seed}: baseline frontier (one stable run + "
                  f"{len(plan.lengths)} cool-down branches), lr {lr[BASELINE]:g}", flush=True)
        base = os.path.join(out_dir, flavor, f"seed{seed}", BASELINE)
        family = run_wsd(overrides(plan, setup, BASELINE, lr[BASELINE], seed, seed), plan.lengths,
                         plan.warmup_steps, base, validation_freq=plan.val_every, quiet=quiet, train=train,
                         one_stable_run=True, progress=progress)
        families[seed] = family
        for length in plan.lengths:
            one = family["runs"][str(length)]
            path = os.path.join(base, f"wsd_{length}")
            runs.append(_run_entry(f"{flavor}/seed{seed}/{BASELINE}/wsd_{length}", flavor, seed, BASELINE, length,
                                   lr[BASELINE], plan, one["final_val_loss"], path, "frontier"))
        for name in family["stable_runs"]:
            k = family["stable_steps"]
            vals = [r for r in family["runs"][str(max(plan.lengths))]["rows"] if r["step"] <= k and "val_loss" in r]
            runs.append(dict(_run_entry(f"{flavor}/seed{seed}/{BASELINE}/{name}", flavor, seed, BASELINE, k,
                                        lr[BASELINE], plan, vals[-1]["val_loss"], os.path.join(base, name),
                                        "stable (no decay)"), last_eval_step=vals[-1]["step"]))
        for arm in setup.arms:
            name = f"{flavor}/seed{seed}/{arm}"
            args = overrides(plan, setup, arm, lr[arm], seed, seed)
            # the notebooks' run: the primary arm of the first seed keeps checkpoints around its switch
            keeps_switch = arm == PRIMARY_ARM and seed == setup.seeds[0]
            if keeps_switch:
                args = switch_checkpoint_overrides(args, n, ARMS[arm][1])
            run = train(name, args, out_dir, n, progress, reuse=True)
            if keeps_switch:
                prune_checkpoints(os.path.join(out_dir, name), demo_checkpoint_plan(n, ARMS[arm][1]))
            final = _final_val(run["rows"])
            runs.append(_run_entry(name, flavor, seed, arm, n, lr[arm], plan, final, os.path.join(out_dir, name),
                                   "treatment"))
            treated[arm][seed] = final
        name = f"{flavor}/seed{seed}/{AA_ARM}"
        run = train(name, overrides(plan, setup, BASELINE, lr[BASELINE], AA_SEED_OFFSET + seed, seed), out_dir, n,
                    progress, reuse=True)
        final = _final_val(run["rows"])
        runs.append(_run_entry(name, flavor, seed, AA_ARM, n, lr[BASELINE], plan, final, os.path.join(out_dir, name),
                               "control"))
    # 3. step times, one measurement per arm
    times = {arm: _step_times(plan, setup, arm, lr[arm], out_dir, steptime, quiet) for arm in setup.arms}
    return tuning, times, _old_metric(plan, setup, families, treated)


def _monotone(runs, flavor) -> dict:
    """Per seed: does every longer baseline end lower than every shorter one (the frontier can
    only be inverted if so)? The pairs of consecutive lengths that do not."""
    out = {}
    for seed in sorted({r["seed"] for r in runs if r["flavor"] == flavor and r["role"] == "frontier"}):
        pts = sorted((r["steps"], r["final_val_loss"]) for r in runs
                     if r["flavor"] == flavor and r["role"] == "frontier" and r["seed"] == seed)
        bad = [[a[0], b[0], a[1], b[1]] for a, b in zip(pts, pts[1:]) if not b[1] < a[1]]
        out[str(seed)] = {"monotone": not bad, "not_falling": bad}
    return out


def _shape(runs, flavor) -> dict:
    """How a flavor's frontier bends: for each pair of consecutive lengths, the change of final
    loss per e-fold of FLOPs (d loss / d ln C), its mean and sample SD over the seeds. A power law
    with a floor (the fit) falls ever slower, so its slopes shrink in magnitude with FLOPs; where
    they do not, the fit's exponent runs to the edge of its search (reported in the rows)."""
    slopes, lengths = [], None
    for seed in sorted({r["seed"] for r in runs if r["flavor"] == flavor and r["role"] == "frontier"}):
        pts = sorted((r["steps"], r["flops"], r["final_val_loss"]) for r in runs
                     if r["flavor"] == flavor and r["role"] == "frontier" and r["seed"] == seed)
        lengths = lengths or [p[0] for p in pts]
        if [p[0] for p in pts] != lengths:
            raise ValueError(f"{flavor} seed {seed}: frontier lengths {[p[0] for p in pts]}, other seeds {lengths}")
        slopes.append([(b[2] - a[2]) / math.log(b[1] / a[1]) for a, b in zip(pts, pts[1:])])
    by_segment = list(zip(*slopes))
    return {"segments": [[a, b] for a, b in zip(lengths, lengths[1:])],
            "mean_slope": [statistics.fmean(v) for v in by_segment],
            "sd_slope": [statistics.stdev(v) if len(v) > 1 else None for v in by_segment],
            "n_seeds": len(slopes), "unit": "nats per e-fold of training FLOPs"}


def _row(flavor, tokens_per_param, parameters, arm, frontiers, treatment, times) -> dict:
    """summary_row, or (when the runs cannot be read as a frontier, e.g. a longer run ending
    higher) the reason, kept in the row."""
    step = {} if times is None else {"baseline_step_s": times["baseline_step_s"],
                                     "tst_mean_step_s": times["tst_mean_step_s"]}
    try:  # arm AA_ARM: the iso-loss speedup is aa_control's (ci95_contains_1 ...)
        return summary_row(flavor, tokens_per_param, arm, frontiers, treatment, parameters=parameters, **step)
    except ValueError as e:
        return {"flavor": flavor, "tokens_per_param": tokens_per_param, "arm": arm,
                "parameters": parameters, "equal_flops_delta": None, "iso_loss_speedup": None,
                "iso_loss_speedup_fit": None, "wall_clock_speedup": None,
                "frontiers": [{"seed": s, "runs": [list(p) for p in pts]} for s, pts in frontiers.items()],
                "treatment": {str(s): list(p) for s, p in treatment.items()}, "error": str(e)}


def _old_metric(plan, setup, families, treated) -> dict:
    """The first seed's stable run (never decayed) first reaching the primary arm's final loss
    (the same seed's iso-loss speedup beside it is one of the figures: :func:`_figures`)."""
    arm = PRIMARY_ARM if PRIMARY_ARM in setup.arms else setup.arms[0]
    seed = setup.seeds[0]
    family = families[seed]
    k = family["stable_steps"]
    curve = [(r["step"], r["val_loss"]) for r in family["runs"][str(max(plan.lengths))]["rows"]
             if r["step"] <= k and "val_loss" in r]
    target = treated[arm][seed]
    crossing = first_crossing_speedup([s for s, _ in curve], [v for _, v in curve], target, plan.steps)
    return {"arm": arm, "seed": seed, "first_crossing_speedup": crossing, "tst_final_val_loss": target,
            "stable_run_steps": k, "iso_loss_speedup_same_seed": None,
            "note": "biased: the long baseline's learning rate has not decayed where it crosses TST's final "
                    "(decayed) loss; shown to measure the bias, not as a result"}


def _targets(rows, aa, largest: str) -> dict:
    """The issue's targets read off the rows: the primary arm's lower bounds at the ``largest``
    flavor, the A/A control's median and intervals."""
    primary = next((r for r in rows if r["flavor"] == largest and r["arm"] == PRIMARY_ARM), None)
    out = {"largest_flavor": largest, "primary_arm": PRIMARY_ARM, "lower_bound_target": TARGET_LOWER_BOUND,
           "aa_target": list(AA_TARGET)}
    iso = primary and primary.get("iso_loss_speedup")
    if iso:
        lower = {k: (iso[k][0] if iso.get(k) else None) for k in ("ci95", "ci95_t")}
        out["primary_lower_bounds"] = lower
        out["primary_met"] = {k: (None if v is None else v >= TARGET_LOWER_BOUND) for k, v in lower.items()}
    for flavor, row in aa.items():
        a = row.get("iso_loss_speedup")
        if a and a.get("median") is not None:
            logs = [math.log(p["speedup"]) for p in a["per_seed"]]
            sd = statistics.stdev(logs)
            # The seeds after which a control with no effect has its geometric mean within the
            # target's narrower side (1.05: ln 1.05 < -ln 0.95) with 95% probability, per-seed log
            # speedups taken as normal with the SD measured here: (1.96 sd / ln 1.05)^2, at least 2.
            half_width = min(math.log(AA_TARGET[1]), -math.log(AA_TARGET[0]))
            out.setdefault("aa", {})[flavor] = {
                "median_within": AA_TARGET[0] <= a["median"] <= AA_TARGET[1],
                "ci95_contains_1": a.get("ci95_contains_1"), "ci95_t_contains_1": a.get("ci95_t_contains_1"),
                "log_speedup_sd": sd,
                "seeds_for_median_within": max(MIN_SEEDS, math.ceil((1.96 * sd / half_width) ** 2))}
    return out


# -- the figures, from a study's runs -----------------------------------------------------------------
def _figures(result: dict) -> dict:
    """``result`` with its figures (``summary``, ``aa_control``, ``targets``, ``frontier_checks``,
    ``frontier_shape``, the old metric's same-seed iso-loss figure) computed from what ``frontier.json`` keeps of every run
    (its role, seed, arm, FLOPs and final loss) and of the step times: how :func:`frontier` computes
    them, and :func:`reanalyse` again from a study's JSON."""
    runs, rows, aa = result["runs"], [], {}
    for flavor, plan in result["plans"].items():
        mine = [r for r in runs if r["flavor"] == flavor]
        seeds = sorted({r["seed"] for r in mine if r["role"] == "frontier"})
        frontiers = {s: [(r["flops"], r["final_val_loss"]) for r in mine if r["seed"] == s and r["role"] == "frontier"]
                     for s in seeds}

        def points(arm, role):
            return {r["seed"]: (r["flops"], r["final_val_loss"]) for r in mine if r["arm"] == arm and r["role"] == role}

        for arm in result["setup"]["arms"]:
            rows.append(_row(flavor, plan["tokens_per_param"], plan["parameters"], arm, frontiers,
                             points(arm, "treatment"), result["step_times"][flavor][arm]))
        aa[flavor] = _row(flavor, plan["tokens_per_param"], plan["parameters"], AA_ARM, frontiers,
                          points(AA_ARM, "control"), None)
    old = {}
    for flavor, o in result["old_metric"].items():
        row = next(r for r in rows if r["flavor"] == flavor and r["arm"] == o["arm"])
        per_seed = (row.get("iso_loss_speedup") or {}).get("per_seed") or []
        new = next(({"value": p["speedup"], "bound": p["bound"]} for p in per_seed if p["seed"] == o["seed"]), None)
        old[flavor] = dict(o, iso_loss_speedup_same_seed=new)
    largest = max(result["plans"].values(), key=lambda p: p["parameters"])["flavor"]
    return dict(result, summary=rows, aa_control=aa, old_metric=old, targets=_targets(rows, aa, largest),
                frontier_checks={f: _monotone(runs, f) for f in result["plans"]},
                frontier_shape={f: _shape(runs, f) for f in result["plans"]}, notes=NOTES)


def reanalyse(result: dict, source: str | None = None) -> dict:
    """A study's figures computed again (:func:`_figures`) from what its ``frontier.json`` keeps, by
    today's statistics: a change of analysis does not need the runs trained again. The rest (runs,
    tuning, corpus, versions ...) is kept; ``reanalysis`` says where the runs came from. Fed the
    JSON of a study, it returns that study's figures (tested)."""
    for key in ("plans", "runs", "setup", "step_times", "old_metric"):
        if key not in result:
            raise ValueError(f"not a frontier.json: no {key!r} (keys: {sorted(result)})")
    return dict(_figures(result), reanalysis={
        "source": source, "tst_titan": tst_titan.__version__,
        "recomputed": ["summary", "aa_control", "targets", "frontier_checks", "frontier_shape",
                       "old_metric.iso_loss_speedup_same_seed"],
        "note": "figures computed again from the runs recorded here, without training"})


def merge_studies(studies: list[dict], sources: list[str]) -> dict:
    """Several studies of the same protocol on disjoint seeds as one (e.g. a first study and more
    seeds trained later with ``--seeds``): their runs pooled, checked to be comparable first, and
    the figures computed over all seeds by :func:`reanalyse`. Refused, with the reason: different
    corpora (:class:`~tst_titan.datastore.store.CorpusMismatchError`), software versions, training
    code hashes, flavor plans (N, lengths, parameters), learning rates of an arm, or a seed of a
    flavor in two studies. The first study's tuning, step times and old metric are kept (those of
    the others, where they differ, are listed under ``merged_from``)."""
    if len(studies) < 2 or len(studies) != len(sources):
        raise ValueError("merge_studies needs at least 2 studies, one source name each")
    for study, source in zip(studies, sources):
        for key in ("plans", "runs", "setup", "step_times", "old_metric", "corpus_sha256", "versions"):
            if key not in study:
                raise ValueError(f"{source}: not a frontier.json: no {key!r}")
    first, head = studies[0], sources[0]
    for study, source in zip(studies[1:], sources[1:]):
        if study["corpus_sha256"] != first["corpus_sha256"]:
            raise CorpusMismatchError(f"{source} was trained on corpus {study['corpus_sha256'][:16]}..., {head} on "
                                      f"{first['corpus_sha256'][:16]}...: runs on different corpora are not pooled")
        versions_of = ("python", "torch", "torchtitan", "tst_titan")
        theirs = {k: study["versions"].get(k) for k in versions_of}
        ours = {k: first["versions"].get(k) for k in versions_of}
        if theirs != ours:
            raise ValueError(f"{source} ran with {theirs}, {head} with {ours}: studies of other software are not pooled")
        a, b = study.get("training_source_sha256"), first.get("training_source_sha256")
        if a and b and a != b:
            raise ValueError(f"{source} and {head} were trained by different training code "
                             f"(training_source_sha256 {a[:16]}... vs {b[:16]}...)")
        for flavor, plan in study["plans"].items():
            if flavor in first["plans"] and first["plans"][flavor] != plan:
                raise ValueError(f"{source} and {head} plan {flavor} differently (N, lengths or parameters): "
                                 f"{plan} vs {first['plans'][flavor]}")
    plans, lrs, seeds_of, runs = {}, {}, {}, []
    for study, source in zip(studies, sources):
        for flavor, plan in study["plans"].items():
            plans.setdefault(flavor, plan)
        for r in study["runs"]:
            if r["role"] == "tuning":
                if study is first:
                    runs.append(r)
                continue
            key = (r["flavor"], "baseline" if r["arm"] == AA_ARM else r["arm"])
            seen = lrs.setdefault(key, (r["lr"], source))
            if seen[0] != r["lr"]:
                raise ValueError(f"{key[0]} {key[1]}: learning rate {r['lr']:g} in {source}, {seen[0]:g} in "
                                 f"{seen[1]}: runs at other rates are not pooled")
            owner = seeds_of.setdefault((r["flavor"], r["seed"]), source)
            if owner != source:
                raise ValueError(f"{r['flavor']} seed {r['seed']} is in both {owner} and {source}: "
                                 "pool studies of disjoint seeds")
            runs.append(r)
    arms = list(dict.fromkeys(a for study in studies for a in study["setup"]["arms"]))
    for study, source in zip(studies, sources):
        missing = [(f, a) for f in study["plans"] for a in arms if a not in study["step_times"].get(f, {})
                   and a not in first["step_times"].get(f, {})]
        if missing:
            raise ValueError(f"{source}: no step times for {missing}")
    step_times = {f: {**times, **first["step_times"].get(f, {})}  # the first study's where it has them
                  for s in studies for f, times in s["step_times"].items()}
    old = {**{f: o for s in studies[1:] for f, o in s["old_metric"].items()}, **first["old_metric"]}
    merged = dict(first, plans=plans, runs=runs, step_times=step_times, old_metric=old,
                  setup=dict(first["setup"], arms=arms,
                             seeds=sorted({seed for _, seed in seeds_of}),
                             flavors=list(plans)),
                  seeds_by_flavor={f: sorted(seed for g, seed in seeds_of if g == f) for f in plans},
                  runs_wall_s=sum(s.get("runs_wall_s") or 0.0 for s in studies),
                  merged_from=[{"source": src, "flavors": list(s["plans"]), "seeds": s["setup"]["seeds"],
                                "runs_wall_s": s.get("runs_wall_s"), "tuning": s.get("tuning"),
                                "step_times": s["step_times"]} for s, src in zip(studies, sources)])
    return reanalyse(merged, source=" + ".join(sources))


def write_result(result: dict, path: str) -> str:
    """``result`` as JSON at ``path`` and its figure beside it (the same name, ``.png``); returns
    the figure's path (None when no row can be drawn)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    plotted = [r for r in result["summary"] + list(result["aa_control"].values()) if r.get("error") is None]
    if not plotted:
        return None
    png = os.path.splitext(path)[0] + ".png"
    plot_frontier({"rows": plotted}, png)
    return png


# -- the table -------------------------------------------------------------------------------------
def format_speedup(iso: dict | None) -> str:
    """An iso-loss speedup as the table shows it: median [bootstrap] t[...], or a bound."""
    if not iso:
        return "-"
    if iso.get("error"):
        return "not computed (see below)"
    if iso.get("bound"):
        return "grid too narrow both ways" if iso["value"] is None else f"{iso['bound']} {iso['value']:.2f}x"
    (lo, hi), (tlo, thi) = iso["ci95"], iso["ci95_t"]
    return f"{iso['median']:.2f}x [{lo:.2f}, {hi:.2f}] t[{tlo:.2f}, {thi:.2f}]"


def print_table(result: dict) -> None:
    """Per flavor x arm: iso-loss speedup first, then the equal-FLOPs difference, wall-clock, the
    A/A control and the old metric."""
    print("\n  iso-loss speedup vs decayed baselines (frontier FLOPs to TST's loss / TST FLOPs):"
          " median [bootstrap 95%, expanded percentile] t[Student-t 95%]")
    head = (f"  {'flavor':<8} {'params':>9} {'tok/param':>9} {'arm':<9} {'iso-loss speedup':<38} "
            f"{'equal-FLOPs delta [95% t]':<30} {'wall-clock':<18}")
    print(head)
    for r in result["summary"]:
        if r.get("error"):
            print(f"  {r['flavor']:<8} {r['parameters']:>9,} {r['tokens_per_param']:>9.1f} {r['arm']:<9} "
                  f"not computed: {r['error']}")
            continue
        d = r["equal_flops_delta"]
        delta = f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
        w = r["wall_clock_speedup"]
        wall = "-" if not w else f"{w['median']:.2f}x" if not w["bound"] else \
            "grid too narrow both ways" if w["value"] is None else f"{w['bound']} {w['value']:.2f}x"
        print(f"  {r['flavor']:<8} {r['parameters']:>9,} {r['tokens_per_param']:>9.1f} {r['arm']:<9} "
              f"{format_speedup(r['iso_loss_speedup']):<38} {delta:<30} {wall:<18}")
        fit = r.get("iso_loss_speedup_fit")
        print(f"  {'':<8} {'':>9} {'':>9} {'':<9} power-law fit L = E + A C^-a: "
              f"{fit.get('error') if fit and fit.get('error') else format_speedup(fit)}")
    bounds = {(r.get(k) or {}).get("bound") for r in [*result["summary"], *result["aa_control"].values()]
              for k in ("iso_loss_speedup", "iso_loss_speedup_fit")} - {None}
    if bounds:
        print("  '> x': TST ended below the longest baseline of some seed, so the frontier needs more than its longest"
              " run: the speedup is at least x (a longer frontier gives the number); '< x': it ended above the"
              " shortest, so at most x; 'grid too narrow both ways': seeds fell off both ends")
    for flavor, a in result["aa_control"].items():
        iso = a.get("iso_loss_speedup")
        contains = "" if not iso or iso.get("ci95_t_contains_1") is None else \
            f"  (t-interval contains 1: {iso['ci95_t_contains_1']})"
        print(f"  {flavor:<8} A/A control (a baseline replicate as treatment): "
              f"{format_speedup(iso) if iso else a.get('error')}{contains}")
    for flavor, o in result["old_metric"].items():
        c = o["first_crossing_speedup"]
        new = o["iso_loss_speedup_same_seed"]
        same_seed = "-" if new is None else f"{new['bound'] or ''}{new['value']:.2f}x"
        print(f"  {flavor:<8} old metric (BIASED: undecayed long baseline, first crossing), {o['arm']} seed "
              f"{o['seed']}: {(c['bound'] + ' ') if c['bound'] else ''}{c['value']:.2f}x   vs iso-loss, same seed: "
              f"{same_seed}")
    for flavor, arms in result["step_times"].items():
        for arm, t in arms.items():
            def ms(variant, median):  # median [q1-q3] where the study kept the quartiles
                q = (t.get("step_s") or {}).get(variant) or {}
                spread = f" [{q['q1'] * 1e3:.1f}-{q['q3'] * 1e3:.1f}]" if "q1" in q else ""
                return f"{median * 1e3:.1f}{spread} ms"

            label = "median [IQR]" if "q1" in ((t.get("step_s") or {}).get("baseline") or {}) else "median"
            print(f"  {flavor:<8} {arm:<9} step, {label}: baseline {ms('baseline', t['baseline_step_s'])}, "
                  f"phase 1 {ms('phase1', t['phase1_step_s'])}, phase 2 {ms('phase2', t['phase2_step_s'])}; "
                  f"TST's own cost (phase 1 / next-token step, same kernel) {t['tst_step_ratio']:.3f}x; "
                  f"chunked kernel's own gain {t['kernel_gain']:.3f}x")
    for flavor, shape in (result.get("frontier_shape") or {}).items():
        slopes = " ".join(f"{v:+.3f}" for v in shape["mean_slope"])
        print(f"  {flavor:<8} frontier slope per e-fold of FLOPs, segment by segment (mean of {shape['n_seeds']} "
              f"seeds): {slopes} (a power law with a floor only flattens)")
    for flavor, seeds in result["frontier_checks"].items():
        for seed, c in seeds.items():
            for short, long, a, b in c["not_falling"]:
                print(f"  {flavor:<8} seed {seed}: the {long}-step baseline ended at {b:.4f}, not below the "
                      f"{short}-step one ({a:.4f}): this seed's frontier cannot be inverted")
    t = result["targets"]
    print(f"  target: lower 95% bound >= {t['lower_bound_target']} for {t['primary_arm']} at {t['largest_flavor']}: "
          f"{t.get('primary_lower_bounds', 'not computed')}")
    runs = result.get("runs_wall_s")
    print(f"  wall time of this invocation {result['total_wall_s'] / 60:.1f} min"
          + ("" if runs is None else f"; of every training run of the study, over all invocations, {runs / 60:.1f} min")
          + "\n")
