"""One-GPU performance check of the paper configs: ``bash scripts/gpu_check.sh [--cpu-smoke]``.

Runs, each as its own ``torchrun`` with a time limit (460 s in all, so the check ends within 8
minutes even if every run hits its limit), on one GPU:

1. ``270m_tst``: ``train_configs/270m_tst.toml`` as configured (torch.compile, its float8 recipe,
   selective AC) on 1 GPU at 16 x 2048, 30 steps with r = 0.5: 15 bag steps, then 15 next-token
   steps, so both phases are timed;
2. ``270m_baseline``: its twin, same settings;
3. ``270m_baseline_bf16``: the baseline without the float8 converter (is float8 worth it here?);
4. ``debug_moe_gmm``: the tiny MoE with grouped GEMMs, bf16, compiled, TST;
5. ``debug_moe_gmm_float8``: the same with ``tst.quantize.grouped_mm.float8`` (unverified on GPU:
   a short time limit, and its status is recorded whatever happens).

Data: the embedded corpus store (``data/embedded_v2048``, built on first use in ~10 s; the
models keep their full vocabularies, so the logits and the loss cost what they cost in training).

Writes ``<out>/gpu_check.json``: per run the status, median step time per phase (steps after the
first ``warmup`` ones, so compilation is excluded), positions/s and text tokens/s (phase 1 reads s
tokens per position), peak reserved memory and torchtitan's MFU (parsed from the console log), the
final loss; and ratios (TST phase-1 step / baseline step, float8 / bf16 step). Each run's log is
kept next to it.

``--cpu-smoke`` runs the same mechanics on CPU in about a minute: tiny flavors, a few steps, no
float8, no compile (the tests run it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "train_configs")
STORE = os.path.join(ROOT, "data", "embedded_v2048")

_STEP_LINE = re.compile(
    r"step:\s*(?P<step>\d+)\s+loss:\s*(?P<loss>[-\d.naif]+)\s+grad_norm:\s*\S+\s+"
    r"memory:\s*(?P<mem>[\d.]+)GiB\((?P<mem_pct>[\d.]+)%\)\s+tps:\s*(?P<tps>[\d,]+)\s+"
    r"tflops:\s*(?P<tflops>[\d.,]+)\s+mfu:\s*(?P<mfu>[\d.]+)%"
)


@dataclass
class Run:
    name: str
    config: str
    overrides: list[str]
    timeout_s: int
    drop_converters: bool = False
    skip: str | None = None
    notes: list[str] = field(default_factory=list)


def plan(cpu_smoke: bool) -> list[Run]:
    data = ["--training.dataset", "store", "--training.dataset_path", STORE,
            "--model.hf_assets_path", STORE]
    common = [*data, "--metrics.log_freq", "1", "--metrics.disable_color_printing",
              "--metrics.no-enable-tensorboard", "--checkpoint.no-enable", "--validation.no-enable",
              "--lr_scheduler.warmup_steps", "5", "--tst.superposition_fraction", "0.5",
              "--parallelism.data_parallel_shard_degree", "1",
              "--parallelism.tensor_parallel_degree", "1", "--parallelism.expert_parallel_degree", "1"]
    if cpu_smoke:
        cpu = ["--compile.no-enable", "--activation_checkpoint.mode", "none",
               "--training.mixed_precision_param", "float32", "--comm.trace_buf_size", "0",
               "--training.steps", "4", "--training.seq_len", "32", "--validation.seq_len", "32",
               "--training.local_batch_size", "2", "--training.global_batch_size", "2"]
        dense = [*common, *cpu, "--model.flavor", "tiny"]
        moe = [*common, *cpu, "--model.flavor", "debug_moe"]
        return [
            Run("270m_tst", "270m_tst.toml", dense, 300, drop_converters=True),
            Run("270m_baseline", "270m_baseline.toml", dense, 300, drop_converters=True),
            Run("270m_baseline_bf16", "270m_baseline.toml", dense, 300, drop_converters=True,
                skip="cpu smoke: no float8, so it would repeat 270m_baseline"),
            Run("debug_moe_gmm", "debug_moe_tst.toml", moe, 300),
            Run("debug_moe_gmm_float8", "debug_moe_tst.toml", moe, 300,
                skip="cpu smoke: float8 grouped GEMMs need an SM89+ GPU"),
        ]
    dense = [*common, "--training.steps", "30", "--training.seq_len", "2048",
             "--validation.seq_len", "2048", "--training.local_batch_size", "16",
             "--training.global_batch_size", "16"]
    moe = [*common, "--model.flavor", "debug_moe_gmm", "--compile.enable",
           "--training.mixed_precision_param", "bfloat16", "--training.steps", "20",
           "--training.local_batch_size", "8", "--training.global_batch_size", "8"]
    return [
        Run("270m_tst", "270m_tst.toml", dense, 120),
        Run("270m_baseline", "270m_baseline.toml", dense, 120),
        Run("270m_baseline_bf16", "270m_baseline.toml", dense, 100, drop_converters=True),
        Run("debug_moe_gmm", "debug_moe_tst.toml", moe, 60),
        Run("debug_moe_gmm_float8", "debug_moe_tst.toml",
            [*moe, "--model.converters", "tst.quantize.grouped_mm.float8",
             "--quantize.grouped_mm.float8.fqns", "experts"], 60,
            notes=["unverified: a spike's first float8 grouped-GEMM step did not finish in 80 s"]),
    ]


def _config_without_converters(config: str, out_dir: str) -> str:
    """A copy of ``config`` without its ``[model] converters`` line (torchtitan has no override
    that empties a list)."""
    with open(os.path.join(CONFIGS, config)) as f:
        lines = [line for line in f if not line.lstrip().startswith("converters")]
    path = os.path.join(out_dir, f"no_float8_{config}")
    with open(path, "w") as f:
        f.writelines(lines)
    return path


def parse_log(text: str) -> list[dict]:
    rows = []
    for m in _STEP_LINE.finditer(text):
        rows.append({
            "step": int(m["step"]),
            "memory_gib": float(m["mem"]),
            "memory_pct": float(m["mem_pct"]),
            "tps": int(m["tps"].replace(",", "")),
            "mfu_pct": float(m["mfu"]),
        })
    return rows


def summarize(metrics_rows: list[dict], log_rows: list[dict], bag_size: int, warmup: int) -> dict:
    """Median step time per phase (from ``wall_time_s`` in metrics.jsonl), throughput, memory."""
    rows = sorted((r for r in metrics_rows if "loss" in r), key=lambda r: r["step"])
    out: dict = {"steps_logged": len(rows), "final_loss": rows[-1]["loss"] if rows else None}
    phases: dict = {}
    for prev, row in zip(rows, rows[1:]):
        if row["step"] != prev["step"] + 1 or row["step"] <= warmup or row["phase"] != prev["phase"]:
            continue
        positions = row["positions_seen"] - prev["positions_seen"]
        phases.setdefault(row["phase"], []).append((row["wall_time_s"] - prev["wall_time_s"], positions))
    out["phases"] = {}
    for phase, samples in sorted(phases.items()):
        step_s = statistics.median(t for t, _ in samples)
        positions = samples[0][1]
        s = bag_size if phase == 1 else 1
        out["phases"][str(phase)] = {
            "steps_timed": len(samples),
            "median_step_s": round(step_s, 5),
            "positions_per_s": round(positions / step_s, 1) if step_s > 0 else None,
            "text_tokens_per_s": round(s * positions / step_s, 1) if step_s > 0 else None,
        }
    if log_rows:
        out["peak_reserved_gib"] = max(r["memory_gib"] for r in log_rows)
        out["peak_reserved_pct"] = max(r["memory_pct"] for r in log_rows)
        timed = [r["mfu_pct"] for r in log_rows if r["step"] > warmup]
        out["median_mfu_pct"] = statistics.median(timed) if timed else None
    return out


def _bag_size(config_path: str, overrides: list[str]) -> int:
    import tomllib

    with open(config_path, "rb") as f:
        tst = tomllib.load(f).get("tst", {})
    if not tst.get("enable"):
        return 1
    if "--tst.bag_size" in overrides:
        return int(overrides[overrides.index("--tst.bag_size") + 1])
    return int(tst.get("bag_size", 1))


def execute(run: Run, out_dir: str, warmup: int) -> dict:
    record: dict = {"name": run.name, "config": run.config, "overrides": run.overrides, "notes": run.notes}
    if run.skip:
        return {**record, "status": "skipped", "reason": run.skip}
    dump = os.path.join(out_dir, run.name)
    os.makedirs(dump, exist_ok=True)
    config = (_config_without_converters(run.config, out_dir) if run.drop_converters
              else os.path.join(CONFIGS, run.config))
    if run.drop_converters:
        record["converters"] = "removed (bf16)"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           "-m", "torchtitan.train", "--job.config_file", config, "--job.dump_folder", dump,
           *run.overrides]
    log_path = os.path.join(dump, "train.log")
    start = time.perf_counter()
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=run.timeout_s, cwd=ROOT)
            status = "ok" if proc.returncode == 0 else "failed"
            record["returncode"] = proc.returncode
        except subprocess.TimeoutExpired:
            status = "timeout"
    record.update(status=status, wall_s=round(time.perf_counter() - start, 1), log=log_path,
                  timeout_s=run.timeout_s)
    with open(log_path, errors="replace") as f:
        text = f.read()
    metrics_path = os.path.join(dump, "metrics.jsonl")
    rows = []
    if os.path.isfile(metrics_path):
        with open(metrics_path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    record.update(summarize(rows, parse_log(text), _bag_size(config, run.overrides), warmup))
    if status != "ok":
        record["log_tail"] = text[-2000:]
    return record


def _ratio(a, b):
    return round(a / b, 3) if a and b else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny flavors, few steps, no float8/compile: the mechanics on CPU")
    parser.add_argument("--out", default=os.path.join(ROOT, "outputs", "gpu_check"), metavar="DIR")
    parser.add_argument("--only", nargs="*", default=None, metavar="RUN", help="run only these")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    from tst_titan.store import ensure_embedded_store

    ensure_embedded_store(STORE, vocab_size=2048)
    warmup = 1 if args.cpu_smoke else 5
    try:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        torch_version = torch.__version__
    except Exception:  # noqa: BLE001 - informative only
        device, torch_version = "unknown", "unknown"
    results = []
    for run in plan(args.cpu_smoke):
        if args.only is not None and run.name not in args.only:
            continue
        print(f"[gpu_check] {run.name} ...", file=sys.stderr, flush=True)
        results.append(execute(run, args.out, warmup))
        print(f"[gpu_check] {run.name}: {results[-1]['status']}", file=sys.stderr, flush=True)
    by_name = {r["name"]: r for r in results}

    def step(name, phase):
        return by_name.get(name, {}).get("phases", {}).get(phase, {}).get("median_step_s")

    report = {
        "mode": "cpu-smoke" if args.cpu_smoke else "gpu",
        "device": device,
        "torch": torch_version,
        "warmup_steps_excluded": warmup,
        "runs": results,
        "ratios": {
            "tst_phase1_step_over_baseline_step": _ratio(step("270m_tst", "1"), step("270m_baseline", "2")),
            "tst_phase2_step_over_baseline_step": _ratio(step("270m_tst", "2"), step("270m_baseline", "2")),
            "float8_step_over_bf16_step": _ratio(step("270m_baseline", "2"), step("270m_baseline_bf16", "2")),
        },
    }
    path = os.path.join(args.out, "gpu_check.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    print(path)
    failed = [r["name"] for r in results if r["status"] in ("failed", "timeout")]
    # The float8 grouped-GEMM run is exploratory: its failure is recorded, not fatal.
    return 1 if [n for n in failed if n != "debug_moe_gmm_float8"] else 0


if __name__ == "__main__":
    sys.exit(main())
