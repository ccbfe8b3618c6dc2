"""Run the stock torchtitan Trainer on the TST specs inside test processes.

``train(dump_folder, *overrides, world_size=N)`` parses ``train_configs/debug_tst.toml`` plus the
overrides exactly as ``python -m torchtitan.train`` does, runs it on N gloo processes (see
``tests/distributed.py``) and returns the rows of the run's ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import os

from tests.distributed import run_on_processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "train_configs")
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


def job_args(dump_folder: str, *overrides: str, config: str = "debug_tst.toml") -> list[str]:
    return [
        "--job.config_file", os.path.join(CONFIGS, config),
        "--job.dump_folder", dump_folder,
        "--training.dataset_path", EMBEDDED_STORE,
        "--model.hf_assets_path", EMBEDDED_STORE,
        *FAST,
        *overrides,
    ]


def _train_body(rank, world_size, args, spy_path):
    from torchtitan.config import ConfigManager
    from torchtitan.train import Trainer

    config = ConfigManager().parse_args(args)
    trainer = Trainer(config)
    shapes = []
    if spy_path:
        # Record what the loss sees per microbatch: the phase is visible as the label rank.
        loss_fn = trainer.loss_fn

        def spy(pred, labels):
            if pred.requires_grad:  # training microbatches only, not validation
                shapes.append(list(labels.shape))
            return loss_fn(pred, labels)

        trainer.loss_fn = spy
    try:
        if config.checkpoint.create_seed_checkpoint:
            trainer.checkpointer.save(curr_step=0, last_step=True)  # as torchtitan.train.main does
        else:
            trainer.train()
    finally:
        trainer.close()
    if spy_path:
        with open(f"{spy_path}.rank{rank}", "w") as f:
            json.dump(shapes, f)


def metrics_rows(dump_folder: str) -> list[dict]:
    with open(os.path.join(dump_folder, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def train(dump_folder: str, *overrides: str, world_size: int = 1, config: str = "debug_tst.toml",
          spy: bool = False):
    """Train; return metrics rows (and, with ``spy``, the label shapes each rank's loss saw)."""
    dump_folder = str(dump_folder)
    spy_path = os.path.join(dump_folder, "label_shapes") if spy else None
    os.makedirs(dump_folder, exist_ok=True)
    run_on_processes(_train_body, world_size, job_args(dump_folder, *overrides, config=config), spy_path)
    rows = metrics_rows(dump_folder)
    if not spy:
        return rows
    shapes = []
    for rank in range(world_size):
        with open(f"{spy_path}.rank{rank}") as f:
            shapes.append(json.load(f))
    return rows, shapes


def seed_checkpoint(dump_folder: str, *overrides: str) -> list[str]:
    """Save step-0 weights once; return the overrides that start a run from them. Runs on
    different numbers of processes initialise differently, so comparisons start from this."""
    dump_folder = str(dump_folder)
    os.makedirs(dump_folder, exist_ok=True)
    args = job_args(dump_folder, *overrides, "--checkpoint.enable", "--checkpoint.create_seed_checkpoint")
    run_on_processes(_train_body, 1, args, None)
    return ["--checkpoint.enable", "--checkpoint.initial_load_path",
            os.path.join(dump_folder, "checkpoint", "step-0"), "--checkpoint.interval", "100000"]


def losses(rows: list[dict]) -> list[float]:
    return [r["loss"] for r in rows if "loss" in r]
