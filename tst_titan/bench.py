"""``python -m tst_titan.bench``: does TST beat its baseline at matched FLOPs? Measured on this machine.

Commands (each prints a table and writes JSON, and a plot where it has one):

* ``python -m tst_titan.bench [--quick] [--corpus DIR]`` — tunes the baseline's learning rate on a
  small grid, trains the TST run (N steps) and the baseline (up to K·N steps) through the stock
  torchtitan entry point, and reports the speedup to TST's final next-token validation loss in
  steps and wall-clock, losses at equal steps/FLOPs, tokens read, phase-1 vs baseline step time and
  memory (interleaved in one process), data-loading share and token-store speed.
* ``python -m tst_titan.bench regime`` — where does TST start to pay? Baseline/TST pairs over
  training tokens per parameter (≲1 … ≥150), each compared at equal FLOPs.
* ``python -m tst_titan.bench loss`` — ``bag_cross_entropy`` against one cross-entropy and against s
  separate cross-entropies, time and peak memory, over s and vocab sizes.

Runs are subprocesses of ``python -m torchtitan.train`` (one process, gloo on CPU), so what is
measured is what a user runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace

from tst_titan.compare import curve, format_speedup, matched_loss_speedup, value_at

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CONFIG = os.path.join(ROOT, "train_configs", "debug_tst.toml")


# -- what is compared -------------------------------------------------------------------------
@dataclass
class BenchSetup:
    flavor: str = "tiny"
    seq_len: int = 128
    batch: int = 16
    steps: int = 1200  # N: the TST run's length
    bag_size: int = 4
    superposition_fraction: float = 0.3
    k: float = 3.0  # the baseline runs up to k·N steps
    lr_grid: tuple = (3e-3, 6e-3, 1.2e-2)
    warmup_fraction: float = 0.05
    val_every: int = 50
    val_steps: int = 32
    timing_steps: int = 30  # interleaved phase-1 / baseline steps for the step-time ratio
    dataset: str = "embedded"
    dataset_path: str | None = None
    model_name: str = "tst_llama3"

    def warmup(self) -> int:
        return max(1, round(self.warmup_fraction * self.steps))


# The default and quick comparisons sit where `bench regime` found TST ahead of its baseline on
# this kind of machine: the ~60 k-parameter "micro" llama3 trained on ~64 (default) or ~32 (quick)
# positions per parameter, on the large embedded corpus so that no text repeats.
DEFAULT = BenchSetup(flavor="micro", steps=1860, val_every=60, lr_grid=(3e-3, 6e-3, 1.2e-2, 2.4e-2),
                     dataset="embedded_large")
QUICK = BenchSetup(flavor="micro", steps=930, val_every=31, lr_grid=(6e-3, 1.2e-2), val_steps=16,
                   timing_steps=15, dataset="embedded_large")


def run_overrides(setup: BenchSetup, *, steps: int, lr: float, tst: bool) -> list[str]:
    """Command-line overrides of the debug config for one run. TST and baseline differ only in
    the [tst] keys (and the step count when the baseline runs longer)."""
    args = [
        "--model.name", setup.model_name,
        "--model.flavor", setup.flavor,
        "--training.dataset", setup.dataset,
        "--training.seq_len", str(setup.seq_len),
        "--training.local_batch_size", str(setup.batch),
        "--training.steps", str(steps),
        "--optimizer.lr", repr(lr),
        "--lr_scheduler.warmup_steps", str(setup.warmup()),
        "--lr_scheduler.decay_ratio", "0.1",
        "--validation.freq", str(setup.val_every),
        "--validation.steps", str(setup.val_steps),
        "--validation.seq_len", str(setup.seq_len),
        "--validation.local_batch_size", str(setup.batch),
        "--metrics.log_freq", str(setup.val_every),
        "--metrics.no-enable-tensorboard",
        "--checkpoint.enable", "--checkpoint.interval", "1000000000", "--checkpoint.last_save_model_only",
        "--tst.bag_size", str(setup.bag_size),
        "--tst.superposition_fraction", repr(setup.superposition_fraction),
        "--tst.enable" if tst else "--tst.no-enable",
    ]
    if setup.dataset == "embedded_large":  # prepared by prepare_data, then read as a store
        args[args.index("--training.dataset") + 1] = "store"
    if setup.dataset_path:
        args += ["--training.dataset_path", setup.dataset_path, "--model.hf_assets_path", setup.dataset_path]
    return args


# -- running torchtitan -----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def run_training(name: str, overrides: list[str], out_dir: str, steps: int,
                 progress: Progress | None = None, config: str = BASE_CONFIG, reuse: bool = False) -> dict:
    """Train one run in a fresh ``python -m torchtitan.train`` process; return its metrics rows,
    wall time and peak memory (from torchtitan's log). With ``reuse``, a run already finished in
    ``out_dir`` with the same settings is read back instead (resumable studies)."""
    from tst_titan.metrics import read_metrics

    dump = os.path.join(out_dir, name)
    record_path = os.path.join(dump, "bench_run.json")
    if reuse:
        done = _finished_run(record_path, overrides, config, steps)
        if done is not None:
            if progress:
                progress.done += steps
                print(f"[bench] {name:<16} reusing the finished run in {dump}", flush=True)
            return done
    shutil.rmtree(dump, ignore_errors=True)  # metrics.jsonl appends: start clean
    os.makedirs(dump)
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    cmd = [sys.executable, "-m", "torchtitan.train", "--job.config_file", config,
           "--job.dump_folder", dump, *overrides]
    log_path = os.path.join(dump, "train.log")
    seen = 0
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
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
              "config": config, "overrides": overrides, "steps": steps}
    with open(record_path, "w") as f:
        json.dump(record, f, indent=2)
    return dict(record, rows=read_metrics(dump))


def _finished_run(record_path: str, overrides: list[str], config: str, steps: int) -> dict | None:
    """A run this benchmark already finished with exactly these settings (or None)."""
    from tst_titan.metrics import read_metrics

    if not os.path.exists(record_path):
        return None
    with open(record_path) as f:
        record = json.load(f)
    if (record.get("overrides"), record.get("config"), record.get("steps")) != (overrides, config, steps):
        return None
    rows = read_metrics(os.path.dirname(record_path))
    if not rows or rows[-1]["step"] != steps or "val_loss" not in rows[-1]:
        return None
    return dict(record, rows=rows)


def _report_new_rows(dump, seen, name, steps, progress):
    path = os.path.join(dump, "metrics.jsonl")
    if not progress or not os.path.exists(path):
        return seen
    with open(path) as f:
        lines = f.read().splitlines()
    for line in lines[seen:]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            return seen  # a line being written: read it next time
        if "val_loss" in row:
            progress.line(name, row, steps)
        seen += 1
    return seen


# -- in-process measurements ------------------------------------------------------------------
def peak_memory_bytes(fn, *tracked) -> int:
    """Peak tensor memory of ``fn()`` (bytes): the CUDA allocator's peak, or on CPU the peak that
    torch's MemTracker counts (tensors alive at once, including ``tracked`` modules/optimizers'
    parameters, gradients and state). Counting tensors, not the process's resident set, keeps
    the figure free of allocator caching and of the other processes on the machine."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    if tracked:
        tracker.track_external(*tracked)
    with tracker:
        fn()
    return int(tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"])


def _build_model(model_name: str, flavor: str, seq_len: int, device):
    import torch

    from tst_titan.embedding import install_bag_embedding
    from tst_titan.specs import get_tst_train_spec

    spec = get_tst_train_spec(model_name)
    args = spec.model_args[flavor]
    args = replace(args, max_seq_len=seq_len) if hasattr(args, "max_seq_len") else args
    with torch.device(device):
        model = spec.model_cls(args)
    if device != "meta":
        with torch.no_grad():
            model.init_weights()
    install_bag_embedding(model)
    nparams, flops_per_position = args.get_nparams_and_flops(model, seq_len)
    return model, nparams, flops_per_position


def measure_step_times(setup: BenchSetup, store_dir: str) -> dict:
    """Phase-1 and baseline steps of the same model in the same process, interleaved: median time
    and peak memory of each (forward, bag/next-token loss, backward, AdamW step)."""
    import torch

    from tst_titan.data import PhaseSchedule, TokenWindowDataset
    from tst_titan.loss import bag_cross_entropy
    from tst_titan.store import TokenStore

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, _, _ = _build_model(setup.model_name, setup.flavor, setup.seq_len, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    store = TokenStore(store_dir, "train")

    def batches(s):
        sched = PhaseSchedule(True, s, 10**9, setup.seq_len, setup.batch, 1)
        it = iter(TokenWindowDataset(store, sched, 0))
        while True:
            xs, ys = zip(*[next(it) for _ in range(setup.batch)])
            yield torch.stack([x["input"] for x in xs]).to(device), torch.stack(ys).to(device)

    def step(x, y):
        loss = bag_cross_entropy(model(x), y) / y.numel()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    bag, plain = batches(setup.bag_size), batches(1)

    def next_batch(name):
        x, y = next(bag if name == "phase1" else plain)
        return (x, y) if name == "phase1" else (x[..., 0], y[..., 0])  # plain [B, L] batch

    times = {"phase1": [], "baseline": []}
    for i in range(setup.timing_steps + 3):  # 3 warm-up rounds, then interleaved timing
        for name in ("phase1", "baseline"):
            x, y = next_batch(name)
            t0 = time.perf_counter()
            step(x, y)
            if device == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                times[name].append(time.perf_counter() - t0)
    # Memory: one more step of each, measured separately (tracking slows the step down).
    memory = {}
    for name in ("phase1", "baseline"):
        x, y = next_batch(name)
        memory[name] = peak_memory_bytes(lambda: step(x, y), model, opt)
    p1, base = statistics.median(times["phase1"]), statistics.median(times["baseline"])
    return {
        "phase1_step_s": p1, "baseline_step_s": base, "step_time_ratio": p1 / base,
        "phase1_peak_memory_bytes": memory["phase1"], "baseline_peak_memory_bytes": memory["baseline"],
        "peak_memory_ratio": memory["phase1"] / memory["baseline"],
        "steps_timed_each": setup.timing_steps, "bag_size": setup.bag_size,
        "memory_note": "peak tensor memory of one training step incl. parameters, gradients and "
                       "AdamW state (CUDA allocator / torch MemTracker on CPU)",
    }


def measure_loader(store_dir: str, seq_len: int = 2048, bag_size: int = 16, samples: int = 64) -> dict:
    """Tokens per second the token store + phase-1 dataset serve to one rank (s = 16)."""
    from tst_titan.data import PhaseSchedule, TokenWindowDataset
    from tst_titan.store import TokenStore

    store = TokenStore(store_dir, "train")
    seq_len = min(seq_len, len(store) // (bag_size * 4) - 1)
    sched = PhaseSchedule(True, bag_size, 10**9, seq_len, 1, 1)
    it = iter(TokenWindowDataset(store, sched, 0))
    next(it)
    t0 = time.perf_counter()
    for _ in range(samples):
        next(it)
    dt = time.perf_counter() - t0
    tokens = samples * bag_size * (seq_len + 1)
    return {"tokens_per_s": tokens / dt, "bag_size": bag_size, "seq_len": seq_len, "samples": samples}


def data_loading_share(setup: BenchSetup, out_dir: str, bag_size: int = 16, steps: int = 60) -> float:
    """Median data_loading(%) of phase-1 steps of a short s = 16 run (first 10 steps excluded)."""
    s = replace(setup, bag_size=bag_size, superposition_fraction=0.9, steps=steps, val_every=steps)
    overrides = run_overrides(s, steps=steps, lr=1e-3, tst=True) + ["--metrics.log_freq", "5"]
    run = run_training("data_loading_s16", overrides, out_dir, steps)
    pct = [r["data_loading_pct"] for r in run["rows"] if r["phase"] == 1 and r["step"] > 10
           and "data_loading_pct" in r]
    return statistics.median(pct)


# -- the main benchmark -----------------------------------------------------------------------
def _final_val(rows) -> float:
    return curve(rows)[-1][1]


def _versions() -> dict:
    import torch
    import torchtitan

    import tst_titan

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchtitan": torchtitan.__version__, "tst_titan": tst_titan.__version__,
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def default_store(vocab: int, large: bool) -> str:
    """Where the embedded corpus is cached: the stdlib alone, or ("large") the stdlib plus the
    installed packages' sources (~100 M tokens at vocab 512: enough not to repeat data)."""
    return os.path.join(ROOT, "data", f"embedded_large_v{vocab}" if large else f"embedded_v{vocab}")


def prepare_data(setup: BenchSetup) -> str:
    """Build the token store the runs will read (once), so timing excludes it."""
    from tst_titan import store
    from tst_titan.specs import get_tst_train_spec

    vocab = get_tst_train_spec(setup.model_name).model_args[setup.flavor].vocab_size
    if setup.dataset in ("embedded", "embedded_large"):
        large = setup.dataset == "embedded_large"
        path = setup.dataset_path or default_store(vocab, large)
        store.ensure_embedded_store(path, vocab_size=vocab, include_site_packages=large)
        return path
    if setup.dataset == "folder":
        path = os.path.join(setup.dataset_path, ".tst_store")
        store.ensure_folder_store(path, setup.dataset_path, vocab_size=vocab)
        return path
    return setup.dataset_path


def bench(setup: BenchSetup, out_dir: str, quiet: bool = False) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.perf_counter()
    store_dir = prepare_data(setup)
    if setup.dataset == "embedded_large":
        setup = replace(setup, dataset_path=store_dir)
    # Evaluate at the last step of every run: the evaluation interval must divide both lengths.
    setup = replace(setup, val_every=max(d for d in range(1, setup.val_every + 1) if setup.steps % d == 0))
    n = setup.steps
    long_steps = math.ceil(setup.k * n / setup.val_every) * setup.val_every
    progress = Progress(n * len(setup.lr_grid) + n + long_steps, quiet)

    # 1. The baseline's learning rate, chosen on the baseline alone (N steps, full schedule).
    grid = []
    for lr in setup.lr_grid:
        run = run_training(f"tune_lr{lr:g}", run_overrides(setup, steps=n, lr=lr, tst=False), out_dir, n, progress)
        grid.append({"lr": lr, "final_val_loss": _final_val(run["rows"]), "run": run})
    best = min(grid, key=lambda g: g["final_val_loss"])
    lr = best["lr"]
    baseline_n = best["run"]

    # 2. TST for N steps, the baseline for up to K·N steps: same LR, schedule shape and seed.
    tst = run_training("tst", run_overrides(setup, steps=n, lr=lr, tst=True), out_dir, n, progress)
    base = run_training("baseline", run_overrides(setup, steps=long_steps, lr=lr, tst=False), out_dir,
                        long_steps, progress)

    # 3. Step time and memory, phase 1 vs baseline, one process, interleaved; the loader; the
    #    share of a phase-1 step spent waiting for data at s = 16 (torchtitan's own metric).
    timing = measure_step_times(setup, store_dir)
    loader = measure_loader(store_dir)
    loader["phase1_data_loading_pct_s16"] = data_loading_share(setup, out_dir)

    result = summarize(setup, tst, base, baseline_n, grid, timing, loader)
    result["versions"] = _versions()
    result["total_wall_s"] = time.perf_counter() - t_start
    with open(os.path.join(out_dir, "bench.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(result, tst, base, os.path.join(out_dir, "bench.png"))
    return result


def summarize(setup, tst, base, baseline_n, grid, timing, loader) -> dict:
    n = setup.steps
    steps = matched_loss_speedup(tst["rows"], base["rows"], "step")
    wall = matched_loss_speedup(tst["rows"], base["rows"], "wall_time_s")
    flops = matched_loss_speedup(tst["rows"], base["rows"], "flops_seen")
    tst_final = curve(tst["rows"])[-1]
    base_curve = curve(base["rows"])
    last = {name: run["rows"][-1] for name, run in (("tst", tst), ("baseline", base))}
    return {
        "setup": asdict(setup),
        "learning_rate": {"chosen": grid and min(grid, key=lambda g: g["final_val_loss"])["lr"],
                          "grid": [{"lr": g["lr"], "final_val_loss": g["final_val_loss"]} for g in grid],
                          "rule": "lowest final val loss of an N-step baseline; used for both arms"},
        "speedup_to_tst_final_val_loss": {
            "steps": steps, "wall_clock": wall, "flops": flops,
            "steps_str": format_speedup(steps), "wall_clock_str": format_speedup(wall),
        },
        "final_val_loss": {
            "tst": tst_final[1],
            "baseline_at_equal_steps_same_run": value_at(base_curve, tst_final[0]),
            "baseline_n_steps_full_schedule": _final_val(baseline_n["rows"]),
            "baseline_at_end": base_curve[-1][1],
            "note": "TST and the N-step baseline spend equal FLOPs (same positions per step); the "
                    "K·N baseline at step N has not decayed its LR yet",
        },
        "raw_tokens_read": {k: v["raw_tokens_seen"] for k, v in last.items()},
        "positions": {k: v["positions_seen"] for k, v in last.items()},
        "flops": {k: v["flops_seen"] for k, v in last.items()},
        "wall_time_s": {k: v["wall_time_s"] for k, v in last.items()},
        "peak_memory_gib_process": {"tst": tst["peak_memory_gib"], "baseline": base["peak_memory_gib"]},
        "step_time": timing,
        "loader": loader,
        "commands": {"tst": tst["command"], "baseline": base["command"]},
        "switch_step": round(setup.superposition_fraction * n),
    }


def plot(result: dict, tst: dict, base: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    switch = result["switch_step"]
    for ax, x, label in ((axes[0], "flops_seen", "training FLOPs"), (axes[1], "wall_time_s", "wall-clock (s)")):
        for run, name, color in ((base, "baseline", "tab:gray"), (tst, "TST", "tab:red")):
            pts = curve(run["rows"], x)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, color=color)
        rows = [r for r in tst["rows"] if r["step"] >= switch and "val_loss" in r]
        if rows:
            ax.axvline(rows[0][x] if rows[0]["step"] == switch else _x_at_step(tst["rows"], switch, x),
                       color="tab:red", ls=":", label="TST switch")
        target = result["final_val_loss"]["tst"]
        ax.axhline(target, color="tab:red", lw=0.6, alpha=0.5)
        ax.set_xlabel(label)
        ax.set_ylabel("next-token validation loss")
        ax.legend()
    s = result["speedup_to_tst_final_val_loss"]
    fig.suptitle(f"TST s={result['setup']['bag_size']}, r={result['setup']['superposition_fraction']} "
                 f"vs baseline: {s['steps_str']} in steps, {s['wall_clock_str']} in wall-clock")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _x_at_step(rows, step, x):
    pts = [(r["step"], r[x]) for r in rows]
    return value_at([(float(a), float(b)) for a, b in pts], float(step)) or 0.0


def print_table(result: dict) -> None:
    s, f = result["speedup_to_tst_final_val_loss"], result["final_val_loss"]
    t = result["step_time"]
    lines = [
        ("speedup to TST's final val loss, steps", s["steps_str"]),
        ("speedup to TST's final val loss, wall-clock", s["wall_clock_str"]),
        ("final val loss TST (N steps)", f"{f['tst']:.4f}"),
        ("final val loss baseline, N steps, own schedule (equal FLOPs)", f"{f['baseline_n_steps_full_schedule']:.4f}"),
        ("val loss baseline long run at step N", _fmt(f["baseline_at_equal_steps_same_run"])),
        ("val loss baseline long run at its end", f"{f['baseline_at_end']:.4f}"),
        ("raw tokens read TST / baseline", f"{result['raw_tokens_read']['tst']:,} / {result['raw_tokens_read']['baseline']:,}"),
        ("phase-1 step time / baseline step time", f"{t['step_time_ratio']:.3f}"),
        ("phase-1 peak memory / baseline", f"{t['peak_memory_ratio']:.3f}"),
        ("token store, tokens/s to one rank (s=16)", f"{result['loader']['tokens_per_s'] / 1e6:.1f} M"),
        ("data loading, % of a phase-1 step (s=16)", f"{result['loader']['phase1_data_loading_pct_s16']:.2f}%"),
        ("learning rate (best baseline of grid)", f"{result['learning_rate']['chosen']:g}"),
    ]
    width = max(len(a) for a, _ in lines)
    print()
    for a, b in lines:
        print(f"  {a:<{width}}  {b}")
    print()


def _fmt(x):
    return "-" if x is None else f"{x:.4f}"


# -- regime: where does TST start to pay? -------------------------------------------------------
@dataclass
class RegimeSetup:
    flavor: str = "micro"
    seq_len: int = 128
    batch: int = 16
    tokens_per_param: tuple = (0.5, 2, 8, 32, 100, 200)
    bag_size: int = 4
    superposition_fraction: float = 0.3
    lr: float = 6e-3
    dataset_path: str = field(default_factory=lambda: default_store(512, large=True))
    vocab: int = 512
    include_site_packages: bool = True  # ~73 M tokens: enough not to repeat data at 200 tokens/param


def regime(setup: RegimeSetup, out_dir: str, quiet: bool = False) -> dict:
    """Equal-FLOPs TST/baseline pairs over training tokens (positions) per parameter."""
    from tst_titan import store
    from tst_titan.specs import get_tst_train_spec

    os.makedirs(out_dir, exist_ok=True)
    # A corpus big enough not to repeat: the stdlib plus installed packages' sources.
    store.ensure_embedded_store(setup.dataset_path, vocab_size=setup.vocab,
                                include_site_packages=setup.include_site_packages)
    _, nparams, _ = _build_model("tst_llama3", setup.flavor, setup.seq_len, "meta")
    del get_tst_train_spec
    per_step = setup.seq_len * setup.batch
    # Run lengths in multiples of 10 steps, so that the 10 evaluations of a run include its last step.
    plan = [(tp, max(20, 10 * round(tp * nparams / per_step / 10))) for tp in setup.tokens_per_param]
    progress = Progress(2 * sum(steps for _, steps in plan), quiet)
    bench_setup = BenchSetup(
        flavor=setup.flavor, seq_len=setup.seq_len, batch=setup.batch, bag_size=setup.bag_size,
        superposition_fraction=setup.superposition_fraction, dataset="store",
        dataset_path=setup.dataset_path, val_steps=32,
    )
    pairs = []
    for tp, steps in plan:
        s = replace(bench_setup, steps=steps, val_every=steps // 10)
        runs = {}
        for arm in ("baseline", "tst"):
            runs[arm] = run_training(f"tp{tp:g}_{arm}", run_overrides(s, steps=steps, lr=setup.lr, tst=arm == "tst"),
                                     out_dir, steps, progress, reuse=True)
        base_final, tst_final = _final_val(runs["baseline"]["rows"]), _final_val(runs["tst"]["rows"])
        last = runs["tst"]["rows"][-1]
        pairs.append({"tokens_per_param": steps * per_step / nparams, "steps": steps,
                      "baseline_val_loss": base_final, "tst_val_loss": tst_final,
                      "val_loss_difference": tst_final - base_final,
                      "flops": last["flops_seen"], "tst_raw_tokens": last["raw_tokens_seen"]})
    _iso_loss_speedups(pairs)
    crossover = _crossover(pairs)
    result = {"setup": asdict(setup), "parameters": nparams, "pairs": pairs, "crossover_tokens_per_param": crossover,
              "versions": _versions(),
              "speedup_rule": "FLOPs the baseline needs (log-log interpolation between the baselines' "
                              "final losses, each a full run with its own schedule) to reach TST's "
                              "final loss, divided by TST's FLOPs"}
    with open(os.path.join(out_dir, "regime.json"), "w") as f:
        json.dump(result, f, indent=2)
    _plot_regime(result, os.path.join(out_dir, "regime.png"))
    return result


def _iso_loss_speedups(pairs: list[dict]) -> None:
    base = sorted((p["flops"], p["baseline_val_loss"]) for p in pairs)
    for p in pairs:
        target, needed = p["tst_val_loss"], None
        for (c0, l0), (c1, l1) in zip(base, base[1:]):
            if l0 >= target >= l1 and l0 != l1:
                w = (l0 - target) / (l0 - l1)
                needed = math.exp(math.log(c0) + w * (math.log(c1) - math.log(c0)))
                break
        if needed is None and base and target >= base[0][1]:
            needed = base[0][0] if target == base[0][1] else None
        p["speedup"] = needed / p["flops"] if needed else None
        p["speedup_note"] = None if needed else (
            "TST loss below every baseline run" if target < base[-1][1] else "TST loss above every baseline run")


def _crossover(pairs: list[dict]) -> float | None:
    """Tokens per parameter where TST's val-loss difference changes sign (interpolated in log)."""
    pts = sorted((p["tokens_per_param"], p["val_loss_difference"]) for p in pairs)
    for (x0, d0), (x1, d1) in zip(pts, pts[1:]):
        if d0 > 0 >= d1:
            w = d0 / (d0 - d1)
            return math.exp(math.log(x0) + w * (math.log(x1) - math.log(x0)))
    return None


def _plot_regime(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = result["pairs"]
    xs = [p["tokens_per_param"] for p in pairs]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(xs, [p["val_loss_difference"] for p in pairs], "o-", color="tab:red")
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set_ylabel("val loss TST − baseline (equal FLOPs)")
    axes[1].plot(xs, [p["speedup"] if p["speedup"] else float("nan") for p in pairs], "o-", color="tab:blue")
    axes[1].axhline(1, color="k", lw=0.8)
    axes[1].set_ylabel("speedup (baseline FLOPs to TST's loss)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("training tokens (positions) per parameter")
    fig.suptitle(f"{result['parameters']:,}-parameter llama3, s={result['setup']['bag_size']}, "
                 f"r={result['setup']['superposition_fraction']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- loss: bag_cross_entropy vs the alternatives ------------------------------------------------
def loss_bench(bag_sizes=(1, 4, 6, 8, 16), vocabs=(2048, 32768, 131072), positions=1024,
               repeats=3, out_dir="outputs/bench_loss") -> dict:
    import torch
    import torch.nn.functional as F

    from tst_titan.loss import bag_cross_entropy

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32

    def one_ce(logits, labels):
        return F.cross_entropy(logits.flatten(0, 1).float(), labels[..., 0].flatten(), reduction="sum")

    def naive(logits, labels):
        lp = logits.flatten(0, 1).float().log_softmax(-1)
        return sum(F.nll_loss(lp, labels[..., i].flatten(), reduction="sum") for i in range(labels.shape[-1]))

    methods = {"bag_cross_entropy": bag_cross_entropy, "one_cross_entropy": one_ce, "naive_s_cross_entropies": naive}
    rows = []
    for vocab in vocabs:
        for s in bag_sizes:
            torch.manual_seed(0)
            base = torch.randn(1, positions, vocab, device=device, dtype=dtype)
            labels = torch.randint(0, vocab, (1, positions, s), device=device)
            row = {"vocab": vocab, "bag_size": s, "positions": positions}
            for name, fn in methods.items():
                times = []
                for _ in range(repeats + 1):
                    logits = base.clone().requires_grad_(True)
                    t0 = time.perf_counter()
                    fn(logits, labels).backward()
                    if device == "cuda":
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - t0)
                    del logits
                logits = base.clone().requires_grad_(True)
                peak = peak_memory_bytes(lambda: fn(logits, labels).backward())
                del logits
                row[f"{name}_s"] = statistics.median(times[1:])
                row[f"{name}_peak_bytes"] = peak
            row["time_vs_one_ce"] = row["bag_cross_entropy_s"] / row["one_cross_entropy_s"]
            row["time_vs_naive"] = row["bag_cross_entropy_s"] / row["naive_s_cross_entropies_s"]
            row["memory_vs_one_ce"] = row["bag_cross_entropy_peak_bytes"] / max(row["one_cross_entropy_peak_bytes"], 1)
            rows.append(row)
            print(f"[bench loss] V={vocab:>6} s={s:>2}: bag {row['bag_cross_entropy_s'] * 1e3:7.1f} ms "
                  f"({row['time_vs_one_ce']:.2f}x one CE, {row['time_vs_naive']:.2f}x naive), "
                  f"peak {row['bag_cross_entropy_peak_bytes'] / 2**20:6.0f} MiB "
                  f"(one CE {row['one_cross_entropy_peak_bytes'] / 2**20:6.0f}, naive "
                  f"{row['naive_s_cross_entropies_peak_bytes'] / 2**20:6.0f})", flush=True)
    result = {"device": device, "dtype": str(dtype), "rows": rows, "versions": _versions(),
              "memory_note": "peak tensor memory allocated by forward+backward (the logits' "
                             "gradient included, the logits themselves not)"}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench_loss.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


# -- command line -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in ("regime", "loss") else "compare"
    parser = argparse.ArgumentParser(prog=f"python -m tst_titan.bench{'' if command == 'compare' else ' ' + command}",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    if command == "compare":
        parser.add_argument("--quick", action="store_true", help="the ≤10-minute configuration")
        parser.add_argument("--corpus", help="a folder of text (txt/md/rst/py/jsonl, recursive) instead of the embedded corpus")
        parser.add_argument("--steps", type=int, help="N, the TST run's steps")
        parser.add_argument("--k", type=float, help="the baseline runs up to k·N steps")
        parser.add_argument("--bag-size", type=int)
        parser.add_argument("--fraction", type=float, help="superposition_fraction r")
        parser.add_argument("--lr-grid", help="comma-separated learning rates for the baseline tuning")
        parser.add_argument("--flavor", help="tst_llama3 flavor (default: micro)")
        parser.add_argument("--small-corpus", action="store_true",
                            help="the stdlib-only embedded corpus (~4 M tokens) instead of stdlib + "
                                 "installed packages (~100 M tokens, built once in ~2 minutes)")
        args = parser.parse_args(argv)
        setup = QUICK if args.quick else DEFAULT
        if args.small_corpus:
            setup = replace(setup, dataset="embedded")
        if args.corpus:
            if not os.path.isdir(args.corpus):
                parser.error(f"--corpus {args.corpus!r} is not a folder")
            setup = replace(setup, dataset="folder", dataset_path=os.path.abspath(args.corpus))
        for key, attr in (("steps", "steps"), ("k", "k"), ("bag_size", "bag_size"),
                          ("fraction", "superposition_fraction"), ("flavor", "flavor")):
            if getattr(args, key) is not None:
                setup = replace(setup, **{attr: getattr(args, key)})
        if args.lr_grid:
            try:
                setup = replace(setup, lr_grid=tuple(float(x) for x in args.lr_grid.split(",")))
            except ValueError:
                parser.error(f"--lr-grid must be comma-separated numbers, got {args.lr_grid!r}")
        if setup.steps < 10 or setup.k < 1:
            parser.error("--steps must be >= 10 and --k >= 1")
        out = args.out or os.path.join("outputs", "bench_quick" if args.quick else "bench")
        result = bench(setup, out, quiet=args.quiet)
        print_table(result)
        for name in ("tst", "baseline"):
            run = os.path.join(out, name)
            print(f"  {name:<8} metrics {run}/metrics.jsonl   checkpoints {run}/checkpoint   log {run}/train.log")
        print(f"wrote {out}/bench.json and {out}/bench.png")
    elif command == "regime":
        parser.add_argument("--tokens-per-param", help="comma-separated targets, e.g. 0.5,2,8,32,100,200")
        parser.add_argument("--lr", type=float)
        args = parser.parse_args(argv)
        setup = RegimeSetup()
        if args.tokens_per_param:
            setup = replace(setup, tokens_per_param=tuple(float(x) for x in args.tokens_per_param.split(",")))
        if args.lr:
            setup = replace(setup, lr=args.lr)
        out = args.out or os.path.join("outputs", "bench_regime")
        result = regime(setup, out, quiet=args.quiet)
        print(f"\n  {'tokens/param':>12} {'baseline':>9} {'TST':>9} {'TST-base':>9} {'speedup':>8}")
        for p in result["pairs"]:
            sp = f"{p['speedup']:.2f}x" if p["speedup"] else p["speedup_note"]
            print(f"  {p['tokens_per_param']:>12.1f} {p['baseline_val_loss']:>9.4f} {p['tst_val_loss']:>9.4f} "
                  f"{p['val_loss_difference']:>+9.4f} {sp:>8}")
        print(f"\n  crossover: {result['crossover_tokens_per_param']}\nwrote {out}/regime.json and {out}/regime.png")
    else:
        parser.add_argument("--positions", type=int, default=1024)
        parser.add_argument("--bag-sizes", default="1,4,6,8,16")
        parser.add_argument("--vocabs", default="2048,32768,131072")
        args = parser.parse_args(argv)
        loss_bench(tuple(int(x) for x in args.bag_sizes.split(",")), tuple(int(x) for x in args.vocabs.split(",")),
                   args.positions, out_dir=args.out or os.path.join("outputs", "bench_loss"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
