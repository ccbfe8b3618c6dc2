"""Statistics of a run's embeddings and predictions: norms, input/output cosine, drift between
checkpoints, PCA, how well a bag can be read back from its mean embedding, and the entropy of the
model's predictions at phase-1 positions; against token frequencies of the run's token store."""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import torch

from tst_titan.datastore.store import TokenStore
from tst_titan.method.bagging import make_sample
from tst_titan.method.schedule import window_size


def token_frequencies(store_dir: str, vocab_size: int | None = None, split: str = "train") -> np.ndarray:
    """Occurrences of every token id in a split of the token store (``np.bincount``)."""
    store = TokenStore(os.path.abspath(store_dir), split)
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
    """The first ``batch`` phase-1 samples of a token array, as the TST dataset cuts them
    (``tst.mode = "full"``): input bags ``[B, L, s]`` and next bags ``[B, L, s]``."""
    window = window_size("full", bag_size, seq_len)
    if len(tokens) < batch * window:
        raise ValueError(f"{len(tokens)} tokens are fewer than {batch} samples of {window}")
    x = torch.from_numpy(np.asarray(tokens[: batch * window]).astype(np.int64))
    inputs, labels = zip(*(make_sample(w, "full", bag_size, seq_len) for w in x.view(batch, window)))
    return torch.stack(inputs), torch.stack(labels)


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
