"""What happens across TST's phase switch: loss curves, checkpoints and embedding statistics.

The notebooks in ``notebooks/`` only call this module and plot; every number they print comes
from here (and from :mod:`tst_titan.compare`, the benchmark's own matched-loss arithmetic).

Runs are dump folders of ``python -m torchtitan.train`` on a TST spec: ``metrics.jsonl`` (see
:mod:`tst_titan.metrics`), ``tst_run.json`` (the job config, when the run wrote one) and
``checkpoint/step-N`` DCP folders. Sections:

* runs: :func:`run_info` (switch step, bag size, flavor, token store), :func:`checkpoint_steps`,
  :func:`stage_checkpoints`, :func:`find_runs` (the folders the notebooks analyse);
* checkpoints: :func:`load_checkpoint_tensors` (plain CPU tensors from a DCP folder, no process
  group), :func:`load_embeddings`, :func:`load_model` (the TST spec's model with the bag hook);
* statistics: :func:`token_frequencies`, :func:`embedding_norms`, :func:`row_cosine`,
  :func:`embedding_drift`, :func:`pca_2d`, :func:`bag_decodability`, :func:`entropy_from_logits`,
  :func:`phase1_entropy`;
* the switch: :func:`loss_jump`, :func:`recovery_length`, :func:`speedups`, :func:`summary_table`;
* :func:`make_demo_runs`: a TST run and its baseline trained with our own code (tiny model,
  embedded corpus, checkpoints around the switch) when no benchmark output exists.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch

from tst_titan import compare
from tst_titan.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The folder a demo pair goes to when no benchmark output exists (relative to the repository).
DEMO_DIR = os.path.join("outputs", "notebook_demo")
#: ``<dir>/tst`` and ``<dir>/baseline``: the runs the notebooks read instead of the defaults.
RUNS_ENV = "TST_NOTEBOOK_RUNS"
#: Benchmark outputs the notebooks look for, newest first (``python -m tst_titan.bench [--quick]``).
BENCH_DIRS = (os.path.join("outputs", "bench"), os.path.join("outputs", "bench_quick"))
#: Top-level keys of a torchtitan checkpoint that are not model weights.
NON_MODEL_STATES = ("optimizer", "lr_scheduler", "dataloader", "train_state")
#: Wrapper segments that may prefix parameter names (compile, activation checkpointing, FSDP1/DDP).
_WRAPPER_SEGMENTS = ("_orig_mod", "_checkpoint_wrapped_module", "_fsdp_wrapped_module", "module")


def resolve(path: str | os.PathLike) -> str:
    """``path`` as given if it exists, else relative to the repository root (notebooks run in
    ``notebooks/``, the benchmark writes ``outputs/...`` relative to the repository)."""
    path = os.fspath(path)
    if os.path.isabs(path) or os.path.exists(path):
        return os.path.abspath(path)
    return os.path.join(ROOT, path)


def relpath(path: str) -> str:
    """For printing: relative to the repository root when inside it."""
    path = os.path.abspath(path)
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


# =============================================================================================
# runs
@dataclass
class RunInfo:
    """What the analysis needs to know about a run (from ``tst_run.json``, else ``train.log``)."""

    path: str
    enabled: bool
    bag_size: int  # s (1 when TST is off)
    superposition_fraction: float
    steps: int | None  # training.steps
    switch_step: int  # phase 1 = steps 1..switch_step; 0 for a baseline
    model_name: str
    flavor: str
    seq_len: int | None
    store_dir: str | None  # the token store the run read

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))


def _store_dir(training: dict, model_name: str, flavor: str) -> str | None:
    from types import SimpleNamespace

    from tst_titan.data import store_dir_of

    cfg = SimpleNamespace(
        training=SimpleNamespace(dataset=training.get("dataset"), dataset_path=training.get("dataset_path")),
        model=SimpleNamespace(name=model_name, flavor=flavor),
    )
    try:
        path = store_dir_of(cfg)
    except Exception:  # an unknown flavor or dataset: the caller passes store_dir
        return None
    return resolve(path) if path else None


def run_info(run_dir: str, store_dir: str | None = None, use_record: bool = True) -> RunInfo:
    """Switch step, bag size, model and token store of a run.

    Read from ``<run>/tst_run.json`` (the job config, when the run wrote one; ``use_record=False``
    ignores it); otherwise from ``train.log`` and ``metrics.jsonl`` (:func:`_run_info_from_log`).
    ``store_dir`` overrides the token store the statistics read."""
    run_dir = resolve(run_dir)
    record_path = os.path.join(run_dir, "tst_run.json")
    if use_record and os.path.exists(record_path):
        with open(record_path) as f:
            job = json.load(f)["job_config"]
        tst, training, model = job.get("tst", {}), job["training"], job["model"]
        enabled = bool(tst.get("enable"))
        steps = int(training["steps"])
        r = float(tst.get("superposition_fraction", 0.0))
        return RunInfo(
            path=run_dir, enabled=enabled, bag_size=int(tst.get("bag_size", 1)) if enabled else 1,
            superposition_fraction=r if enabled else 0.0, steps=steps,
            switch_step=round(r * steps) if enabled else 0, model_name=model["name"],
            flavor=model["flavor"], seq_len=int(training["seq_len"]),
            store_dir=resolve(store_dir) if store_dir else _store_dir(training, model["name"], model["flavor"]),
        )
    return _run_info_from_log(run_dir, store_dir)


def _run_info_from_log(run_dir: str, store_dir: str | None) -> RunInfo:
    """What a run without ``tst_run.json`` tells: torchtitan's model line in ``train.log`` (name,
    flavor, ``max_seq_len`` = training.seq_len, the vocab), the logged switch, and
    ``metrics.jsonl`` (the bag size is raw tokens / positions at a phase-1 step; the run's length is
    its last logged step). The token store: ``store_dir``, else the demo pair's ``demo.json``, else
    the ``hf_assets_path`` torchtitan logs (TST specs read the tokenizer from the store), else the
    embedded store for the vocab."""
    log_path = os.path.join(run_dir, "train.log")
    text = open(log_path).read() if os.path.exists(log_path) else ""
    model = re.search(r"Building (\S+) (\S+?)with (\{.*?\n\})", text, re.S)
    switch = re.search(r"\[tst\] switching to next-token training at step (\d+)", text)
    rows = read_metrics(run_dir) if os.path.exists(os.path.join(run_dir, "metrics.jsonl")) else []
    phase1 = [r for r in rows if r.get("phase") == 1]
    switch_step = int(switch.group(1)) - 1 if switch else (max(r["step"] for r in phase1) if phase1 else 0)
    bag = 1
    if phase1 and phase1[0].get("positions_seen"):
        bag = round(phase1[0]["raw_tokens_seen"] / phase1[0]["positions_seen"])
    steps = rows[-1]["step"] if rows else None
    model_name, flavor, args = "tst_llama3", "tiny", {}
    if model:
        model_name, flavor = model.group(1), model.group(2)
        try:
            args = json.loads(model.group(3))
        except json.JSONDecodeError:
            args = {}
    candidates = [store_dir]
    demo = os.path.join(os.path.dirname(run_dir), "demo.json")
    if os.path.exists(demo):  # a demo pair records its store next to the runs
        with open(demo) as f:
            candidates.append(json.load(f).get("store_dir"))
    assets = re.search(r"hf_assets_path: (\S+?)/model\.safetensors\.index\.json", text)
    candidates.append(assets.group(1) if assets else None)
    if args.get("vocab_size"):
        candidates.append(os.path.join("data", f"embedded_v{args['vocab_size']}"))
    found = next((resolve(c) for c in candidates if c and os.path.exists(os.path.join(resolve(c), "manifest.json"))), None)
    return RunInfo(path=run_dir, enabled=switch_step > 0, bag_size=bag if switch_step > 0 else 1,
                   superposition_fraction=switch_step / steps if steps and switch_step else 0.0, steps=steps,
                   switch_step=switch_step, model_name=model_name, flavor=flavor,
                   seq_len=args.get("max_seq_len"), store_dir=found or (resolve(store_dir) if store_dir else None))


def switch_step(run_dir: str) -> int:
    """The last phase-1 step of a run (0 for a baseline): steps ``1..switch_step`` are bag steps."""
    return run_info(run_dir).switch_step


def checkpoint_dir(run_dir: str, step: int) -> str:
    return os.path.join(resolve(run_dir), "checkpoint", f"step-{step}")


def checkpoint_steps(run_dir: str) -> list[int]:
    """Steps of the complete DCP checkpoints of a run (folders ``checkpoint/step-N`` with metadata)."""
    folder = os.path.join(resolve(run_dir), "checkpoint")
    if not os.path.isdir(folder):
        return []
    steps = []
    for name in os.listdir(folder):
        m = re.fullmatch(r"step-(\d+)", name)
        if m and os.path.exists(os.path.join(folder, name, ".metadata")):
            steps.append(int(m.group(1)))
    return sorted(steps)


STAGES = ("start", "end of phase 1", "after switch", "end")


def stage_checkpoints(run_dir: str, switch: int | None = None) -> dict[str, int] | None:
    """The checkpoints the embedding notebook compares: the first, the last one of phase 1
    (``step <= switch``), the first one after the switch, and the last; None unless the switch is
    bracketed (a checkpoint on each side)."""
    steps = checkpoint_steps(run_dir)
    switch = switch_step(run_dir) if switch is None else switch
    before = [s for s in steps if s <= switch]
    after = [s for s in steps if s > switch]
    if switch <= 0 or not before or not after:
        return None
    return {"start": steps[0], "end of phase 1": before[-1], "after switch": after[0], "end": steps[-1]}


def _pair(folder: str) -> dict[str, str] | None:
    tst, base = os.path.join(folder, "tst"), os.path.join(folder, "baseline")
    if all(os.path.exists(os.path.join(p, "metrics.jsonl")) for p in (tst, base)):
        return {"tst": tst, "baseline": base}
    return None


def find_runs(tst: str | None = None, baseline: str | None = None, *, need_checkpoints: bool = False,
              demo_dir: str = DEMO_DIR, make_demo: bool = True, demo_steps: int = 300) -> dict[str, str]:
    """The TST run and baseline run to analyse, and where they came from (``source``):

    1. ``tst`` and ``baseline`` when given (the notebooks' parameters cell);
    2. ``$TST_NOTEBOOK_RUNS/{tst,baseline}``;
    3. the newest benchmark output, ``outputs/bench`` or ``outputs/bench_quick`` (skipped when
       ``need_checkpoints`` and its TST run has no checkpoints on both sides of the switch: the
       benchmark keeps only the last one);
    4. a demo pair in ``demo_dir``, made by :func:`make_demo_runs` if missing (``make_demo``).
    """
    if tst or baseline:
        if not (tst and baseline):
            raise ValueError("give both the TST run and the baseline run")
        return {"tst": resolve(tst), "baseline": resolve(baseline), "source": "given"}
    env = os.environ.get(RUNS_ENV)
    if env:
        pair = _pair(resolve(env))
        if pair is None:
            raise FileNotFoundError(f"${RUNS_ENV}={env!r} has no tst/ and baseline/ runs with metrics.jsonl")
        return {**pair, "source": f"${RUNS_ENV}"}
    benches = [p for p in (_pair(resolve(d)) for d in BENCH_DIRS) if p is not None]
    benches.sort(key=lambda p: os.path.getmtime(os.path.join(p["tst"], "metrics.jsonl")), reverse=True)
    for pair in benches:
        if not need_checkpoints or stage_checkpoints(pair["tst"]) is not None:
            return {**pair, "source": "benchmark " + relpath(os.path.dirname(pair["tst"]))}
    demo = resolve(demo_dir)
    pair = _pair(demo)
    if pair is not None and os.path.exists(os.path.join(demo, "demo.json")):
        return {**pair, "source": "demo " + relpath(demo)}
    if not make_demo:
        raise FileNotFoundError("no benchmark output and no demo runs: run tst_titan.analysis.make_demo_runs")
    made = make_demo_runs(demo, steps=demo_steps)
    return {"tst": made["tst"], "baseline": made["baseline"], "source": "demo " + relpath(demo) + " (made now)"}


# =============================================================================================
# checkpoints
def _clean_name(key: str) -> str:
    parts = key.split(".")
    if parts and parts[0] == "model":
        parts = parts[1:]
    return ".".join(p for p in parts if p not in _WRAPPER_SEGMENTS)


def checkpoint_tensor_names(path: str) -> dict[str, Any]:
    """``{cleaned model parameter name: (checkpoint key, TensorStorageMetadata)}`` of a DCP folder:
    tensor entries outside the optimizer / scheduler / dataloader / train-state, with wrapper
    prefixes (``model.``, ``_orig_mod.``, ...) removed."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = FileSystemReader(path).read_metadata()
    names = {}
    for key, md in metadata.state_dict_metadata.items():
        if not isinstance(md, TensorStorageMetadata) or key.split(".")[0] in NON_MODEL_STATES:
            continue
        name = _clean_name(key)
        if name in names:
            raise ValueError(f"{path}: checkpoint keys {names[name][0]!r} and {key!r} are both {name!r}")
        names[name] = (key, md)
    return names


def load_checkpoint_tensors(path: str, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Model weights of a DCP checkpoint folder as plain CPU tensors, by parameter name
    (``tok_embeddings.weight``, ``output.weight``, ...); ``names`` selects some. Works without a
    process group (``no_dist``) on full and model-only checkpoints."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader

    path = resolve(path)
    available = checkpoint_tensor_names(path)
    wanted = list(available) if names is None else list(names)
    missing = [n for n in wanted if n not in available]
    if missing:
        raise KeyError(f"{path} has no tensor(s) {missing}; it has {sorted(available)}")
    state = {}
    for name in wanted:
        key, md = available[name]
        state[key] = torch.empty(tuple(md.size), dtype=md.properties.dtype)
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(state, storage_reader=FileSystemReader(path), no_dist=True)
    return {name: state[available[name][0]] for name in wanted}


def load_embeddings(run_dir: str, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input embeddings ``tok_embeddings.weight``, output head ``output.weight``), float32 ``[V, D]``."""
    t = load_checkpoint_tensors(checkpoint_dir(run_dir, step), ["tok_embeddings.weight", "output.weight"])
    return t["tok_embeddings.weight"].float(), t["output.weight"].float()


def build_model(model_name: str, flavor: str, seq_len: int):
    """The TST spec's model (CPU, float32) with the bag-mean hook: ``[B, L, s]`` inputs are bags."""
    from tst_titan.embedding import install_bag_embedding
    from tst_titan.specs import get_tst_train_spec

    args = get_tst_train_spec(model_name).model_args[flavor]
    if hasattr(args, "max_seq_len"):
        args = replace(args, max_seq_len=seq_len)
    model = get_tst_train_spec(model_name).model_cls(args)
    return install_bag_embedding(model)


def load_model(run_dir: str, step: int, info: RunInfo | None = None, seq_len: int | None = None):
    """The run's model with the weights of checkpoint ``step`` (eval mode, bag hook installed)."""
    info = info or run_info(run_dir)
    model = build_model(info.model_name, info.flavor, seq_len or info.seq_len or 2048)
    weights = load_checkpoint_tensors(checkpoint_dir(run_dir, step))
    model.load_state_dict(weights, strict=True)
    return model.eval()


# =============================================================================================
# statistics
def token_frequencies(store_dir: str, vocab_size: int | None = None, split: str = "train") -> np.ndarray:
    """Occurrences of every token id in a split of the token store (``np.bincount``)."""
    from tst_titan.store import TokenStore

    store = TokenStore(resolve(store_dir), split)
    counts = np.bincount(store.slice(0, len(store)).astype(np.int64), minlength=vocab_size or 0)
    return counts if vocab_size is None else counts[:max(vocab_size, len(counts))]


def embedding_norms(embeddings: torch.Tensor) -> torch.Tensor:
    """L2 norm of every row ``[V, D] -> [V]``."""
    return embeddings.float().norm(dim=-1)


def row_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarity of matching rows, e.g. a token's input embedding and its output-head row."""
    a, b = a.float(), b.float()
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(eps)


def embedding_drift(before: torch.Tensor, after: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Per-token change of an embedding table between two checkpoints: ``"l2"`` ``||after-before||``,
    ``"relative"`` that divided by ``||before||``, ``"cosine"`` ``1 - cos(before, after)``."""
    before, after = before.float(), after.float()
    if kind == "l2":
        return (after - before).norm(dim=-1)
    if kind == "relative":
        return (after - before).norm(dim=-1) / before.norm(dim=-1).clamp_min(1e-12)
    if kind == "cosine":
        return 1.0 - row_cosine(before, after)
    raise ValueError(f"kind must be 'l2', 'relative' or 'cosine', got {kind!r}")


def pca_2d(x: torch.Tensor, rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """2-D PCA of the rows of ``x`` (SVD of the centred float64 matrix; the fit uses ``rows`` only
    when given, e.g. the tokens that occur). Returns ``coords [V, 2]`` (every row projected),
    ``components [2, D]`` (unit, sign fixed so each one's largest entry is positive), ``mean [D]``,
    ``explained_variance [2]`` and ``explained_variance_ratio [2]``."""
    x = x.double()
    fit = x if rows is None else x[rows]
    mean = fit.mean(0)
    _, s, vh = torch.linalg.svd(fit - mean, full_matrices=False)
    comps = vh[:2].clone()
    for i in range(comps.shape[0]):
        if comps[i, comps[i].abs().argmax()] < 0:
            comps[i] = -comps[i]
    var = s**2 / max(fit.shape[0] - 1, 1)
    return {"coords": (x - mean) @ comps.T, "components": comps, "mean": mean,
            "explained_variance": var[:2], "explained_variance_ratio": var[:2] / var.sum()}


def rank_correlation(x, y) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(v):
        v = np.asarray(v, dtype=np.float64)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
        sums = np.bincount(inverse, weights=r)
        return sums[inverse] / counts[inverse]

    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denom) if denom else float("nan")


def frequency_bins(values, freq, n_bins: int = 8) -> list[dict[str, float]]:
    """Mean of ``values`` over tokens grouped by frequency in ``n_bins`` equal-count bins (tokens
    that occur, ``freq > 0``), from rare to frequent: ``{"freq_lo", "freq_hi", "freq_median",
    "mean", "tokens"}`` per bin."""
    values, freq = np.asarray(values, dtype=np.float64), np.asarray(freq)
    seen = np.flatnonzero(freq > 0)
    order = seen[np.argsort(freq[seen], kind="stable")]
    out = []
    for chunk in np.array_split(order, n_bins):
        if len(chunk):
            f = freq[chunk]
            out.append({"freq_lo": float(f.min()), "freq_hi": float(f.max()), "freq_median": float(np.median(f)),
                        "mean": float(values[chunk].mean()), "tokens": int(len(chunk))})
    return out


def sample_bags(tokens: np.ndarray, bag_size: int, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` bags of ``bag_size`` consecutive tokens at random positions of a token array ``[n, s]``."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(tokens) - bag_size + 1, size=n)
    idx = starts[:, None] + np.arange(bag_size)[None, :]
    return torch.from_numpy(np.asarray(tokens)[idx].astype(np.int64))


def bag_decodability(embeddings: torch.Tensor, bags: torch.Tensor,
                     candidates: torch.Tensor | None = None) -> dict[str, float]:
    """Can a bag's tokens be read back from its mean embedding (what the model gets in phase 1)?

    For each bag ``[s]`` of ``bags [n, s]``: the s nearest rows (cosine) of ``embeddings`` to the
    bag's float32 mean embedding (among ``candidates``, a boolean ``[V]`` mask, when given); count
    the bag's tokens that are among them (a duplicate counts once per occurrence, as in the loss).
    Returns ``s``, ``recovered`` (mean count, 0..s), ``fraction`` (recovered / s) and ``chance``
    (the expected fraction for s random neighbours: s / number of candidates)."""
    emb = embeddings.float()
    n, s = bags.shape
    means = emb[bags].sum(1) / s
    unit = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sims = (means / means.norm(dim=-1, keepdim=True).clamp_min(1e-12)) @ unit.T
    n_candidates = emb.shape[0]
    if candidates is not None:
        sims = sims.masked_fill(~candidates.bool()[None, :], float("-inf"))
        n_candidates = int(candidates.sum())
    nearest = sims.topk(s, dim=-1).indices  # [n, s]
    found = (bags[:, :, None] == nearest[:, None, :]).any(-1).sum(-1).double()
    recovered = float(found.mean())
    return {"s": s, "recovered": recovered, "fraction": recovered / s, "chance": s / n_candidates,
            "bags": n}


def decodability_curve(embeddings: torch.Tensor, tokens: np.ndarray, sizes: Sequence[int], n: int = 512,
                       seed: int = 0, candidates: torch.Tensor | None = None) -> list[dict[str, float]]:
    """:func:`bag_decodability` for each bag size, on ``n`` random bags of real text each."""
    return [bag_decodability(embeddings, sample_bags(tokens, s, n, seed + s), candidates) for s in sizes]


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of ``softmax(logits)`` over the last dimension."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def bagged_batch(tokens: np.ndarray, bag_size: int, seq_len: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``batch`` phase-1 samples of a token array, as the TST dataset cuts them:
    ``s·(L+1)`` consecutive tokens -> input bags ``[B, L, s]`` and next bags ``[B, L, s]``."""
    window = bag_size * (seq_len + 1)
    if len(tokens) < batch * window:
        raise ValueError(f"{len(tokens)} tokens are fewer than {batch} samples of {window}")
    x = torch.from_numpy(np.asarray(tokens[: batch * window]).astype(np.int64))
    bags = x.view(batch, seq_len + 1, bag_size)
    return bags[:, :-1], bags[:, 1:]


@torch.no_grad()
def phase1_entropy(model, tokens: np.ndarray, bag_size: int, seq_len: int = 128, batch: int = 8) -> dict[str, float]:
    """Mean entropy of the model's next-token distribution at phase-1 positions (inputs are bags of
    ``bag_size`` real tokens), next to ``log s`` (the entropy of a uniform guess over the next bag,
    the phase-1 loss's optimum) and the multi-hot loss on the same positions (mean CE over the
    next bag's tokens, floor ≈ log s)."""
    x, y = bagged_batch(tokens, bag_size, seq_len, batch)
    logits = model(x).float()
    entropy = entropy_from_logits(logits)
    logp = torch.log_softmax(logits, dim=-1)
    bag_loss = -logp.gather(-1, y).mean()
    return {"s": bag_size, "entropy": float(entropy.mean()), "log_s": math.log(bag_size),
            "bag_loss": float(bag_loss), "positions": int(entropy.numel())}


# =============================================================================================
# the switch
def _rows_with(rows: Sequence[dict], key: str) -> list[dict]:
    return [r for r in rows if r.get(key) is not None]


def loss_jump(rows: Sequence[dict], switch: int, key: str = "val_loss") -> dict[str, Any] | None:
    """``key`` at the last logged step ``<= switch`` and at the first one after it, and the jump
    (after − before). Training ``loss`` changes meaning there (multi-hot → next-token);
    ``val_loss`` is next-token in both phases. None if either side has no value."""
    have = _rows_with(rows, key)
    before = [r for r in have if r["step"] <= switch]
    after = [r for r in have if r["step"] > switch]
    if switch <= 0 or not before or not after:
        return None
    b, a = before[-1], after[0]
    return {"key": key, "before_step": b["step"], "before": float(b[key]), "after_step": a["step"],
            "after": float(a[key]), "jump": float(a[key]) - float(b[key])}


def recovery_length(tst_rows: Sequence[dict], base_rows: Sequence[dict], switch: int,
                    x: str = "flops_seen") -> dict[str, Any]:
    """Steps after the switch until TST's validation loss is at or below the baseline's at equal
    ``x`` (FLOPs by default: the baseline's curve read with :func:`tst_titan.compare.value_at`).
    ``step``/``steps_after_switch`` are None when it never gets there within both runs."""
    base = compare.curve(base_rows, x)
    out = {"metric": x, "switch": switch, "step": None, "steps_after_switch": None, "x": None,
           "tst_val_loss": None, "baseline_val_loss": None}
    for r in _rows_with(tst_rows, "val_loss"):
        if r["step"] <= switch:
            continue
        ref = compare.value_at(base, float(r[x]))
        if ref is not None and r["val_loss"] <= ref:
            out.update(step=r["step"], steps_after_switch=r["step"] - switch, x=float(r[x]),
                       tst_val_loss=float(r["val_loss"]), baseline_val_loss=ref)
            break
    return out


def recovery_to_level(rows: Sequence[dict], switch: int, level: float, key: str = "val_loss") -> int | None:
    """Steps after the switch until ``key`` is at or below ``level`` (e.g. its pre-switch value)."""
    for r in _rows_with(rows, key):
        if r["step"] > switch and r[key] <= level:
            return r["step"] - switch
    return None


SPEEDUP_METRICS = {"step": "steps", "flops_seen": "FLOPs", "wall_time_s": "wall-clock"}


def speedups(tst_rows: Sequence[dict], base_rows: Sequence[dict],
             metrics: Sequence[str] = tuple(SPEEDUP_METRICS)) -> dict[str, dict]:
    """:func:`tst_titan.compare.matched_loss_speedup` in each metric (the benchmark's arithmetic):
    how much longer the baseline needs to reach TST's final validation loss."""
    return {m: compare.matched_loss_speedup(tst_rows, base_rows, x=m) for m in metrics}


def equal_flops_val(tst_rows: Sequence[dict], base_rows: Sequence[dict]) -> dict[str, float | None]:
    """TST's final validation loss and the baseline's at the same FLOPs (interpolated)."""
    tst = compare.curve(tst_rows, "flops_seen")
    base = compare.curve(base_rows, "flops_seen")
    flops, loss = tst[-1]
    return {"flops": flops, "tst": loss, "baseline": compare.value_at(base, flops)}


def _fmt(v, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def summary_table(tst_dir: str, base_dir: str) -> list[dict[str, str]]:
    """The switch and the comparison in one list of ``{"quantity", "value"}`` rows."""
    info = run_info(tst_dir)
    tst_rows, base_rows = read_metrics(resolve(tst_dir)), read_metrics(resolve(base_dir))
    k = info.switch_step
    rows = [("bag size s, superposition fraction r", f"{info.bag_size}, {info.superposition_fraction:g}"),
            ("switch: last phase-1 step / TST steps", f"{k} / {tst_rows[-1]['step']}"),
            ("baseline steps", f"{base_rows[-1]['step']}")]
    for key, label in (("loss", "training loss"), ("val_loss", "next-token val loss")):
        j = loss_jump(tst_rows, k, key)
        if j:
            rows.append((f"{label} at step {j['before_step']} → step {j['after_step']}",
                         f"{j['before']:.4f} → {j['after']:.4f} ({j['jump']:+.4f})"))
    rec = recovery_length(tst_rows, base_rows, k)
    rows.append(("recovery: steps after the switch until TST ≤ baseline at equal FLOPs",
                 "not within the runs" if rec["step"] is None else f"{rec['steps_after_switch']} (step {rec['step']})"))
    eq = equal_flops_val(tst_rows, base_rows)
    rows.append(("final val loss TST", _fmt(eq["tst"])))
    rows.append(("val loss baseline at TST's final FLOPs", _fmt(eq["baseline"])))
    rows.append(("final val loss baseline (its own end)", _fmt(compare.curve(base_rows)[-1][1])))
    for m, res in speedups(tst_rows, base_rows).items():
        rows.append((f"speedup to TST's final val loss, {SPEEDUP_METRICS[m]}", compare.format_speedup(res)))
    last = tst_rows[-1]["step"]
    base_raw = compare.value_at(compare.curve(base_rows, "step", "raw_tokens_seen"), float(last))
    rows.append(("raw tokens read by TST / by the baseline at the same step",
                 f"{tst_rows[-1]['raw_tokens_seen']:,} / {_fmt(base_raw, ',.0f')}"))
    return [{"quantity": q, "value": v} for q, v in rows]


def format_table(rows: Sequence[dict[str, str]]) -> str:
    width = max(len(r["quantity"]) for r in rows)
    return "\n".join(f"{r['quantity']:<{width}}  {r['value']}" for r in rows)


def save_figure(fig, run_dir: str, name: str, dpi: int = 80) -> str:
    """Save a figure as ``<run>/figures/<name>.png``; return the path."""
    folder = os.path.join(resolve(run_dir), "figures")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.png")
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


# =============================================================================================
# a demo pair, made with our own code
def _demo_setup(**kw):
    from tst_titan.bench import BenchSetup

    base = dict(flavor="tiny", seq_len=128, batch=16, steps=300, bag_size=4, superposition_fraction=0.3,
                k=2.0, val_every=10, val_steps=8)
    base.update(kw)
    return BenchSetup(**base)


def _set_flag(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


def demo_checkpoint_plan(steps: int, fraction: float) -> dict[str, int]:
    """Checkpoint interval and the steps a demo keeps: 1 (start), the switch (end of phase 1),
    one interval later (shortly after the switch) and the end. The interval is the largest
    divisor of the switch step up to ``steps // 25`` (at least 1), so the switch is saved."""
    switch = round(fraction * steps)
    if not 1 <= switch < steps:
        raise ValueError(f"superposition_fraction {fraction} of {steps} steps leaves no phase on one side")
    limit = max(1, steps // 25)
    interval = max(d for d in range(1, limit + 1) if switch % d == 0)
    return {"interval": interval, "start": 1, "end of phase 1": switch,
            "after switch": min(switch + interval, steps), "end": steps}


def make_demo_runs(out_dir: str = DEMO_DIR, steps: int = 300, *, bag_size: int = 4, fraction: float = 0.3,
                   k: float = 2.0, lr: float = 6e-3, flavor: str = "tiny", seq_len: int = 128, batch: int = 16,
                   val_every: int = 10, val_steps: int = 8, log_freq: int = 5, parallel: bool = False,
                   quiet: bool = True) -> dict[str, Any]:
    """Train a TST run (``steps``) and its baseline (``k·steps``, same LR, seed and data) with
    ``python -m torchtitan.train`` (:func:`tst_titan.bench.run_training`) into ``out_dir/tst`` and
    ``out_dir/baseline``, keeping checkpoints at step 1, at the end of phase 1, shortly after the
    switch and at the end (:func:`demo_checkpoint_plan`; the baseline keeps the same steps and its
    own end). ``parallel`` trains both at once (faster; wall-clock numbers then share the CPUs).
    Writes ``out_dir/demo.json`` last (its presence marks a complete pair)."""
    from tst_titan import bench

    out_dir = resolve(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    marker = os.path.join(out_dir, "demo.json")
    if os.path.exists(marker):
        os.remove(marker)
    setup = _demo_setup(flavor=flavor, seq_len=seq_len, batch=batch, steps=steps, bag_size=bag_size,
                        superposition_fraction=fraction, k=k, val_every=val_every, val_steps=val_steps)
    store_dir = bench.prepare_data(setup)
    plan = demo_checkpoint_plan(steps, fraction)
    base_steps = max(steps, int(math.ceil(k * steps / val_every)) * val_every)

    def overrides(n: int, tst: bool) -> list[str]:
        args = bench.run_overrides(setup, steps=n, lr=lr, tst=tst)
        args = _set_flag(args, "--checkpoint.interval", str(plan["interval"]))
        args = _set_flag(args, "--checkpoint.keep_latest_k", "0")
        args = _set_flag(args, "--metrics.log_freq", str(log_freq))
        args = _set_flag(args, "--training.dataset_path", store_dir)
        args = _set_flag(args, "--model.hf_assets_path", store_dir)
        return args + ["--checkpoint.enable_first_step_checkpoint"]

    jobs = [("tst", overrides(steps, True), steps), ("baseline", overrides(base_steps, False), base_steps)]
    progress = None if quiet else bench.Progress(steps + base_steps)
    if parallel:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda j: bench.run_training(j[0], j[1], out_dir, j[2], progress), jobs))
    else:
        results = [bench.run_training(name, args, out_dir, n, progress) for name, args, n in jobs]
    keep = {plan["start"], plan["end of phase 1"], plan["after switch"], plan["end"]}
    for result in results:
        end = result["rows"][-1]["step"]
        for step in checkpoint_steps(result["dump"]):
            if step not in keep | {end}:
                shutil.rmtree(checkpoint_dir(result["dump"], step))
    record = {"setup": asdict(setup), "lr": lr, "baseline_steps": base_steps, "checkpoints": plan,
              "store_dir": store_dir, "parallel": parallel,
              "process_wall_s": {r["name"]: r["process_wall_s"] for r in results}}
    with open(marker, "w") as f:
        json.dump(record, f, indent=1)
    return {"tst": os.path.join(out_dir, "tst"), "baseline": os.path.join(out_dir, "baseline"), **record}
