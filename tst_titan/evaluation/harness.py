"""lm-eval-harness on trained runs, the library of ``python -m tst_titan.tools.evaluate``.

Each run's checkpoint is exported to a Hugging Face folder (:mod:`tst_titan.evaluation.checkpoint`)
and scored by lm-eval's own ``HFLM`` through ``lm_eval.simple_evaluate``, zero-shot, as the paper's
downstream tables are. Tasks are lm-eval names (default: the paper's eight), paths to task YAML
files, or ``tst_continuation`` (:mod:`tst_titan.evaluation.continuation_task`), which needs no
network. Everything a user can get wrong -- runs, steps, tokenizers, task names, and the hub
datasets of the tasks -- is checked before any model is loaded.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from tst_titan.evaluation.checkpoint import EvaluationError, RunCheckpoint, hf_folder, resolve
from tst_titan.evaluation.continuation_task import TASK_NAME, ContinuationSpec, prepare_task

#: The paper's zero-shot downstream tasks (its Tables 1 and 3), as lm-eval names them.
PAPER_TASKS = ("arc_easy", "arc_challenge", "boolq", "hellaswag", "mmlu", "openbookqa", "piqa", "winogrande")
#: The metric reported as "accuracy" unless ``metric`` says otherwise (lm-eval's plain accuracy).
DEFAULT_METRIC = "acc"


@dataclass
class TaskPlan:
    """The requested tasks, sorted into the local task, YAML files and registered lm-eval names."""

    requested: list[str]
    registered: list[str] = field(default_factory=list)
    yaml_files: list[str] = field(default_factory=list)
    local: bool = False  # tst_continuation
    include_paths: list[str] = field(default_factory=list)
    manager: Any = None  # lm_eval TaskManager, built only when a registered name is asked for


def lm_eval_version() -> str:
    from importlib.metadata import version  # optional: lm-eval is the [eval] extra

    return version("lm_eval")


def _task_manager(include_paths: list[str], defaults: bool):
    from lm_eval.tasks import TaskManager  # optional: the [eval] extra

    return TaskManager(include_path=include_paths or None, include_defaults=defaults)


def plan_tasks(tasks: list[str], include_paths: list[str] = ()) -> TaskPlan:
    """Sort and check ``--tasks`` (and ``--include-path``): unknown names fail here, with the
    choices, before anything is loaded."""
    if not tasks:
        raise EvaluationError("--tasks is empty: name at least one task")
    for path in include_paths:
        if not os.path.isdir(path):
            raise EvaluationError(f"--include-path {path!r} is not a folder")
    plan = TaskPlan(requested=list(tasks), include_paths=[os.path.abspath(p) for p in include_paths])
    for name in tasks:
        if name == TASK_NAME:
            plan.local = True
        elif name.endswith((".yaml", ".yml")):
            if not os.path.isfile(name):
                raise EvaluationError(f"--tasks {name!r}: no such task YAML file")
            plan.yaml_files.append(os.path.abspath(name))
        else:
            plan.registered.append(name)
    if plan.registered:
        plan.manager = _task_manager(plan.include_paths, defaults=True)
        known = set(plan.manager.all_tasks)
        unknown = [n for n in plan.registered if n not in known]
        if unknown:
            near = {n: difflib.get_close_matches(n, sorted(known), n=3) for n in unknown}
            hints = "; ".join(f"{n!r}" + (f" (did you mean {', '.join(near[n])}?)" if near[n] else "")
                              for n in unknown)
            raise EvaluationError(
                f"--tasks: unknown task {hints}. Choose the paper's {', '.join(PAPER_TASKS)}, the local "
                f"{TASK_NAME}, a task YAML file, or any of lm-eval's {len(known)} registered tasks "
                "(`python -m lm_eval ls tasks`)")
    return plan


def check_hub_tasks(plan: TaskPlan) -> None:
    """Load each registered task once (its dataset comes from the Hugging Face hub, or the local
    ``datasets`` cache): when the hub is unreachable, fail naming the task."""
    for name in plan.registered:
        try:
            plan.manager.load([name])
        except Exception as e:  # noqa: BLE001 -- any failure to get the data: say which task
            raise EvaluationError(
                f"task {name!r}: its dataset could not be loaded ({type(e).__name__}: {e}). It comes from "
                "the Hugging Face hub, which is unreachable or blocked here (HF_HUB_OFFLINE / "
                "HF_DATASETS_OFFLINE) and not in the local datasets cache; offline, use the local task "
                f"{TASK_NAME} or a task YAML with local data") from e


def metric_of(row: dict[str, Any], metric: str) -> tuple[str, float | None, float | None]:
    """(metric, value, stderr) of one task's lm-eval result row; ``metric`` when it reports it,
    else its first metric (lm-eval keys them ``name,filter``)."""
    names = [k for k in row if "," in k and "_stderr," not in k and isinstance(row[k], (int, float))]
    key = next((k for k in names if k.split(",")[0] == metric), names[0] if names else None)
    if key is None:
        return metric, None, None
    name, filt = key.split(",", 1)
    stderr = row.get(f"{name}_stderr,{filt}")
    return name, float(row[key]), float(stderr) if isinstance(stderr, (int, float)) else None


def top_level_tasks(results: dict[str, Any]) -> list[str]:
    """The names lm-eval reported at the top (groups such as mmlu, not their subtasks)."""
    children = {c for subs in results.get("group_subtasks", {}).values() for c in subs}
    return [name for name in results["results"] if name not in children]


def evaluate_checkpoint(ckpt: RunCheckpoint, plan: TaskPlan, cache_dir: str, *,
                        spec: ContinuationSpec = ContinuationSpec(), batch_size: int | str = 1,
                        device: str = "cpu", limit: int | float | None = None,
                        log_samples: bool = False) -> dict[str, Any]:
    """lm-eval's results dict for one run (``simple_evaluate``, zero-shot)."""
    import lm_eval  # optional: the [eval] extra
    from lm_eval.models.huggingface import HFLM  # optional: the [eval] extra

    specs: list[str] = [*plan.registered, *plan.yaml_files]
    manager = plan.manager
    if plan.local:
        local_yaml = prepare_task(ckpt.store_dir, spec, os.path.join(cache_dir, "tasks"))
        specs.append(local_yaml)
    if manager is None:
        manager = _task_manager(plan.include_paths, defaults=False)
    model = HFLM(pretrained=hf_folder(ckpt, os.path.join(cache_dir, "hf")), device=device,
                 batch_size=batch_size, dtype="float32")
    return lm_eval.simple_evaluate(model=model, tasks=specs, task_manager=manager, num_fewshot=0,
                                   limit=limit, log_samples=log_samples)


