"""Does TST beat its baseline at matched FLOPs? The library of ``python -m tst_titan.tools.bench``
besides its main study (the baseline frontier, :mod:`tst_titan.experiments.frontier`): one TST /
baseline pair for a quick look at the curves (:func:`bench`, ``bench pair``), where TST starts to
pay (:func:`regime`), and the bag loss against its alternatives (:func:`loss_bench`); the setup,
run overrides, data and output-folder helpers the frontier shares. Training runs go through
:mod:`tst_titan.experiments.runner`.

The pair's long baseline has not decayed its learning rate where it passes TST's final loss, so
the pair gives no speedup: its ratio of first-crossing step to N is reported as the biased figure it
is (``first_crossing_ratio_undecayed``); the speedup is the frontier's."""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch.distributed._tools.mem_tracker import MemTracker

from tst_titan.analysis.compare import curve, format_speedup, matched_loss_speedup, value_at
from tst_titan.analysis.runs import build_model
from tst_titan.components.dataloader import TokenWindowDataset
from tst_titan.datastore.build import ensure_store
from tst_titan.datastore.store import (CorpusMismatchError, TokenStore, check_same_corpus, corpus_record,
                                      read_manifest)
from tst_titan.experiments.runner import Progress, run_training, versions
from tst_titan.method.fused_loss import fused_bag_cross_entropy
from tst_titan.method.loss import bag_cross_entropy, bag_cross_entropy_reference
from tst_titan.method.schedule import PhaseSchedule, switch_step
from tst_titan.train_spec import flavors_of


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


# -- in-process measurements ------------------------------------------------------------------
def peak_memory_bytes(fn, *tracked) -> int:
    """Peak tensor memory of ``fn()`` (bytes): the CUDA allocator's peak, or on CPU the peak that
    torch's MemTracker counts (tensors alive at once, including ``tracked`` modules/optimizers'
    parameters, gradients and state). Counting tensors, not the process's resident set, keeps
    the figure free of allocator caching and of the other processes on the machine."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    tracker = MemTracker()
    if tracked:
        tracker.track_external(*tracked)
    with tracker:
        fn()
    return int(tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"])


def _build_model(model_name: str, flavor: str, seq_len: int, device):
    with torch.device(device):
        model = build_model(model_name, flavor, seq_len)
    if device != "meta":
        with torch.no_grad():
            model.init_weights()
    nparams, flops_per_position = flavors_of(model_name)[flavor].get_nparams_and_flops(model, seq_len)
    return model, nparams, flops_per_position


def measure_step_times(setup: BenchSetup, store_dir: str) -> dict:
    """Phase-1 and baseline steps of the same model in the same process, interleaved: median time
    and peak memory of each (forward, bag/next-token loss, backward, AdamW step)."""
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, _, _ = _build_model(setup.model_name, setup.flavor, setup.seq_len, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    store = TokenStore(store_dir, "train")

    def batches(s):
        sched = PhaseSchedule(bag_size=s, switch_step=10**9, seq_len=setup.seq_len,
                              samples_per_step=setup.batch, dp_world_size=1)
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
    store = TokenStore(store_dir, "train")
    seq_len = min(seq_len, len(store) // (bag_size * 4) - 1)
    sched = PhaseSchedule(bag_size=bag_size, switch_step=10**9, seq_len=seq_len, samples_per_step=1,
                          dp_world_size=1)
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


def default_store(vocab: int, large: bool) -> str:
    """Where the embedded corpus is cached: the stdlib alone, or ("large") the stdlib plus the
    pinned distributions' sources (``datastore.sources.CORPUS_DISTRIBUTIONS``; ~22 M tokens at
    vocab 512: enough not to repeat data)."""
    return os.path.abspath(os.path.join("data", f"embedded_pinned_v{vocab}" if large else f"embedded_v{vocab}"))


#: The file in a benchmark's output folder naming the corpus its runs trained on.
CORPUS_FILE = "corpus.json"


def claim_output_folder(out_dir: str, corpus: dict) -> None:
    """Make ``out_dir`` the folder of ``corpus``'s results (a :func:`corpus_record`), or refuse:
    results of another corpus are never replaced or mixed in (the runs of a folder are reused or
    overwritten by the next benchmark into it). A folder with results but no corpus record (made
    before they were recorded) is refused too."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, CORPUS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            there = json.load(f)
        try:
            check_same_corpus({f"the results in {out_dir}": there, "this benchmark": corpus})
        except CorpusMismatchError as e:
            raise CorpusMismatchError(
                f"{out_dir} holds results of another corpus ({e}). Not overwriting them: pass "
                "another output folder (--out) for this corpus, or delete that one"
            ) from None
        return
    if os.listdir(out_dir):
        raise CorpusMismatchError(
            f"{out_dir} holds results that do not record their corpus ({CORPUS_FILE} is missing: "
            "made before corpora were recorded, or not by a benchmark). Not overwriting them: pass "
            "another output folder (--out), or delete that one"
        )
    with open(path, "w") as f:
        json.dump(corpus, f, indent=2)


