"""Run the stock torchtitan Trainer on the TST specs inside test processes: the tests' one trainer
helper.

A training is a :class:`Plan` (a name, command-line overrides of a packaged config, and what to
record); :func:`run_plan` builds and runs its ``Trainer`` in the current process exactly as
``python -m torchtitan.train`` would, and leaves in the run's dump folder

* ``metrics.jsonl`` (written by the run; read with :func:`metrics_rows`),
* ``tst_log.txt``: the ``[tst]`` log lines (rank 0),
* ``error.txt``: the error the run stopped with, for plans that expect one (rank 0),
* ``spy.rank<R>.json`` with ``spy``: what :class:`Spy` saw on rank R.

Starting a process and importing torchtitan costs ~10 s on 2 cores, a tiny training ~1-2 s. So
:func:`train` runs one plan and :func:`run_plans` many, one after the other, in one group of N gloo
processes (``tests/helpers/distributed.py``); :func:`family` runs a family of plan groups once per
pytest session and returns its :class:`Results` (the families: ``tests/helpers/plans.py``, the
fixtures: ``tests/conftest.py``).
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from dataclasses import dataclass, field

import torch
from torchtitan.config import ConfigManager
from torchtitan.train import Trainer

import tst_titan.config  # noqa: F401  (activates the extension here: tst_* specs, CPU mode)
from tests.helpers import ROOT
from tests.helpers.distributed import run_on_processes
from tst_titan.run_files import read_metrics
from tst_titan.train_spec import config_path

#: The packaged training configs (``tst_titan/train_configs``).
CONFIGS = os.path.dirname(config_path("debug_tst.toml"))
#: The embedded store the debug configs use; tests share it with user runs (it is a cache).
EMBEDDED_STORE = os.path.join(ROOT, "data", "embedded_v2048")

# A small, fast run: the tiny flavor, short sequences, every step logged.
FAST = [
    "--model.flavor", "tiny",
    "--training.seq_len", "32",
    "--training.local_batch_size", "4",
    "--training.steps", "8",
    "--metrics.log_freq", "1",
    "--lr_scheduler.warmup_steps", "2",
    "--validation.seq_len", "32",
    "--validation.local_batch_size", "4",
    "--validation.steps", "2",
    "--validation.freq", "4",
    "--checkpoint.no-enable",
    "--metrics.no-enable-tensorboard",
]

#: What must be identical between two runs that should agree (not wall_time_s, data_loading_pct).
COMPARED = ("step", "phase", "epoch", "loss", "val_loss", "lr", "grad_norm", "raw_tokens_seen",
            "positions_seen")


def job_args(dump_folder: str, *overrides: str, config: str = "debug_tst.toml") -> list[str]:
    """The command line of a FAST run of ``config`` (a packaged config's name, or a path) on the
    embedded store, writing into ``dump_folder``."""
    return [
        "--job.config_file", os.path.join(CONFIGS, config),
        "--job.dump_folder", str(dump_folder),
        "--training.dataset_path", EMBEDDED_STORE,
        "--model.hf_assets_path", EMBEDDED_STORE,
        *FAST,
        *overrides,
    ]


def parse(*overrides: str, config: str = "debug_tst.toml"):
    """``config`` (a packaged config's name, or a path) plus overrides, parsed by torchtitan (every
    tst_titan config check runs)."""
    return ConfigManager().parse_args(["--job.config_file", os.path.join(CONFIGS, config), *overrides])


@dataclass
class Plan:
    name: str
    args: list[str]
    config: str = "debug_tst.toml"
    expect_error: bool = False  # record the error in error.txt instead of failing
    spy: bool = False  # record what the model, the loss and the optimizer saw (Spy)
    set_config: dict = field(default_factory=dict)  # "section.key" -> value, set after parsing


class Spy(logging.Handler):
    """What one rank's trainer did: the ``[tst]`` log lines (always) and, once :meth:`watch`-ing a
    trainer, per training microbatch the shapes of the model's input and of the labels, and after
    every optimizer step AdamW's step count of the first parameter (1 right after a reset)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.inputs: list[list[int]] = []
        self.labels: list[list[int]] = []
        self.adam_steps: list[int] = []

    def emit(self, record):
        message = record.getMessage()
        if "[tst]" in message:
            self.lines.append(f"{record.levelname}: {message}")

    def watch(self, trainer: Trainer) -> None:
        def record_input(module, inputs):
            if torch.is_grad_enabled():  # training microbatches (validation runs under no_grad)
                self.inputs.append(list(inputs[0].shape))

        trainer.model_parts[0].tok_embeddings.register_forward_pre_hook(record_input)
        loss_fn = trainer.loss_fn

        def record_labels(pred, labels):
            if pred.requires_grad:  # training microbatches, not validation
                self.labels.append(list(labels.shape))
            return loss_fn(pred, labels)

        trainer.loss_fn = record_labels
        inner = trainer.optimizers.optimizers[0]
        first = next(p for group in inner.param_groups for p in group["params"])
        trainer.optimizers.register_step_post_hook(
            lambda *a: self.adam_steps.append(int(inner.state[first]["step"].item())))

    def record(self) -> dict:
        return {"inputs": self.inputs, "labels": self.labels, "adam_steps": self.adam_steps}


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def run_plan(rank: int, plan: Plan, dump: str) -> None:
    """Build and run ``plan``'s Trainer in this process (one rank of its process group). A config
    with ``checkpoint.create_seed_checkpoint`` saves the step-0 weights instead of training, as
    ``torchtitan.train.main`` does."""
    os.makedirs(dump, exist_ok=True)
    spy = Spy()
    root = logging.getLogger()  # torchtitan's logger; INFO as torchtitan.train's init_logger sets it
    level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(spy)
    trainer = None
    try:
        config = ConfigManager().parse_args(job_args(dump, *plan.args, config=plan.config))
        for key, value in plan.set_config.items():
            section, name = key.split(".")
            setattr(getattr(config, section), name, value)
        trainer = Trainer(config)
        if plan.spy:
            spy.watch(trainer)
        if config.checkpoint.create_seed_checkpoint:
            trainer.checkpointer.save(curr_step=0, last_step=True)
        else:
            trainer.train()
            if config.compile.enable and rank == 0:  # what torch.compile really did (dynamo's counters)
                stats = dict(torch._dynamo.utils.counters["stats"])
                _write(os.path.join(dump, "compile.json"), json.dumps({"backend": config.compile.backend, **stats}))
    except Exception as e:  # noqa: BLE001
        if not plan.expect_error:
            raise
        if rank == 0:
            _write(os.path.join(dump, "error.txt"), f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}")
    else:
        if plan.expect_error and rank == 0:
            _write(os.path.join(dump, "error.txt"), "NO ERROR")
    finally:
        if trainer is not None:
            trainer.close()
        root.removeHandler(spy)
        root.setLevel(level)
    if rank == 0:
        _write(os.path.join(dump, "tst_log.txt"), "\n".join(spy.lines))
    if plan.spy:
        _write(os.path.join(dump, f"spy.rank{rank}.json"), json.dumps(spy.record()))


def _run_all(rank: int, world_size: int, runs: list[tuple[str, Plan]]) -> None:
    for dump, plan in runs:
        run_plan(rank, plan, dump)


def run_plans(base: str, plans: list[Plan], world_size: int = 1) -> None:
    """Run the plans one after the other in one group of ``world_size`` gloo processes, each into
    ``base/<plan name>``."""
    base = str(base)
    os.makedirs(base, exist_ok=True)
    run_on_processes(_run_all, world_size, [(os.path.join(base, p.name), p) for p in plans])


def metrics_rows(dump_folder: str) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` (none if it logged nothing)."""
    path = os.path.join(str(dump_folder), "metrics.jsonl")
    return read_metrics(path) if os.path.exists(path) else []


def spy_record(dump_folder: str, rank: int = 0) -> dict:
    with open(os.path.join(str(dump_folder), f"spy.rank{rank}.json")) as f:
        return json.load(f)


def train(dump_folder: str, *overrides: str, world_size: int = 1, config: str = "debug_tst.toml",
          spy: bool = False):
    """Train; return the metrics rows (and, with ``spy``, the label shapes each rank's loss saw)."""
    dump_folder = str(dump_folder)
    plan = Plan(os.path.basename(dump_folder), list(overrides), config=config, spy=spy)
    run_on_processes(_run_all, world_size, [(dump_folder, plan)])
    rows = metrics_rows(dump_folder)
    if not spy:
        return rows
    return rows, [spy_record(dump_folder, rank)["labels"] for rank in range(world_size)]


def seed_checkpoint(dump_folder: str, *overrides: str, config: str = "debug_tst.toml") -> list[str]:
    """Save step-0 weights once; return the overrides that start a run from them. Runs on
    different numbers of processes initialise differently, so comparisons start from this."""
    dump_folder = str(dump_folder)
    plan = Plan("seed", [*overrides, "--checkpoint.enable", "--checkpoint.create_seed_checkpoint"],
                config=config)
    run_on_processes(_run_all, 1, [(dump_folder, plan)])
    return ["--checkpoint.enable", "--checkpoint.initial_load_path",
            os.path.join(dump_folder, "checkpoint", "step-0"), "--checkpoint.interval", "100000"]


def losses(rows: list[dict]) -> list[float]:
    return [r["loss"] for r in rows if "loss" in r]


def compared(rows: list[dict], after: int = 0) -> list[dict]:
    """The :data:`COMPARED` values of the rows after step ``after``."""
    return [{k: r.get(k) for k in COMPARED} for r in rows if r["step"] > after]


class Results:
    """What the plans of one family left in their dump folders (``base/<plan name>``)."""

    def __init__(self, base: str):
        self.base = base

    def dump(self, name: str) -> str:
        return os.path.join(self.base, name)

    def rows(self, name: str) -> list[dict]:
        return metrics_rows(self.dump(name))

    def error(self, name: str) -> str:
        with open(os.path.join(self.dump(name), "error.txt")) as f:
            return f.read()

    def log(self, name: str) -> str:
        with open(os.path.join(self.dump(name), "tst_log.txt")) as f:
            return f.read()

    def spy(self, name: str, rank: int = 0) -> dict:
        return spy_record(self.dump(name), rank)

    def shapes(self, name: str, rank: int = 0) -> list[list[int]]:
        return self.spy(name, rank)["labels"]

    def checkpoint(self, name: str, step: int) -> str:
        return os.path.join(self.dump(name), "checkpoint", f"step-{step}")


_families: dict[str, Results] = {}


def family(name: str, tmp_path_factory, build) -> Results:
    """Run a family of plans once per session: ``build(base) -> [(plans, world_size), ...]``."""
    if name not in _families:
        base = str(tmp_path_factory.mktemp(name))
        for plans, world_size in build(base):
            run_plans(base, plans, world_size)
        _families[name] = Results(base)
    return _families[name]
