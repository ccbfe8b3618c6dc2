"""Metrics that stay honest across the phase switch, and ``metrics.jsonl``.

torchtitan counts ``labels.numel()`` as tokens, so in phase 1 (labels ``[B, L, s]``) its
throughput and MFU read s times high although the model processes the same L positions per sample.
Here rates count *positions* (what the FLOPs are spent on), and each logged step also records the
raw text tokens read, the positions and the FLOPs so far.

``<dump_folder>/metrics.jsonl`` gets one JSON object per logged step (rank 0):
``step, phase, epoch, loss, val_loss (when computed), lr, grad_norm, raw_tokens_seen,
positions_seen, flops_seen, wall_time_s, data_loading_pct`` — ``epoch`` counts passes over the
training split (0 until the corpus runs out), ``wall_time_s`` counts from the start of this
process's training, ``data_loading_pct`` is torchtitan's share of time spent waiting for data
since the previous logged step (training rows only).
TensorBoard gets the same numbers under ``tst/``.

Guards (no host sync: they read Python numbers torchtitan already has):

* a non-finite training loss (checked at every logged step, i.e. every ``metrics.log_freq``) or
  validation loss stops the run with ``FloatingPointError`` naming the step and the phase
  (torchtitan 0.2.2 itself trains on silently);
* after every step the training data must have served exactly ``step x samples per step`` samples
  (:meth:`tst_titan.components.run_context.TrainingRun.check_position`), so the phase always
  follows the step.

``<dump_folder>/tst_run.json`` records the job config and the model args the run was built with
(``python -m tst_titan.tools.export`` reads it). Both file names and the reader are in
``tst_titan.run_files``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any

import torch
from torchtitan.components.metrics import MetricsProcessor

from tst_titan.components.dataloader import phase_schedule
from tst_titan.components.run_context import training_run_of
from tst_titan.run_files import METRICS_FILE, RUN_FILE


def _is_writer_rank() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def check_finite(value: float, what: str, step: int, phase: int) -> None:
    """Stop the run on a NaN/inf loss, naming the step and the TST phase."""
    if not math.isfinite(value):
        raise FloatingPointError(f"[tst] non-finite {what} {value} at step {step} (phase {phase})")


def write_run_file(job_config, model_args) -> None:
    """Record the job config and model args of a run in its dump folder (``RUN_FILE``)."""
    record = {
        "job_config": job_config.to_dict(),
        "model_args": dataclasses.asdict(model_args) if dataclasses.is_dataclass(model_args) else None,
    }
    path = os.path.join(job_config.job.dump_folder, RUN_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1, default=str)
    os.replace(path + ".tmp", path)


class TSTMetricsProcessor(MetricsProcessor):
    def __init__(self, job_config, parallel_dims, tag: str | None = None, model_args=None):
        super().__init__(job_config, parallel_dims, tag)
        # Built after the dataloader by torchtitan's Trainer: the run it belongs to (epoch, position).
        self.run = training_run_of(job_config, "metrics processor")
        dp_degree = parallel_dims.dp_replicate * parallel_dims.dp_shard
        self.schedule = phase_schedule(job_config, dp_degree)
        self.local_batch_size = job_config.training.local_batch_size
        self.jsonl_path = os.path.join(job_config.job.dump_folder, METRICS_FILE)
        self._pending: dict[str, Any] | None = None
        self._start = time.perf_counter()
        if _is_writer_rank():
            os.makedirs(job_config.job.dump_folder, exist_ok=True)
            write_run_file(job_config, model_args)

    # -- what a step did --------------------------------------------------------------------
    def step_record(self, step: int) -> dict[str, Any]:
        positions = step * self.schedule.global_positions_per_step()
        return {
            "step": step,
            "phase": self.schedule.phase_of_step(step),
            "epoch": self.run.epoch,
            "raw_tokens_seen": self.schedule.raw_tokens_seen(step),
            "positions_seen": positions,
            "flops_seen": float(self.num_flops_per_token) * positions,
            "wall_time_s": round(time.perf_counter() - self._start, 4),
        }

    def _validation_due(self, step: int) -> bool:
        val = self.job_config.validation
        return bool(val.enable) and (step == 1 or step % val.freq == 0)

    def _write(self, row: dict[str, Any]) -> None:
        if _is_writer_rank():
            with open(self.jsonl_path, "a") as f:
                f.write(json.dumps(row) + "\n")

    # -- torchtitan hooks -------------------------------------------------------------------
    def should_log(self, step: int) -> bool:
        # Called by the trainer after every optimizer step: a cheap check (Python ints) that the
        # data served so far matches the step, e.g. after a resume.
        self.run.check_position(step)
        return super().should_log(step)

    def log(self, step, global_avg_loss, global_max_loss, grad_norm, extra_metrics=None):
        check_finite(float(global_avg_loss), "loss", step, self.schedule.phase_of_step(step))
        # One data_loading_times entry per microbatch since the last log (validation adds none):
        # count this rank's positions from that, not from labels.numel() (s times high in phase 1).
        microbatches = len(self.data_loading_times)
        self.ntokens_since_last_log = microbatches * self.local_batch_size * self.schedule.seq_len
        # torchtitan's time_metrics/data_loading(%), kept in the row (super().log clears the times)
        loading_pct = 100 * sum(self.data_loading_times) / max(time.perf_counter() - self.time_last_log, 1e-9)
        record = self.step_record(step)
        extra = dict(extra_metrics or {})
        extra.update({f"tst/{k}": v for k, v in record.items() if k != "step" and v is not None})
        super().log(step, global_avg_loss, global_max_loss, grad_norm, extra_metrics=extra)

        row = dict(record, loss=float(global_avg_loss), lr=float(extra.get("lr", float("nan"))),
                   grad_norm=float(grad_norm), data_loading_pct=round(loading_pct, 3))
        self._flush()
        if self._validation_due(step):
            self._pending = row  # completed by log_validation of the same step
        else:
            self._write(row)

    def log_validation(self, loss, step, extra_metrics=None):
        check_finite(float(loss), "validation loss", step, self.schedule.phase_of_step(step))
        super().log_validation(loss, step, extra_metrics)
        # torchtitan restarts the throughput timer here but keeps the microbatches' data-loading
        # times; after an evaluation between two logged steps the next rate would then count the
        # microbatches before the evaluation over the time after it. Start the interval here too.
        self.data_loading_times.clear()
        if self._pending is not None and self._pending["step"] == step:
            row, self._pending = self._pending, None
        else:
            self._flush()
            row = self.step_record(step)
        row["val_loss"] = float(loss)
        self._write(row)

    def _flush(self) -> None:
        if self._pending is not None:
            self._write(self._pending)
            self._pending = None

    def close(self):
        self._flush()
        super().close()


def build_tst_metrics_processor(job_config, parallel_dims, model_args=None, tag=None):
    return TSTMetricsProcessor(job_config, parallel_dims, tag, model_args=model_args)
