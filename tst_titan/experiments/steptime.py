"""Step time and memory of TST, measured where it matters: torchtitan's own ``Trainer.train_step``
(data loading, forward, loss, backward, gradient clipping, optimizer and scheduler steps), the
library of ``python -m tst_titan.tools.steptime``.

One trainer, one process, the variants interleaved step by step so that whatever else the machine
does (the CPU machines are shared and noisy) falls on all of them alike:

* ``phase1``: a TST phase-1 step: ``[B, L, s]`` bags, the bag loss (the chunked kernel of
  :mod:`tst_titan.method.loss`);
* ``phase2``: a next-token step of the same run, torchtitan's own cross-entropy: exactly what a
  baseline step (``[tst] enable = false``) executes, so ``phase2`` *is* the baseline's step; its
  time measured twice (``phase2`` and ``baseline``, separate streams of the same data kind) is the
  control: their ratio must be 1 within the noise;
* ``next_token_chunked``: a next-token step through the chunked kernel at s = 1
  (:func:`tst_titan.method.loss.chunked_cross_entropy`).

Two ratios follow. ``tst_step_ratio`` = phase1 / next_token_chunked compares like with like: the
same loss kernel, only TST's bags differ. ``kernel_gain`` = baseline / next_token_chunked is the
kernel's own effect (torchtitan's fp32 cross-entropy makes a ``[B·L, V]`` fp32 copy of the logits;
the chunked kernel does not), reported apart so that it is not mistaken for TST's. The phase-1
step against the baseline as users run it (``phase1`` / ``baseline``) is reported too.

Every variant runs ``warmup`` untimed steps, then ``steps`` timed ones; the report gives median and
interquartile range per variant, and the peak tensor memory of one step of each.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterator

import torch
from torchtitan.config import ConfigManager
from torchtitan.train import Trainer

from tst_titan.components.data_source import store_dir_of
from tst_titan.components.dataloader import TokenWindowDataset
from tst_titan.datastore.store import TokenStore
from tst_titan.experiments.bench import peak_memory_bytes
from tst_titan.experiments.runner import free_port
from tst_titan.method.loss import chunked_cross_entropy
from tst_titan.method.schedule import PhaseSchedule
from tst_titan.train_spec import flavors_of, register

#: The variants, in the order each round runs them.
VARIANTS = ("phase1", "phase2", "baseline", "next_token_chunked")


def _batches(store: TokenStore, bag_size: int, seq_len: int, batch: int, offset: int) -> Iterator:
    """(input dict, labels) batches as torchtitan's dataloader collates them: ``[B, L, s]`` bags
    (bag_size > 1) or ``[B, L]`` tokens; ``offset`` samples skipped, so that streams differ."""
    schedule = PhaseSchedule(bag_size=bag_size, switch_step=10**9, seq_len=seq_len,
                             samples_per_step=batch, dp_world_size=1)
    if bag_size == 1:
        schedule = PhaseSchedule.plain(seq_len, batch, 1)
    samples = iter(TokenWindowDataset(store, schedule, 0))
    for _ in range(offset):
        next(samples)
    while True:
        inputs, labels = zip(*[next(samples) for _ in range(batch)])
        yield {"input": torch.stack([x["input"] for x in inputs])}, torch.stack(labels)


def quartiles(values: list[float]) -> dict:
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": median, "q1": q1, "q3": q3, "iqr": q3 - q1, "n": len(values)}


def _ensure_process_group_env() -> None:
    # torchtitan's Trainer initialises torch.distributed from the environment (as torchrun sets it)
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_WORLD_SIZE", "1"),
                       ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def measure(config_file: str, overrides: list[str] = (), steps: int = 100, warmup: int = 5) -> dict:
    """Time ``steps`` interleaved train steps of every variant (after ``warmup`` each) of the TST
    config ``config_file`` (+ torchtitan ``overrides``) in this process. One data-parallel rank,
    gradient accumulation as configured."""
    if steps < 4 or warmup < 1:
        raise ValueError(f"steps must be >= 4 (quartiles) and warmup >= 1, got steps={steps}, warmup={warmup}")
    _ensure_process_group_env()
    register()
    job_config = ConfigManager().parse_args(["--job.config_file", config_file, *overrides,
                                             "--metrics.log_freq", str(10**9), "--checkpoint.no-enable",
                                             "--validation.no-enable", "--metrics.no-enable-tensorboard"])
    tst = job_config.tst
    if not tst.enable or tst.bag_size < 2 or tst.mode != "full":
        raise ValueError("the step-time measurement needs a TST config with tst.enable = true, "
                         f"tst.bag_size >= 2 and tst.mode = 'full'; got enable={tst.enable}, "
                         f"bag_size={tst.bag_size}, mode={tst.mode!r}")
    trainer = Trainer(job_config)
    # The timed steps are not the run's own steps (their data comes from the streams below): no
    # metrics logging, which would also check the run's data position against its step count.
    trainer.metrics_processor.should_log = lambda step: False
    try:
        training = job_config.training
        vocab = flavors_of(job_config.model.name)[job_config.model.flavor].vocab_size
        store = TokenStore(store_dir_of(job_config, vocab), "train")
        batch = training.local_batch_size
        stock_loss = trainer.loss_fn
        streams = {
            "phase1": (_batches(store, tst.bag_size, training.seq_len, batch, 0), stock_loss),
            "phase2": (_batches(store, 1, training.seq_len, batch, 0), stock_loss),
            "baseline": (_batches(store, 1, training.seq_len, batch, 7), stock_loss),
            "next_token_chunked": (_batches(store, 1, training.seq_len, batch, 13), chunked_cross_entropy),
        }
        cuda = trainer.device.type == "cuda"

        def one_step(name):
            data, loss_fn = streams[name]
            trainer.loss_fn = loss_fn
            trainer.train_step(data)
            if cuda:
                torch.cuda.synchronize()

        times = {name: [] for name in VARIANTS}
        for round_ in range(warmup + steps):
            for name in VARIANTS:
                start = time.perf_counter()
                one_step(name)
                if round_ >= warmup:
                    times[name].append(time.perf_counter() - start)
        model, optimizer = trainer.model_parts[0], trainer.optimizers
        memory = {name: peak_memory_bytes(lambda name=name: one_step(name), model, *optimizer.optimizers)
                  for name in VARIANTS}
        trainer.loss_fn = stock_loss
    finally:
        trainer.close()
    stats = {name: quartiles(values) for name, values in times.items()}

    def ratio(a, b):
        return stats[a]["median"] / stats[b]["median"]

    return {
        "config": config_file,
        "overrides": list(overrides),
        "model": {"name": job_config.model.name, "flavor": job_config.model.flavor},
        "device": trainer.device.type,
        "bag_size": tst.bag_size,
        "local_batch_size": batch,
        "seq_len": training.seq_len,
        "warmup_steps_each": warmup,
        "step_s": stats,
        "peak_memory_bytes": memory,
        "tst_step_ratio": ratio("phase1", "next_token_chunked"),
        "phase1_vs_baseline": ratio("phase1", "baseline"),
        "kernel_gain": ratio("baseline", "next_token_chunked"),
        "control_phase2_vs_baseline": ratio("phase2", "baseline"),
        "tst_memory_ratio": memory["phase1"] / memory["next_token_chunked"],
        "phase1_vs_baseline_memory": memory["phase1"] / memory["baseline"],
        "kernel_memory_gain": memory["baseline"] / memory["next_token_chunked"],
        "notes": "train_step of torchtitan's Trainer, data loading included; variants interleaved "
                 "round by round; peak tensor memory of one step (CUDA allocator, or torch's "
                 "MemTracker on CPU) including parameters, gradients and optimizer state",
    }


def write(result: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