def evaluate_runs(run_dirs: list[str], tasks: list[str] = PAPER_TASKS, *, cache_dir: str,
                  step: int | None | list[int | None] = None, tokenizer: str | None = None, include_paths: list[str] = (),
                  spec: ContinuationSpec = ContinuationSpec(), batch_size: int | str = 1,
                  device: str = "cpu", metric: str = DEFAULT_METRIC, limit: int | float | None = None,
                  log_samples: bool = False, progress: Callable | None = None) -> dict[str, Any]:
    """Evaluate each run's checkpoint on the tasks; return ``evaluate.json``'s content.

    All inputs are checked first (runs, ``step``, tokenizers, task names, the local task's
    lengths against each run's seq_len, the hub tasks' data); then one model at a time. ``step``:
    one for all runs, or one per run (None: its latest checkpoint)."""
    if not run_dirs:
        raise EvaluationError("RUN_DIR: give at least one run folder")
    steps = list(step) if isinstance(step, (list, tuple)) else [step] * len(run_dirs)
    if len(steps) != len(run_dirs):
        raise EvaluationError(f"step: {len(steps)} steps for {len(run_dirs)} runs")
    checkpoints = [resolve(r, s, tokenizer) for r, s in zip(run_dirs, steps)]
    plan = plan_tasks(list(tasks), list(include_paths))
    if plan.local:
        for ckpt in checkpoints:
            if ckpt.store_dir is None:
                raise EvaluationError(f"--tasks {TASK_NAME}: run {ckpt.run_dir!r} has no token store to "
                                      "take held-out documents from (training.dataset_path)")
            try:
                spec.check(ckpt.seq_len)
            except ValueError as e:
                raise EvaluationError(f"--tst-context/--tst-continuation: {e}") from e
    _quiet_lm_eval()
    check_hub_tasks(plan)

    runs, results, samples = [], [], {}
    for ckpt in (progress(checkpoints) if progress else checkpoints):
        out = evaluate_checkpoint(ckpt, plan, cache_dir, spec=spec, batch_size=batch_size, device=device,
                                  limit=limit, log_samples=log_samples)
        runs.append({"run": ckpt.label, "step": ckpt.step, "checkpoint": ckpt.step_dir,
                     "val_loss": ckpt.val_loss, "tokenizer": ckpt.tokenizer_dir})
        for task in top_level_tasks(out):
            name, value, stderr = metric_of(out["results"][task], metric)
            results.append({"run": ckpt.label, "task": task, "accuracy": value, "stderr": stderr,
                            "metric": name})
        if log_samples:
            samples[ckpt.label] = out.get("samples", {})
    record = {"lm_eval_version": lm_eval_version(), "tasks": list(tasks), "num_fewshot": 0,
              "metric": metric, "runs": runs, "results": results}
    if plan.local:
        record[TASK_NAME] = {"items": spec.items, "context_tokens": spec.context_tokens,
                             "continuation_tokens": spec.continuation_tokens,
                             "distractors": spec.distractors, "seed": spec.seed}
    if log_samples:
        record["samples"] = samples
    return record


def _quiet_lm_eval() -> None:
    # lm-eval logs every task config and request at INFO: keep the table readable
    for name in ("lm_eval", "lm-eval", "lm_eval.evaluator"):
        logging.getLogger(name).setLevel(logging.WARNING)


def format_table(record: dict[str, Any]) -> str:
    """Runs x tasks: ``accuracy ± stderr`` as lm-eval reports them, and each run's NTP val loss."""
    tasks = list(dict.fromkeys(r["task"] for r in record["results"]))
    cell = {(r["run"], r["task"]): r for r in record["results"]}

    def fmt(r):
        if r is None or r["accuracy"] is None:
            return "-"
        err = "" if r["stderr"] is None or math.isnan(r["stderr"]) else f" ± {r['stderr']:.4f}"
        return f"{r['accuracy']:.4f}{err}"

    header = ["run", "step", "val_loss", *tasks]
    rows = [[run["run"], str(run["step"]), "-" if run["val_loss"] is None else f"{run['val_loss']:.4f}",
             *[fmt(cell.get((run["run"], t))) for t in tasks]] for run in record["runs"]]
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in [header, *rows]]
    metrics = sorted({r["metric"] for r in record["results"]})
    lines.append(f"(0-shot {', '.join(metrics)} ± stderr as lm-eval {record['lm_eval_version']} reports "
                 "them; val_loss: the run's next-token validation loss logged at that step)")
    return "\n".join(lines)