def prepare_data(setup: BenchSetup) -> str:
    """Build the token store the runs will read (once), so timing excludes it, and check that its
    held-out split holds the evaluation every run makes (:func:`check_validation_split`)."""
    vocab = flavors_of(setup.model_name)[setup.flavor].vocab_size
    if setup.dataset in ("embedded", "embedded_large"):
        large = setup.dataset == "embedded_large"
        path = setup.dataset_path or default_store(vocab, large)
        manifest = ensure_store(path, vocab, include_site_packages=large)
    elif setup.dataset == "folder":
        path = os.path.join(setup.dataset_path, ".tst_store")
        manifest = ensure_store(path, vocab, folder=setup.dataset_path)
    else:  # "store": a token store built elsewhere
        path = setup.dataset_path
        manifest = read_manifest(path)
        if manifest is None:
            raise ValueError(f"dataset 'store': dataset_path {path!r} holds no complete token store "
                             "(no manifest); build one with `python -m tst_titan.tools.prepare`")
    check_validation_split(manifest["splits"]["val"]["tokens"], setup, path)
    return path


def check_validation_split(val_tokens: int, setup: BenchSetup, store_dir: str) -> None:
    """Refuse, before any training, an evaluation that needs more held-out samples than the store's
    val split holds. torchtitan's validator (our ``build_validation_dataset``) would refuse it too,
    but only once the first run has started, and in a study after the runs before it."""
    window = setup.seq_len + 1  # a plain next-token sample, as the validator reads them
    available = val_tokens // window
    needed = setup.val_steps * setup.batch
    if needed > available:
        most = available // setup.batch
        remedy = (f"lower val_steps to at most {most}" if most >= 1 else
                  "lower batch or seq_len, or use a larger corpus")
        raise ValueError(
            f"val_steps = {setup.val_steps} x batch = {setup.batch} needs {needed} held-out samples of "
            f"seq_len + 1 = {window} tokens; the val split of {store_dir} has {val_tokens:,} tokens, "
            f"{available} samples: {remedy}")


def bench(setup: BenchSetup, out_dir: str, quiet: bool = False) -> dict:
    t_start = time.perf_counter()
    store_dir = prepare_data(setup)
    corpus = corpus_record(store_dir)
    claim_output_folder(out_dir, corpus)
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
    result["corpus_sha256"] = corpus["corpus_sha256"]
    result["corpus"] = corpus
    result["versions"] = versions()
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
        "first_crossing_ratio_undecayed": {
            "steps": _as_ratio(steps), "wall_clock": _as_ratio(wall), "flops": _as_ratio(flops),
            "steps_str": format_speedup(steps), "wall_clock_str": format_speedup(wall),
            "note": "where the K·N baseline first reaches TST's final val loss, over TST's N (steps, "
                    "wall-clock, FLOPs). Biased in TST's favour, not a speedup: the baseline's learning "
                    "rate has not decayed there, TST's has. The speedup against fully decayed baselines "
                    "is `bench` (the frontier)",
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
        "switch_step": switch_step(setup.superposition_fraction, n),
    }


def _as_ratio(crossing: dict) -> dict:
    """matched_loss_speedup's reading of the undecayed baseline, its ratio named for what it is."""
    return {("first_crossing_ratio" if k == "speedup" else k): v for k, v in crossing.items()}


