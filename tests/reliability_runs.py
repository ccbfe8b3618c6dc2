"""Many short trainings in one set of processes, for the reliability tests (resume, export, data
faults, determinism, numerical faults, bad inputs).

Starting a process and importing torchtitan costs ~10 s on 2 cores; a tiny training costs ~1-2 s.
So the tests describe their runs as *plans* and a few process groups run them one after the other
(:func:`run_plans`); every plan leaves in its dump folder the ``metrics.jsonl`` rows, the error it
stopped with (``error.txt``), the ``[tst]`` log lines (``tst_log.txt``) and, with ``spy``, the label
shapes the loss saw. The families are run once per pytest session (:func:`family`), shared by the
test modules that read them.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from dataclasses import dataclass, field

from tests.distributed import run_on_processes
from tests.training import job_args


@dataclass
class Plan:
    name: str
    args: list[str]
    config: str = "debug_tst.toml"
    expect_error: bool = False  # record the error instead of failing the family
    spy: bool = False  # record the label shapes of training microbatches
    set_config: dict = field(default_factory=dict)  # "section.key" -> value, after parsing


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        message = record.getMessage()
        if "[tst]" in message:
            self.lines.append(f"{record.levelname}: {message}")


def _run_plan(rank: int, plan: Plan, dump: str) -> None:
    from torchtitan.config import ConfigManager
    from torchtitan.train import Trainer

    os.makedirs(dump, exist_ok=True)
    handler = _Lines()
    logging.getLogger().addHandler(handler)
    trainer = None
    shapes: list[list[int]] = []
    try:
        config = ConfigManager().parse_args(job_args(dump, *plan.args, config=plan.config))
        for key, value in plan.set_config.items():
            section, name = key.split(".")
            setattr(getattr(config, section), name, value)
        trainer = Trainer(config)
        if plan.spy:
            loss_fn = trainer.loss_fn

            def spy(pred, labels):
                if pred.requires_grad:
                    shapes.append(list(labels.shape))
                return loss_fn(pred, labels)

            trainer.loss_fn = spy
        trainer.train()
    except Exception as e:  # noqa: BLE001
        if not plan.expect_error:
            raise
        if rank == 0:
            with open(os.path.join(dump, "error.txt"), "w") as f:
                f.write(f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}")
    else:
        if plan.expect_error and rank == 0:
            with open(os.path.join(dump, "error.txt"), "w") as f:
                f.write("NO ERROR")
    finally:
        if trainer is not None:
            trainer.close()
        logging.getLogger().removeHandler(handler)
    if rank == 0:
        with open(os.path.join(dump, "tst_log.txt"), "w") as f:
            f.write("\n".join(handler.lines))
    if plan.spy:
        with open(os.path.join(dump, f"label_shapes.rank{rank}"), "w") as f:
            json.dump(shapes, f)


def _plans_body(rank, world_size, plans, base):
    for plan in plans:
        _run_plan(rank, plan, os.path.join(base, plan.name))


def run_plans(base: str, plans: list[Plan], world_size: int = 1) -> None:
    """Run the plans one after the other in one group of ``world_size`` gloo processes."""
    os.makedirs(base, exist_ok=True)
    run_on_processes(_plans_body, world_size, plans, base)


class Results:
    """Read what the plans of one family left in their dump folders."""

    def __init__(self, base: str):
        self.base = base

    def dump(self, name: str) -> str:
        return os.path.join(self.base, name)

    def rows(self, name: str) -> list[dict]:
        path = os.path.join(self.base, name, "metrics.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def error(self, name: str) -> str:
        with open(os.path.join(self.base, name, "error.txt")) as f:
            return f.read()

    def log(self, name: str) -> str:
        with open(os.path.join(self.base, name, "tst_log.txt")) as f:
            return f.read()

    def shapes(self, name: str, rank: int = 0) -> list[list[int]]:
        with open(os.path.join(self.base, name, f"label_shapes.rank{rank}")) as f:
            return json.load(f)

    def checkpoint(self, name: str, step: int) -> str:
        return os.path.join(self.base, name, "checkpoint", f"step-{step}")


_families: dict[str, Results] = {}


def family(name: str, tmp_path_factory, build) -> Results:
    """Run a family of plans once per session: ``build(base) -> [(plans, world_size), ...]``."""
    if name not in _families:
        base = str(tmp_path_factory.mktemp(name))
        for plans, world_size in build(base):
            run_plans(base, plans, world_size)
        _families[name] = Results(base)
    return _families[name]


# -- the families --------------------------------------------------------------------------------
#: 8 steps, switch after step 4 (r = 0.5), 2 microbatches of 2 samples per step on one process.
RESUME = ["--training.steps", "8", "--tst.superposition_fraction", "0.5",
          "--training.local_batch_size", "2", "--training.global_batch_size", "4",
          "--validation.freq", "4"]
#: The same under FSDP2 on 2 processes: global batch 8 = 2 (local) x 2 (dp) x 2 (accumulation).
RESUME_FSDP = ["--training.steps", "8", "--tst.superposition_fraction", "0.5",
               "--training.local_batch_size", "2", "--training.global_batch_size", "8",
               "--parallelism.data_parallel_shard_degree", "2", "--validation.freq", "4"]
SAVE_EVERY_STEP = ["--checkpoint.enable", "--checkpoint.interval", "1", "--checkpoint.keep_latest_k", "0",
                   "--checkpoint.no-last-save-model-only"]
#: Mid phase 1, exactly at the switch (the last bag step), after it.
RESUME_STEPS = (2, 4, 6)


def resume_args(base: str, run: str, step: int, common: list[str], *extra: str) -> list[str]:
    """Load every state of ``run``'s step-``step`` checkpoint into a fresh dump folder."""
    return [*common, "--checkpoint.enable",
            "--checkpoint.initial_load_path", os.path.join(base, run, "checkpoint", f"step-{step}"),
            "--checkpoint.no-initial-load-model-only", "--checkpoint.load_only", *extra]


