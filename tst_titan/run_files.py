"""The files a TST run writes in its dump folder, and the one reader of its metrics.

A leaf: imports nothing of tst_titan. ``tst_titan.components.metrics`` writes both files (rank 0);
the tools, the analysis helpers and the notebooks read them through this module.
"""

from __future__ import annotations

import json
import os
from typing import Any

#: One JSON object per logged step (see ``tst_titan.components.metrics``).
METRICS_FILE = "metrics.jsonl"

#: The job config and model args a run was built with, written at trainer start.
RUN_FILE = "tst_run.json"


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` (a file or a run's dump folder)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, METRICS_FILE)
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_run_file(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's ``tst_run.json`` record (``job_config``, ``model_args``), or None if absent."""
    path = os.path.join(os.fspath(run_dir), RUN_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
