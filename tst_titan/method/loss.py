"""The bag loss of Token Superposition Training: one logsumexp per position, shared by s targets.

With logits ``z[b, l, :]`` (vocab V) and the next bag's labels ``t[b, l, 1..s]`` (-100 = ignore)::

    loss = sum_{b,l} sum_{i : t[b,l,i] != -100}  w_i * (logsumexp(z[b,l,:]) - z[b,l,t[b,l,i]])

    d loss / d z[b, l, :] = wsum[b, l] * softmax(z[b, l, :]) - sum_i w_i * onehot(t[b, l, i])
    wsum[b, l]            = sum of w_i over the non-ignored targets at (b, l)

``w`` comes from :func:`bag_weights` (mean 1 over the s positions, so "uniform" is all ones). The
loss is a SUM: torchtitan divides it by the number of valid labels (B·L·s in phase 1), which makes
the uniform case the paper's multi-hot cross entropy (uniform 1/s target, ``log s`` dropped).

Why a custom autograd Function rather than ``log_softmax`` + s × ``nll_loss``: on one H200 (270M,
batch 16 × 2048, vocab 128k, s = 6) that made a phase-1 step 1.21× a baseline step, against 1.03×
with one logsumexp shared by the s targets; and the full fp32 ``log_softmax`` is an extra
logits-sized fp32 tensor, measured at +15.7 GiB of peak memory. So the forward computes one fp32
logsumexp per position in row chunks and saves only that ([B·L] fp32) besides the logits and labels
(both alive anyway); the backward recomputes the softmax chunk by chunk and writes straight into a
gradient of the logits' dtype. Nothing is ever [B·L, V] in fp32, nor [chunk, s, V]: memory does not
grow with s.

Bag size 1 and 2-D labels call torchtitan's own ``cross_entropy_loss``, so ordinary training (and
TST with s = 1) is bit-identical to the baseline. :func:`bag_cross_entropy_reference` is the same
loss written plainly (one ``log_softmax``, a gather per target): read it first, test against it.

Loss parallel (torchtitan's TP with vocab-sharded logits, a DTensor placed ``Shard(-1)``) is handled
inside the Function on the local shard: local logsumexp -> all_reduce MAX -> sum of exp ->
all_reduce SUM, and target logits gathered where they fall in the local vocab slice -> all_reduce
SUM. Every rank returns the same full loss; the backward is closed-form and local, so it needs no
communication.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Replicate, Shard
from torchtitan.components.loss import IGNORE_INDEX, cross_entropy_loss

from tst_titan.job_config import LOSS_WEIGHTINGS

__all__ = ["bag_weights", "bag_cross_entropy", "bag_cross_entropy_reference"]

# One fp32 chunk of [rows, V] is at most 64 Mi elements = 256 MiB (~0.5 GiB with the temporaries of
# logsumexp / exp); at V = 128256 that is 523 rows per chunk.
_CHUNK_ELEMENTS = 64 * 2**20


@lru_cache(maxsize=None)
def _weights(bag_size: int, weighting: str) -> tuple[float, ...]:
    if weighting not in LOSS_WEIGHTINGS:
        raise ValueError(
            f"tst.loss_weighting must be one of {', '.join(map(repr, LOSS_WEIGHTINGS))}, "
            f"got {weighting!r}"
        )
    if bag_size < 1:
        raise ValueError(f"bag size must be >= 1, got {bag_size}")
    curve = {
        "uniform": lambda i: 1.0,
        "power": lambda i: 1.0 / i,
        # The paper's fitted mutual-information curve MI(d) ~ 3.63 + 1.35 d^-1.25, with d = i. Its
        # plateau 3.63 makes the weights nearly uniform (1.22 -> 0.92 at s = 6); the paper found
        # MI weighting slightly better than 1/i at large s, which only the decaying part alone
        # ("mi_decay") can be. The paper does not say which normalisation it used: both are offered.
        "mi": lambda i: 3.63 + 1.35 * i**-1.25,
        "mi_decay": lambda i: 1.35 * i**-1.25,
        "exponential": lambda i: math.exp(-i),
    }[weighting]
    raw = [curve(i) for i in range(1, bag_size + 1)]
    # Mean 1 (not sum 1, as in the paper): the loss is divided by B·L·s valid labels downstream,
    # so mean-1 weights keep the uniform case identical to the unweighted multi-hot CE.
    scale = bag_size / math.fsum(raw)
    return tuple(r * scale for r in raw)


def bag_weights(bag_size: int, weighting: str, device=None) -> torch.Tensor:
    """Weights [bag_size] (float32) of target positions 1..s of a bag, normalised to mean 1."""
    return torch.tensor(_weights(bag_size, weighting), dtype=torch.float32, device=device)


# device_weights, chunk_rows, valid_weight_sum, local_targets and assert_labels_in_vocab are shared
# with tst_titan.method.fused_loss (the same loss fused with the output projection): package
# helpers, not in __all__.


@lru_cache(maxsize=None)
def device_weights(bag_size: int, weighting: str, device: torch.device) -> torch.Tensor:
    # Made once per (s, weighting, device): a tensor built from Python numbers on a GPU is a
    # blocking host-to-device copy, which every training step would otherwise pay. Read-only.
    return bag_weights(bag_size, weighting, device=device)


def chunk_rows(vocab: int, chunk_size: int | None) -> int:
    return chunk_size if chunk_size is not None else max(1, _CHUNK_ELEMENTS // vocab)


class _BagCrossEntropy(torch.autograd.Function):
    """Input: (local) logits [..., V_local]; labels [..., s] with global vocab ids."""

    @staticmethod
    def forward(ctx, logits, labels, weights, chunk_size, group, vocab_start):
        v_local = logits.shape[-1]
        x = logits.reshape(-1, v_local)
        lab = labels.reshape(x.shape[0], -1)
        rows = x.shape[0]
        chunk = chunk_rows(v_local, chunk_size)

        # One fp32 logsumexp per position, chunked so no fp32 [B·L, V] copy exists at any time.
        lse = torch.empty(rows, dtype=torch.float32, device=x.device)
        for a in range(0, rows, chunk):
            torch.logsumexp(x[a : a + chunk].float(), dim=-1, out=lse[a : a + chunk])

        # Weighted sum of the target logits: a gather of [B·L, s] values, in the local vocab slice.
        idx, local_w = local_targets(lab, weights, vocab_start, v_local)
        target = x.gather(1, idx).float()
        target_sum = torch.where(local_w != 0, target * local_w, 0.0).sum(dim=1)

        if group is not None:
            # Combine per-shard logsumexps stably: lse = m + log(sum_r exp(lse_r - m)), m = max_r.
            m = lse.clone()
            dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
            both = torch.stack([torch.exp(lse - m), target_sum])
            dist.all_reduce(both, op=dist.ReduceOp.SUM, group=group)
            lse = m + torch.log(both[0])
            target_sum = both[1]

        wsum = valid_weight_sum(lab, weights)
        loss = (lse * wsum - target_sum).sum()

        ctx.save_for_backward(logits, labels, lse)
        ctx.weights, ctx.chunk, ctx.vocab_start = weights, chunk, vocab_start
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        logits, labels, lse = ctx.saved_tensors
        v_local = logits.shape[-1]
        x = logits.reshape(-1, v_local)
        lab = labels.reshape(x.shape[0], -1)
        g = grad_out.float()

        coef = g * valid_weight_sum(lab, ctx.weights)  # [B·L]: weight of the softmax term
        idx, local_w = local_targets(lab, ctx.weights, ctx.vocab_start, v_local)
        target_coef = -g * local_w  # [B·L, s]: 0 for ignored / other-shard targets

        grad = torch.empty_like(x)
        in_place = grad.dtype == torch.float32  # fp32 logits: compute straight into the gradient
        for a in range(0, x.shape[0], ctx.chunk):
            b = a + ctx.chunk
            # One fp32 chunk: the gradient rows themselves for fp32 logits, else a fresh fp32
            # buffer (no extra .float() copy of bf16 logits); everything after it is in place.
            p = torch.sub(x[a:b], lse[a:b, None], out=grad[a:b]) if in_place else x[a:b] - lse[a:b, None]
            p.exp_().mul_(coef[a:b, None])
            # scatter_add_ sums duplicates: a token twice in a bag counts twice, as in the loss.
            p.scatter_add_(1, idx[a:b], target_coef[a:b])
            if not in_place:
                grad[a:b].copy_(p)
        return grad.view(logits.shape), None, None, None, None, None


def valid_weight_sum(lab: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return ((lab != IGNORE_INDEX) * weights).sum(dim=1)


def local_targets(lab, weights, vocab_start, v_local):
    """Column index of each target in the local vocab slice (clamped, so always a valid index) and
    its weight there (0 where the target is ignored or lives on another shard)."""
    shifted = lab - vocab_start
    here = (lab != IGNORE_INDEX) & (shifted >= 0) & (shifted < v_local)
    return shifted.clamp(0, v_local - 1), here * weights


def assert_labels_in_vocab(labels: torch.Tensor, vocab: int) -> None:
    """Like torchtitan's cross-entropy, a label outside the vocabulary is an error, not a dropped
    target; a device-side assert, so checking costs no host-device synchronisation."""
    torch._assert_async(((labels >= 0) & (labels < vocab) | (labels == IGNORE_INDEX)).all(),
                        "bag loss: a label is outside the vocabulary (and is not the ignore index -100)")


def _sharded_vocab(logits: DTensor):
    """(local tensor, group, vocab offset) for logits sharded on the vocab dim over a 1-D mesh;
    None for any other layout."""
    mesh, placements = logits.device_mesh, logits.placements
    last = logits.ndim - 1
    if mesh.ndim != 1 or not (isinstance(placements[0], Shard) and placements[0].dim in (last, -1)):
        return None
    world = mesh.size()
    vocab = logits.shape[-1]
    if vocab % world != 0:
        raise ValueError(
            f"loss parallel bag loss needs the vocab ({vocab}) to divide evenly over the "
            f"{world} tensor-parallel ranks; pad the vocab size to a multiple of {world}"
        )
    local = logits.to_local()
    return local, mesh.get_group(), mesh.get_local_rank() * local.shape[-1]


def _bag_loss(logits, labels, weighting, chunk_size, plain_ce):
    if labels.dim() == 2:
        return plain_ce(logits, labels)
    if labels.dim() != 3:
        raise ValueError(f"labels must be [B, L] or [B, L, s], got shape {tuple(labels.shape)}")
    if tuple(labels.shape[:2]) != tuple(logits.shape[:2]):
        raise ValueError(
            f"labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)} in [B, L]"
        )
    s = labels.shape[-1]
    weights = device_weights(s, weighting, labels.device)  # also checks `weighting`
    if s == 1:  # every weighting is 1 at s = 1 (mean-1 normalisation): the baseline, bit for bit
        return plain_ce(logits, labels[..., 0])

    labels = labels.long()
    group, vocab_start = None, 0
    if isinstance(logits, DTensor):
        sharded = _sharded_vocab(logits)
        if sharded is not None:
            logits, group, vocab_start = sharded
        elif all(isinstance(p, Replicate) for p in logits.placements):
            logits = logits.to_local()
        else:  # gathering the whole [B, L, V] logits on every rank would cost what TP saves
            raise ValueError(
                f"the bag loss takes logits sharded on the vocabulary over a 1-D mesh (loss parallel) "
                f"or replicated, got placements {tuple(logits.placements)} on a "
                f"{logits.device_mesh.ndim}-D mesh"
            )
    vocab = logits.shape[-1] * (dist.get_world_size(group) if group is not None else 1)
    assert_labels_in_vocab(labels, vocab)
    return _BagCrossEntropy.apply(logits, labels, weights, chunk_size, group, vocab_start)


def bag_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weighting: str = "uniform",
    chunk_size: int | None = None,
    next_token_loss=cross_entropy_loss,
) -> torch.Tensor:
    """Summed (weighted) cross entropy of ``logits [B, L, V]`` against ``labels [B, L, s]``.

    2-D labels ``[B, L]``, or s = 1, go to ``next_token_loss`` (torchtitan's ``cross_entropy_loss``;
    the trainer's loss builder passes its compiled twin). ``chunk_size`` is the number of positions
    per fp32 chunk (default: ~256 MiB of fp32 per chunk). Returns a float32 scalar; the same full
    loss on every rank under loss parallel.
    """
    return _bag_loss(logits, labels, weighting, chunk_size, next_token_loss)


def bag_cross_entropy_reference(logits: torch.Tensor, labels: torch.Tensor, weighting: str = "uniform") -> torch.Tensor:
    """The bag loss written plainly: ``sum w_i * -log_softmax(logits)[label_i]`` over the
    non-ignored targets, in float32. What :func:`bag_cross_entropy` computes without the fp32
    ``[B, L, V]`` copy this makes; for reading and testing, not for training."""
    if labels.dim() == 2:
        labels = labels.unsqueeze(-1)
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # [B, L, V]
    weights = bag_weights(labels.shape[-1], weighting, device=logits.device)
    valid = labels != IGNORE_INDEX
    picked = log_probs.gather(-1, torch.where(valid, labels, 0).long())  # [B, L, s]
    return -(picked * weights * valid).sum()


def chunked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Next-token cross entropy (``labels [B, L]``, summed over the non-ignored labels, like
    torchtitan's ``cross_entropy_loss``) through the bag loss's chunked kernel at s = 1: no fp32
    ``[B·L, V]`` copy of the logits. Not what training uses (TST's next-token steps and the
    baseline are torchtitan's own loss, bit for bit); it lets a measurement compare phase 1 with a
    next-token step *of the same kernel*, so that the kernel's gain is not taken for TST's
    (``tst_titan.experiments.steptime``). Plain tensors only."""
    if labels.dim() != 2:
        raise ValueError(f"labels must be [B, L], got shape {tuple(labels.shape)}")
    if isinstance(logits, DTensor):
        raise ValueError("chunked_cross_entropy takes plain (unsharded) logits; use bag_cross_entropy "
                         "under loss parallel")
    labels = labels.long().unsqueeze(-1)
    assert_labels_in_vocab(labels, logits.shape[-1])
    weights = device_weights(1, "uniform", labels.device)
    return _BagCrossEntropy.apply(logits, labels, weights, chunk_size, None, 0)
