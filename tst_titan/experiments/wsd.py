"""A family of fully trained baselines of different lengths from one run: warmup-stable-decay
(WSD) cool-down branches.

A baseline of ``N`` steps trains with torchtitan's warmup-stable-decay schedule: linear warmup over
``W`` steps, a constant rate, then a linear decay over the last ``round(N x decay_ratio)`` steps
(the paper's: 10%). Before its decay starts, the rate depends on ``W`` alone. So a run of ``N``
steps equals, up to its :func:`branch_point` ``k``, one long *stable* run (the same rates, the same
data, read by sample index) -- and from the stable run's checkpoint at step ``k`` a short
*cool-down branch* resumed with ``training.steps = N`` finishes exactly the ``N``-step run.
(Hägele et al., 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations".)

:func:`run_wsd` trains the stable run, then one branch per length. torchtitan 0.2.2 saves
checkpoints every ``checkpoint.interval`` steps and at the last step, not at chosen steps, so the
stable run is either

* segments, one per branch point (the default): each ends at a branch point, saves a full
  checkpoint there, and the next segment resumes from it; or
* one run (``one_stable_run=True``): one process saving a full checkpoint every
  ``gcd(branch points)`` steps, all kept (``keep_latest_k = 0``); those not at a branch point are
  deleted once it has finished. One process start instead of one per length: lengths that are
  multiples of ``10·u`` have branch points ``0.9 x length``, multiples of ``9·u``. The whole family costs the stable run plus every branch's
decay: about 1.2x the longest run for the grid 0.5x .. 4x in steps of sqrt(2) (:func:`scaled_lengths`),
under 0.4x training each length from scratch. The stable run is the longest run's own
schedule (``lr_scheduler.total_steps`` = the longest length), stopped at its branch point.

Runs go through :func:`tst_titan.experiments.runner.run_training` (fresh ``torchtitan.train``
processes) and are reused when finished with the same settings, so an interrupted family resumes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass

from tst_titan.experiments.runner import BASE_CONFIG, RUN_RECORD, Progress, run_training, same_settings
from tst_titan.run_files import read_metrics

#: The paper's schedule: decay over the last 10% of a run.
DECAY_RATIO = 0.1
#: A checkpoint interval no run reaches: checkpoints are saved at a run's last step only.
NO_INTERVAL = 1_000_000_000


def decay_steps(steps: int, decay_ratio: float = DECAY_RATIO) -> int:
    """Steps of the decay of a ``steps``-step run, as torchtitan 0.2.2 counts them:
    ``round(steps x decay_ratio)`` (Python's round)."""
    return round(steps * decay_ratio)


def branch_point(steps: int, warmup_steps: int, decay_ratio: float = DECAY_RATIO) -> int:
    """The step of the stable run's checkpoint a ``steps``-step WSD run branches from:
    ``steps - decay_steps``.

    torchtitan's factor for trainer step t is ``lambda(t - 1)``, constant (after warmup) while
    ``t - 1 < steps + 1 - decay_steps`` (its ``warmup + stable`` count, with the virtual last
    step it adds): steps ``1 .. steps + 1 - decay_steps`` train at the stable run's rate. A
    checkpoint saved after step k already holds the rate of step k + 1 (the scheduler steps before
    the save, and the optimizer's learning rate is part of its state; a resumed scheduler only
    recomputes it after the first resumed step), so step k + 1 must be a stable step too: k is one
    less than the last stable step. Raises ``ValueError`` when torchtitan would shorten the
    schedule (warmup plus decay longer than the run) or the run has no decayed step.
    """
    for name, value in (("steps", steps), ("warmup_steps", warmup_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "steps" else 0):
            raise ValueError(f"{name} must be an integer >= {1 if name == 'steps' else 0}, got {value!r}")
    if not 0 < decay_ratio < 1:
        raise ValueError(f"decay_ratio must be in (0, 1), got {decay_ratio!r}")
    decay = decay_steps(steps, decay_ratio)
    if decay < 2:
        raise ValueError(
            f"a {steps}-step run decays over round({steps} x {decay_ratio}) = {decay} step(s): its "
            "last step is torchtitan's virtual one, so it never trains at a decayed rate; use longer "
            "runs (or a larger decay_ratio)"
        )
    if warmup_steps + decay > steps:
        raise ValueError(
            f"a {steps}-step run cannot warm up for {warmup_steps} steps and decay for {decay}: "
            "torchtitan would shorten the decay, and the run would not be a WSD run of that length"
        )
    return steps - decay


@dataclass(frozen=True)
class Branch:
    steps: int  # N: the run's length
    branch_point: int  # k: the stable run's step it starts from


@dataclass(frozen=True)
class WSDPlan:
    """The runs of a family: the stable segments (one per distinct branch point) and the
    branches, both in the order they run."""

    lengths: tuple[int, ...]
    warmup_steps: int
    decay_ratio: float
    branches: tuple[Branch, ...]
    one_stable_run: bool = False  # one stable process with interval checkpoints, not segments

    @property
    def horizon(self) -> int:
        """The longest length: the stable run follows its schedule."""
        return max(self.lengths)

    @property
    def branch_points(self) -> tuple[int, ...]:
        return tuple(sorted({b.branch_point for b in self.branches}))

    @property
    def segment_ends(self) -> tuple[int, ...]:
        """Where each stable run (a segment, or the one run) ends."""
        points = self.branch_points
        return (max(points),) if self.one_stable_run else points

    @property
    def checkpoint_interval(self) -> int:
        """The stable runs' ``checkpoint.interval``: every branch point a multiple of it (one
        run), or none reached (segments: each saves at its last step only)."""
        return math.gcd(*self.branch_points) if self.one_stable_run else NO_INTERVAL

    def stable_run_of(self, k: int) -> int:
        """The end of the stable run holding the checkpoint of branch point ``k``."""
        return min(e for e in self.segment_ends if e >= k)

    def checkpoints_of(self, end: int) -> tuple[int, ...]:
        """The branch points whose checkpoints the stable run ending at ``end`` saves."""
        return tuple(k for k in self.branch_points if self.stable_run_of(k) == end)

    def total_steps(self) -> int:
        """Optimizer steps the family trains: the stable run plus every branch."""
        return max(self.segment_ends) + sum(b.steps - b.branch_point for b in self.branches)


def plan_wsd(lengths, warmup_steps: int, decay_ratio: float = DECAY_RATIO, one_stable_run: bool = False) -> WSDPlan:
    """The family for run ``lengths`` (distinct step counts), each with ``warmup_steps`` of warmup
    and a linear decay over its last ``decay_ratio``; its stable run in segments or, with
    ``one_stable_run``, one process."""
    lengths = tuple(sorted(lengths))
    if not lengths or len(set(lengths)) != len(lengths):
        raise ValueError(f"lengths must be distinct step counts, at least one, got {lengths!r}")
    branches = tuple(Branch(n, branch_point(n, warmup_steps, decay_ratio)) for n in lengths)
    return WSDPlan(lengths, warmup_steps, decay_ratio, branches, one_stable_run)


def scaled_lengths(steps: int, factors=(0.5, 0.71, 1.0, 1.41, 2.0, 2.83, 4.0), multiple_of: int = 1) -> list[int]:
    """Run lengths ``factor x steps`` for a frontier (the default grid: about sqrt(2) apart from
    0.5x to 4x), each rounded to a multiple of ``multiple_of`` (e.g. the validation interval, so
    that every run is evaluated at its last step)."""
    out = sorted({max(multiple_of, multiple_of * round(f * steps / multiple_of)) for f in factors})
    return out


# -- the runs ----------------------------------------------------------------------------------
def _schedule(steps: int, plan: WSDPlan) -> list[str]:
    return ["--training.steps", str(steps),
            "--lr_scheduler.warmup_steps", str(plan.warmup_steps),
            "--lr_scheduler.decay_ratio", repr(plan.decay_ratio),
            "--lr_scheduler.decay_type", "linear"]


def stable_name(k: int) -> str:
    return f"stable_to_{k}"


def branch_name(steps: int) -> str:
    return f"wsd_{steps}"


def checkpoint_of(out_dir: str, name: str, step: int) -> str:
    """Where run ``name`` in ``out_dir`` saved its checkpoint of ``step``."""
    return os.path.join(out_dir, name, "checkpoint", f"step-{step}")


def _resume_from(path: str) -> list[str]:
    # The whole training state (weights, optimizer, schedule, data position, step), not only the
    # weights (torchtitan's default for an initial load).
    return ["--checkpoint.initial_load_path", path, "--checkpoint.no-initial-load-model-only"]


def stable_overrides(plan: WSDPlan, end: int, resume: str | None) -> list[str]:
    """A stable run: the longest run's schedule up to step ``end``, saving its full state there
    (and, as one run, every ``plan.checkpoint_interval`` steps); a segment resumes from the
    previous segment's checkpoint ``resume`` (None: the first)."""
    args = _schedule(end, plan) + ["--lr_scheduler.total_steps", str(plan.horizon),
                                   "--checkpoint.enable", "--checkpoint.interval", str(plan.checkpoint_interval),
                                   "--checkpoint.no-last-save-model-only", "--checkpoint.keep_latest_k", "0"]
    return args + (_resume_from(resume) if resume else [])


def branch_overrides(plan: WSDPlan, steps: int, resume: str | None) -> list[str]:
    """The ``steps``-step WSD run, resumed from the stable run's checkpoint ``resume`` at its
    branch point -- or, with ``resume=None``, trained from scratch (the reference a branch must
    equal). Saves the final weights."""
    args = _schedule(steps, plan) + ["--checkpoint.enable", "--checkpoint.interval", str(NO_INTERVAL),
                                     "--checkpoint.last_save_model_only"]
    return args + (_resume_from(resume) if resume else [])


@dataclass(frozen=True)
class RunSpec:
    name: str
    steps: int
    overrides: list[str]
    kind: str  # "stable" or "branch"
    after: str | None  # the run whose checkpoint it resumes from


def wsd_runs(plan: WSDPlan, out_dir: str, base_overrides: list[str]) -> list[RunSpec]:
    """Every run of the family, in the order they must run: ``base_overrides`` (model, data,
    learning rate, seeds, validation ...) followed by each run's schedule and checkpoint keys."""
    runs, previous = [], None
    for end in plan.segment_ends:
        resume = checkpoint_of(out_dir, previous.name, previous.steps) if previous else None
        spec = RunSpec(stable_name(end), end, [*base_overrides, *stable_overrides(plan, end, resume)],
                       "stable", previous.name if previous else None)
        runs.append(spec)
        previous = spec
    for b in plan.branches:
        stable = stable_name(plan.stable_run_of(b.branch_point))
        resume = checkpoint_of(out_dir, stable, b.branch_point)
        runs.append(RunSpec(branch_name(b.steps), b.steps,
                            [*base_overrides, *branch_overrides(plan, b.steps, resume)], "branch", stable))
    return runs


def wsd_rows(plan: WSDPlan, rows_of, steps: int) -> list[dict]:
    """The metrics rows of the ``steps``-step run: the stable run's rows (of the segments up to
    it, or of the one run) up to its branch point, then its branch's. ``rows_of(name)`` reads a
    run's rows."""
    k = next(b.branch_point for b in plan.branches if b.steps == steps)
    ends = plan.segment_ends
    starts = (0, *ends[:-1])  # a stable run covers steps start+1 .. end
    rows = [r for start, end in zip(starts, ends) if start < k for r in rows_of(stable_name(end)) if r["step"] <= k]
    return rows + [r for r in rows_of(branch_name(steps)) if r["step"] > k]


def _finished(dump: str, spec: RunSpec, config: str, checkpoints) -> bool:
    """A stable run finished with these settings, by this code (its record, see
    :func:`~tst_titan.experiments.runner.same_settings`) and the checkpoints of its branch points
    (``checkpoints``; a segment's: its last step)."""
    record_path = os.path.join(dump, RUN_RECORD)
    if not os.path.exists(record_path):
        return False
    with open(record_path) as f:
        record = json.load(f)
    if not same_settings(record, spec.overrides, config, spec.steps):
        return False
    return all(os.path.exists(os.path.join(dump, "checkpoint", f"step-{k}", ".metadata")) for k in checkpoints)


def _prune_checkpoints(dump: str, keep) -> None:
    """Delete the stable run's interval checkpoints that no branch starts from (disk space:
    one full training state each)."""
    folder = os.path.join(dump, "checkpoint")
    keep = {f"step-{k}" for k in keep}
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        if name.startswith("step-") and name not in keep:
            shutil.rmtree(os.path.join(folder, name))


def run_wsd(base_overrides: list[str], lengths, warmup_steps: int, out_dir: str, *,
            validation_freq: int, decay_ratio: float = DECAY_RATIO, config: str = BASE_CONFIG,
            quiet: bool = False, train=run_training, one_stable_run: bool = False,
            progress: Progress | None = None) -> dict:
    """Train the WSD family of ``lengths`` into ``out_dir``; return, per length, its branch point,
    its rows (stable part and branch), and its final validation loss.

    ``validation_freq`` is set on every run and must divide every length, so each run is evaluated
    at its last step. Finished runs with the same settings are reused; a stable run trained
    again makes every later run train again. ``one_stable_run``: the stable run as one process
    (see the module docstring), else in segments. ``progress``: a study's own (else one for this
    family). ``train`` is :func:`run_training` (a stand-in in tests).
    """
    plan = plan_wsd(lengths, warmup_steps, decay_ratio, one_stable_run)
    bad = [n for n in plan.lengths if n % validation_freq]
    if bad:
        raise ValueError(
            f"validation_freq = {validation_freq} does not divide the run length(s) {bad}: every "
            "run must be evaluated at its last step"
        )
    os.makedirs(out_dir, exist_ok=True)
    base = [*base_overrides, "--validation.freq", str(validation_freq)]
    runs = wsd_runs(plan, out_dir, base)
    progress = progress or Progress(plan.total_steps(), quiet)
    retrained: set[str] = set()
    done: dict[str, dict] = {}
    for spec in runs:
        dump = os.path.join(out_dir, spec.name)
        upstream_new = spec.after in retrained
        checkpoints = plan.checkpoints_of(spec.steps) if spec.kind == "stable" else ()
        if spec.kind == "stable" and not upstream_new and _finished(dump, spec, config, checkpoints):
            done[spec.name] = {"rows": read_metrics(dump)}
            progress.done += spec.steps
            if not quiet:
                print(f"[wsd] {spec.name:<16} reusing the finished segment in {dump}", flush=True)
            continue
        if spec.kind == "branch":
            # the trainer counts a run's steps from 1 (progress lines: done + step; at the end: + steps);
            # a branch trains only its steps after the branch point
            progress.done -= next(b.branch_point for b in plan.branches if b.steps == spec.steps)
        run = train(spec.name, spec.overrides, out_dir, spec.steps, progress, config=config,
                    reuse=spec.kind == "branch" and not upstream_new)
        if spec.kind == "stable":
            retrained.add(spec.name)
            if plan.one_stable_run:
                _prune_checkpoints(dump, checkpoints)
        done[spec.name] = run
    result = {"lengths": list(plan.lengths), "warmup_steps": warmup_steps, "decay_ratio": decay_ratio,
              "stable_steps": max(plan.segment_ends), "total_steps": plan.total_steps(),
              "stable_runs": [stable_name(e) for e in plan.segment_ends],
              "checkpoint_interval": plan.checkpoint_interval if one_stable_run else None, "runs": {}}
    for b in plan.branches:
        rows = wsd_rows(plan, lambda name: done[name]["rows"], b.steps)
        vals = [r for r in rows if "val_loss" in r]
        result["runs"][str(b.steps)] = {
            "steps": b.steps, "branch_point": b.branch_point, "rows": rows,
            "final_val_loss": vals[-1]["val_loss"] if vals and vals[-1]["step"] == b.steps else None,
        }
    return result
