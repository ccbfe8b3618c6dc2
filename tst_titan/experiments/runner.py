"""Training runs in fresh ``python -m torchtitan.train`` processes, so that what is measured is what
a user runs: the one place that starts them (the benchmark, the sweep, the GPU check and the
notebooks' demo pair go through here). Processes run in the current directory."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time

import torch
import torchtitan

import tst_titan
from tst_titan.run_files import METRICS_FILE, read_metrics
from tst_titan.train_spec import config_path

#: The config the benchmark's and the sweep's runs start from; they differ by overrides.
BASE_CONFIG = config_path("debug_tst.toml")
#: What :func:`run_training` writes in a finished run's folder, and reads back to reuse it.
RUN_RECORD = "bench_run.json"
#: The package's parts a training process never imports (measurement, analysis, commands): editing
#: them does not change what a run trains, so it does not invalidate finished runs.
NOT_TRAINING_CODE = ("analysis", "evaluation", "experiments", "export", "tools")
PACKAGE_DIR = os.path.dirname(os.path.abspath(tst_titan.__file__))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for ``MASTER_PORT``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def versions() -> dict:
    """The software and machine a result was measured with."""
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchtitan": torchtitan.__version__, "tst_titan": tst_titan.__version__,
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


class Progress:
    """Per-evaluation progress lines with an ETA over the whole benchmark."""

    def __init__(self, total_steps: int, quiet: bool = False):
        self.total, self.done, self.quiet = total_steps, 0, quiet
        self.start = time.perf_counter()

    def line(self, name: str, row: dict, run_steps: int) -> None:
        if self.quiet:
            return
        finished = self.done + row["step"]
        elapsed = time.perf_counter() - self.start
        eta = elapsed / max(finished, 1) * (self.total - finished)
        val = f"val {row['val_loss']:.4f}" if "val_loss" in row else ""
        print(f"[bench] {name:<16} step {row['step']:>6}/{run_steps:<6} phase {row['phase']} "
              f"{val:<12} elapsed {elapsed / 60:5.1f} min  ETA {eta / 60:5.1f} min", flush=True)


def training_command(config: str, dump: str, overrides: list[str], *, torchrun: bool = False) -> list[str]:
    """``python -m torchtitan.train`` of ``config`` into ``dump`` with ``overrides``; with
    ``torchrun``, launched by ``torch.distributed.run`` on one local process."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"] if torchrun else []
    return [sys.executable, *launcher, "-m", "torchtitan.train", "--job.config_file", config,
            "--job.dump_folder", dump, *overrides]


def start_training(cmd: list[str], log, env: dict | None = None) -> subprocess.Popen:
    """Start ``cmd`` in the current directory, its output (stdout and stderr) into ``log``."""
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd())


def training_source_sha256(config: str, package_dir: str = PACKAGE_DIR) -> str:
    """A hash of everything that decides what a run trains besides its command line: the source of
    the package's training code (every ``.py`` file under ``package_dir`` outside
    :data:`NOT_TRAINING_CODE`, by relative path and content), the config file's content, and the
    torch and torchtitan versions. Two runs with the same overrides and this hash train the same
    thing; a run recorded with another hash was trained by other code and is not reused."""
    return _source_sha256(os.path.abspath(config), os.path.abspath(package_dir), torch.__version__,
                          torchtitan.__version__)


@functools.lru_cache(maxsize=None)
def _source_sha256(config: str, package_dir: str, *versions_: str) -> str:
    # cached: a study asks once per run, and the source does not change under a running study
    digest = hashlib.sha256("\0".join(versions_).encode())
    files = []
    for folder, dirs, names in os.walk(package_dir):
        rel = os.path.relpath(folder, package_dir)
        if rel == ".":
            dirs[:] = [d for d in dirs if d not in NOT_TRAINING_CODE]
        dirs.sort()
        files += [os.path.join(folder, n) for n in names if n.endswith(".py")]
    for path in sorted(files, key=lambda p: os.path.relpath(p, package_dir)):
        with open(path, "rb") as f:
            digest.update(f"\0{os.path.relpath(path, package_dir)}\0".encode() + f.read())
    with open(config, "rb") as f:
        digest.update(b"\0config\0" + f.read())
    return digest.hexdigest()


def run_settings(overrides: list[str], config: str, steps: int) -> dict:
    """What a run record must match for the run to be reused: the command line, the config, the
    length and :func:`training_source_sha256`."""
    return {"config": config, "overrides": overrides, "steps": steps,
            "source_sha256": training_source_sha256(config)}


def same_settings(record: dict, overrides: list[str], config: str, steps: int) -> bool:
    """Was the run of ``record`` (a run record) trained with these settings, by this code?"""
    want = run_settings(overrides, config, steps)
    return all(record.get(k) == v for k, v in want.items())


def run_training(name: str, overrides: list[str], out_dir: str, steps: int,
                 progress: Progress | None = None, config: str = BASE_CONFIG, reuse: bool = False) -> dict:
    """Train one run in a fresh ``python -m torchtitan.train`` process; return its metrics rows,
    wall time and peak memory (from torchtitan's log). With ``reuse``, a run already finished in
    ``out_dir`` with the same settings is read back instead (resumable studies)."""
    dump = os.path.join(out_dir, name)
    record_path = os.path.join(dump, RUN_RECORD)
    if reuse:
        done = finished_run(record_path, overrides, config, steps)
        if done is not None:
            if progress:
                progress.done += steps
                print(f"[bench] {name:<16} reusing the finished run in {dump}", flush=True)
            return done
    shutil.rmtree(dump, ignore_errors=True)  # metrics.jsonl appends: start clean
    os.makedirs(dump)
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    cmd = training_command(config, dump, overrides)
    log_path = os.path.join(dump, "train.log")
    seen = 0
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = start_training(cmd, log, env)
        while proc.poll() is None:
            time.sleep(1.0)
            seen = _report_new_rows(dump, seen, name, steps, progress)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-4000:]
        raise RuntimeError(f"run {name!r} failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    _report_new_rows(dump, seen, name, steps, progress)
    if progress:
        progress.done += steps
    with open(log_path) as f:
        log_text = f.read()
    memory = [float(m) for m in re.findall(r"memory:\s+([\d.]+)GiB", log_text)]
    record = {"name": name, "dump": dump, "process_wall_s": wall,
              "peak_memory_gib": max(memory) if memory else None, "command": cmd,
              **run_settings(overrides, config, steps)}
    with open(record_path, "w") as f:
        json.dump(record, f, indent=2)
    return dict(record, rows=read_metrics(dump))


def finished_run(record_path: str, overrides: list[str], config: str, steps: int) -> dict | None:
    """The run recorded at ``record_path`` if it finished with exactly these settings and was
    trained by this code (:func:`same_settings`), else None."""
    if not os.path.exists(record_path):
        return None
    with open(record_path) as f:
        record = json.load(f)
    if not same_settings(record, overrides, config, steps):
        return None
    rows = read_metrics(os.path.dirname(record_path))
    if not rows or rows[-1]["step"] != steps or "val_loss" not in rows[-1]:
        return None
    return dict(record, rows=rows)


def _report_new_rows(dump: str, seen: int, name: str, steps: int, progress: Progress | None) -> int:
    """Progress lines for the evaluations logged since the first ``seen`` rows; the rows seen now."""
    if not progress or not os.path.exists(os.path.join(dump, METRICS_FILE)):
        return seen
    try:
        rows = read_metrics(dump)
    except json.JSONDecodeError:
        return seen  # a line being written: read it next time
    for row in rows[seen:]:
        if "val_loss" in row:
            progress.line(name, row, steps)
    return len(rows)