def _one_process_plans(base: str):
    plans = [Plan("full", RESUME + SAVE_EVERY_STEP),
             Plan("baseline", RESUME, config="debug_baseline.toml")]
    plans += [Plan(f"resume-{k}", resume_args(base, "full", k, RESUME)) for k in RESUME_STEPS]
    no_dl = ["--checkpoint.exclude_from_loading", "dataloader"]
    plans += [
        Plan("no-dataloader-2", resume_args(base, "full", 2, RESUME, *no_dl)),
        Plan("no-dataloader-6", resume_args(base, "full", 6, RESUME, *no_dl)),
        Plan("no-dataloader-no-scheduler-6", expect_error=True, args=resume_args(
            base, "full", 6, RESUME, "--checkpoint.exclude_from_loading", "dataloader,lr_scheduler")),
        Plan("other-bag-size", resume_args(base, "full", 4, RESUME, "--tst.bag_size", "2"),
             expect_error=True),
        Plan("other-fraction", resume_args(base, "full", 4, RESUME, "--tst.superposition_fraction", "0.25"),
             expect_error=True),
        # A new run from step-6 weights only: step 0, so phase 1 again.
        Plan("from-weights", ["--training.steps", "4", "--tst.superposition_fraction", "0.5",
                              "--checkpoint.enable", "--checkpoint.load_only",
                              "--checkpoint.initial_load_path", os.path.join(base, "full", "checkpoint", "step-6")],
             spy=True),
        Plan("nan", ["--training.steps", "3", "--optimizer.lr", "1e30"], expect_error=True),
    ]
    return [(plans, 1)]


def one_process_family(tmp_path_factory) -> Results:
    return family("one_process", tmp_path_factory, _one_process_plans)


def _fsdp_plans(base: str):
    plans = [Plan("full", RESUME_FSDP + SAVE_EVERY_STEP)]
    plans += [Plan(f"resume-{k}", resume_args(base, "full", k, RESUME_FSDP)) for k in RESUME_STEPS]
    plans.append(Plan("no-dataloader-4", resume_args(
        base, "full", 4, RESUME_FSDP, "--checkpoint.exclude_from_loading", "dataloader")))
    return [(plans, 2)]


def fsdp_family(tmp_path_factory) -> Results:
    return family("fsdp", tmp_path_factory, _fsdp_plans)


#: Documents of 1-3 words (1-3 tokens each); a few empty ones the store must count as skipped.
def short_documents(n: int = 1000, empty: int = 5) -> list[str]:
    import random

    words = ["cat", "dog", "the", "a", "tree", "sun", "red", "blue", "run", "sat", "on", "mat"]
    rng = random.Random(0)
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 3))) for _ in range(n)]
    for i in range(empty):
        docs[i * 97] = ""
    return docs


def _twin_plans(base: str):
    from tst_titan.store import build_store

    short = os.path.join(base, "stores", "short_docs")
    build_store(short, short_documents(), vocab_size=2048)
    # enough text for a next-token sample (33 tokens), not for one phase-1 sample (4 x 33)
    tiny = os.path.join(base, "stores", "tiny")
    build_store(tiny, ["one two three four five six seven"] * 2 + ["eight nine ten eleven"] * 3
                + ["twelve thirteen", "fourteen"], vocab_size=2048, val_fraction=0.0)
    empty = os.path.join(base, "stores", "empty_folder")
    os.makedirs(empty)
    store = ["--training.dataset", "store", "--training.dataset_path"]
    plans = [
        # the same configs as the one-process family's, in another process: determinism
        Plan("full", RESUME + SAVE_EVERY_STEP),
        Plan("baseline", RESUME, config="debug_baseline.toml"),
        Plan("qwen3", ["--model.name", "tst_qwen3", "--training.steps", "4",
                       "--tst.superposition_fraction", "0.5", "--checkpoint.enable",
                       "--checkpoint.interval", "100"]),
        # 1-3-token documents; a small corpus, so phase 1 (4 steps x 8 samples x 132 tokens)
        # runs out of text: new epochs
        Plan("short-docs", [*store, short, "--model.hf_assets_path", short, "--training.local_batch_size", "8",
                            "--tst.superposition_fraction", "0.5", "--validation.no-enable",
                            "--metrics.enable-tensorboard"]),
        Plan("too-small", [*store, tiny, "--model.hf_assets_path", tiny], expect_error=True),
        Plan("missing-store", [], expect_error=True,
             set_config={"training.dataset": "store",
                         "training.dataset_path": os.path.join(base, "stores", "no_such_store")}),
        Plan("empty-folder", [], expect_error=True,
             set_config={"training.dataset": "folder", "training.dataset_path": empty}),
        Plan("validation-steps", ["--validation.steps", "100000"], expect_error=True),
    ]
    return [(plans, 1)]


def twin_family(tmp_path_factory) -> Results:
    return family("twins", tmp_path_factory, _twin_plans)