def plot(result: dict, tst: dict, base: dict, path: str) -> None:
    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
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
    fig.suptitle(f"TST s={result['setup']['bag_size']}, r={result['setup']['superposition_fraction']} vs one "
                 "long baseline (its LR not decayed at step N: curves only, no speedup)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _x_at_step(rows, step, x):
    pts = [(r["step"], r[x]) for r in rows]
    return value_at([(float(a), float(b)) for a, b in pts], float(step)) or 0.0


def print_table(result: dict) -> None:
    s, f = result["first_crossing_ratio_undecayed"], result["final_val_loss"]
    t = result["step_time"]
    lines = [
        ("undecayed K·N baseline reaching TST's final val loss, step / N (biased)", s["steps_str"]),
        ("the same in wall-clock (biased, not a speedup: see `bench`)", s["wall_clock_str"]),
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
    include_site_packages: bool = True  # the pinned packages too: ~22 M tokens at vocab 512


def regime(setup: RegimeSetup, out_dir: str, quiet: bool = False) -> dict:
    """Equal-FLOPs TST/baseline pairs over training tokens (positions) per parameter."""
    # A corpus big enough not to repeat: the stdlib plus the pinned packages' sources.
    manifest = ensure_store(setup.dataset_path, setup.vocab, include_site_packages=setup.include_site_packages)
    corpus = corpus_record(setup.dataset_path)
    claim_output_folder(out_dir, corpus)
    _, nparams, _ = _build_model("tst_llama3", setup.flavor, setup.seq_len, "meta")
    per_step = setup.seq_len * setup.batch
    # Run lengths in multiples of 10 steps, so that the 10 evaluations of a run include its last step.
    plan = [(tp, max(20, 10 * round(tp * nparams / per_step / 10))) for tp in setup.tokens_per_param]
    progress = Progress(2 * sum(steps for _, steps in plan), quiet)
    bench_setup = BenchSetup(
        flavor=setup.flavor, seq_len=setup.seq_len, batch=setup.batch, bag_size=setup.bag_size,
        superposition_fraction=setup.superposition_fraction, dataset="store",
        dataset_path=setup.dataset_path, val_steps=32,
    )
    check_validation_split(manifest["splits"]["val"]["tokens"], bench_setup, setup.dataset_path)
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
              "corpus_sha256": corpus["corpus_sha256"], "corpus": corpus, "versions": versions(),
              "speedup_rule": "FLOPs the baseline needs (log-log interpolation between the baselines' "
                              "final losses, each a full run with its own schedule) to reach TST's "
                              "final loss, divided by TST's FLOPs"}
    with open(os.path.join(out_dir, "regime.json"), "w") as f:
        json.dump(result, f, indent=2)
    _plot_regime(result, os.path.join(out_dir, "regime.png"))
    return result


def print_regime_table(result: dict) -> None:
    print(f"\n  {'tokens/param':>12} {'baseline':>9} {'TST':>9} {'TST-base':>9} {'speedup':>8}")
    for p in result["pairs"]:
        sp = f"{p['speedup']:.2f}x" if p["speedup"] else p["speedup_note"]
        print(f"  {p['tokens_per_param']:>12.1f} {p['baseline_val_loss']:>9.4f} {p['tst_val_loss']:>9.4f} "
              f"{p['val_loss_difference']:>+9.4f} {sp:>8}")
    print(f"\n  crossover: {result['crossover_tokens_per_param']}")


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
    pairs = result["pairs"]
    xs = [p["tokens_per_param"] for p in pairs]
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
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


# -- loss: bag_cross_entropy vs the alternatives ------------------------------------------------
def loss_bench(bag_sizes=(1, 4, 6, 8, 16), vocabs=(2048, 32768, 131072), positions=1024,
               repeats=3, out_dir="outputs/bench_loss", hidden_dim=256) -> dict:
    """``bag_cross_entropy`` against one cross-entropy and against s separate ones: median time
    and peak memory of forward+backward over bag sizes and vocab sizes. Then, from hidden states
    ``[1, positions, hidden_dim]`` and an output weight ``[vocab, hidden_dim]``, the projection and
    the loss together: ``fused_bag_cross_entropy`` against a Linear followed by
    ``bag_cross_entropy`` and by ``bag_cross_entropy_reference``."""
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
            row.update(_projection_loss_row(vocab, s, positions, hidden_dim, repeats, device, dtype))
            rows.append(row)
            print(f"[bench loss] V={vocab:>6} s={s:>2}: bag {row['bag_cross_entropy_s'] * 1e3:7.1f} ms "
                  f"({row['time_vs_one_ce']:.2f}x one CE, {row['time_vs_naive']:.2f}x naive), "
                  f"peak {row['bag_cross_entropy_peak_bytes'] / 2**20:6.0f} MiB "
                  f"(one CE {row['one_cross_entropy_peak_bytes'] / 2**20:6.0f}, naive "
                  f"{row['naive_s_cross_entropies_peak_bytes'] / 2**20:6.0f})", flush=True)
            print(f"[bench loss] V={vocab:>6} s={s:>2}: fused projection+bag "
                  f"{row['fused_projection_bag_loss_s'] * 1e3:7.1f} ms "
                  f"({row['fused_time_vs_linear_bag']:.2f}x Linear+bag), peak "
                  f"{row['fused_projection_bag_loss_peak_bytes'] / 2**20:6.0f} MiB (Linear+bag "
                  f"{row['linear_bag_cross_entropy_peak_bytes'] / 2**20:6.0f}, Linear+reference "
                  f"{row['linear_reference_peak_bytes'] / 2**20:6.0f})", flush=True)
    result = {"device": device, "dtype": str(dtype), "rows": rows, "versions": versions(),
              "hidden_dim": hidden_dim,
              "memory_note": "peak tensor memory allocated by forward+backward (the logits' "
                             "gradient included, the logits themselves not)",
              "projection_note": "fused_projection_bag_loss / linear_bag_cross_entropy / linear_reference: "
                                 "projection of hidden [1, positions, hidden_dim] by the output weight "
                                 "[vocab, hidden_dim] plus the bag loss, forward+backward (gradients of "
                                 "hidden and weight); peak counts what they allocate (logits, their "
                                 "gradient, the two input gradients), not the inputs themselves; "
                                 "fused_loss_rel_diff = |fused - Linear+bag| / |Linear+bag|"}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench_loss.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def _projection_loss_row(vocab, s, positions, hidden_dim, repeats, device, dtype) -> dict:
    """Projection + bag loss, forward+backward: the fused kernel against Linear + the chunked bag
    loss and Linear + the plain reference (median time of ``repeats`` after a warm-up, peak memory)."""
    torch.manual_seed(0)
    hidden = torch.randn(1, positions, hidden_dim, device=device, dtype=dtype)
    weight = (torch.randn(vocab, hidden_dim, device=device) / hidden_dim**0.5).to(dtype)
    labels = torch.randint(0, vocab, (1, positions, s), device=device)
    methods = {
        "fused_projection_bag_loss": lambda h, w: fused_bag_cross_entropy(h, w, labels),
        "linear_bag_cross_entropy": lambda h, w: bag_cross_entropy(F.linear(h, w), labels),
        "linear_reference": lambda h, w: bag_cross_entropy_reference(F.linear(h, w), labels),
    }
    row, losses = {}, {}
    for name, fn in methods.items():
        times = []
        for _ in range(repeats + 1):
            # fresh leaves on the same storage: every call starts without gradients
            h, w = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
            t0 = time.perf_counter()
            loss = fn(h, w)
            loss.backward()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            losses[name] = loss.item()
            del h, w, loss
        h, w = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
        row[f"{name}_peak_bytes"] = peak_memory_bytes(lambda: fn(h, w).backward())
        del h, w
        row[f"{name}_s"] = statistics.median(times[1:])
    row["fused_time_vs_linear_bag"] = row["fused_projection_bag_loss_s"] / row["linear_bag_cross_entropy_s"]
    row["fused_memory_vs_linear_bag"] = (row["fused_projection_bag_loss_peak_bytes"]
                                         / max(row["linear_bag_cross_entropy_peak_bytes"], 1))
    row["fused_memory_vs_linear_reference"] = (row["fused_projection_bag_loss_peak_bytes"]
                                               / max(row["linear_reference_peak_bytes"], 1))
    row["fused_loss_rel_diff"] = (abs(losses["fused_projection_bag_loss"] - losses["linear_bag_cross_entropy"])
                                  / abs(losses["linear_bag_cross_entropy"]))
    return row
