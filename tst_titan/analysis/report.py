"""Where a run's outputs are, and its final numbers (``python -m tst_titan.tools.report``)."""

from __future__ import annotations

import os

from tst_titan.run_files import METRICS_FILE, read_metrics


def summarize(run_dir: str) -> dict:
    """The last logged step and phase, final training and next-token validation losses, raw tokens
    read, and the paths of a dump folder's metrics, checkpoints and TensorBoard logs."""
    rows = read_metrics(run_dir)
    if not rows:
        raise ValueError(f"{run_dir}/metrics.jsonl has no rows")
    trained = [r for r in rows if "loss" in r]
    evaluated = [r for r in rows if "val_loss" in r]
    last = rows[-1]
    checkpoint_dir = os.path.join(run_dir, "checkpoint")
    return {
        "run": run_dir,
        "steps": last["step"],
        "phase_at_end": last["phase"],
        "final_loss": trained[-1]["loss"] if trained else None,
        "final_val_loss": evaluated[-1]["val_loss"] if evaluated else None,
        "raw_tokens_seen": last["raw_tokens_seen"],
        "flops_seen": last["flops_seen"],
        "wall_time_s": last["wall_time_s"],
        "metrics": os.path.join(run_dir, METRICS_FILE),
        "checkpoints": checkpoint_dir
        if os.path.isdir(checkpoint_dir) and os.listdir(checkpoint_dir) else None,
        "tensorboard": os.path.join(run_dir, "tb") if os.path.isdir(os.path.join(run_dir, "tb")) else None,
    }
