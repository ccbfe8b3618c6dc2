"""The bag loss fused with the output projection: from hidden states and the output weight, never
the whole logits.

``fused_bag_cross_entropy(hidden, weight, labels, weighting)`` is the same summed loss as
``bag_cross_entropy(hidden @ weight.T, labels, weighting)`` (:mod:`tst_titan.method.loss`; read its
docstring for the loss and its gradient), but the ``[B·L, V]`` logits never exist: positions are taken
a chunk at a time, and each chunk's logits ``hidden[chunk] @ weight.T`` (in the inputs' dtype, as the
model's output Linear makes them) are upcast to fp32 for one logsumexp and the weighted target logits,
then dropped. Saved for backward: hidden, weight, labels and one fp32 logsumexp per position. The
backward recomputes each chunk's logits, forms that chunk's gradient of the logits
(``wsum · softmax − Σ_i w_i · onehot(t_i)``, in the inputs' dtype) and turns it at once into
``grad_hidden[chunk] = g @ weight`` and ``grad_weight += g.T @ hidden[chunk]`` (accumulated in fp32,
cast to the weight's dtype at the end). Peak memory is a chunk of logits, not ``B·L·V``: the point of
it is the issue's phase-1 memory spike, where the logits (and their gradient) of a 128k vocab are the
largest tensors of a step. The price is one more ``[B·L, D] × [D, V]`` matmul (the logits are
recomputed in the backward).

2-D labels ``[B, L]`` are the next-token loss (s = 1) through the same kernel: summed over the
non-ignored labels (-100 ignored), exactly what torchtitan 0.2.2's ``cross_entropy_loss`` computes on
the logits (``F.cross_entropy(pred.flatten(0, 1).float(), labels, reduction="sum",
ignore_index=-100)``), up to floating-point rounding (chunked matmul and logsumexp, not bit for bit).

Not used by the training loop yet: torchtitan 0.2.2 calls the loss outside the model, on the logits
``model(...)`` returns, and under FSDP the output weight exists unsharded only inside the output
layer's forward. Using this kernel means a model whose forward ends at the final norm and a loss that
receives the (unsharded) output weight — a change to the model and train step, not to the loss. It
takes plain tensors only: no DTensor, no loss parallel (for those, project with the model's output
layer and call :func:`~tst_titan.method.loss.bag_cross_entropy` on the logits).
"""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor

from tst_titan.method.loss import (
    assert_labels_in_vocab,
    chunk_rows,
    device_weights,
    local_targets,
    valid_weight_sum,
)

__all__ = ["fused_bag_cross_entropy"]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # fp32 for bf16/fp16/fp32 inputs (the loss's precision in training); float64 stays float64.
    return torch.promote_types(dtype, torch.float32)


class _FusedBagCrossEntropy(torch.autograd.Function):
    """Input: hidden [N, D], weight [V, D], labels [N, s] (long), weights [s] (compute dtype)."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, weights, chunk):
        rows, vocab = hidden.shape[0], weight.shape[0]
        cdtype = _compute_dtype(hidden.dtype)
        idx, target_w = local_targets(labels, weights, 0, vocab)  # ignored targets: weight 0

        lse = torch.empty(rows, dtype=cdtype, device=hidden.device)
        target_sum = torch.empty(rows, dtype=cdtype, device=hidden.device)
        for a in range(0, rows, chunk):
            b = a + chunk
            z = (hidden[a:b] @ weight.T).to(cdtype)  # [chunk, V]: the only vocab-sized tensor
            torch.logsumexp(z, dim=-1, out=lse[a:b])
            target = z.gather(1, idx[a:b])
            torch.sum(torch.where(target_w[a:b] != 0, target * target_w[a:b], 0.0), dim=1, out=target_sum[a:b])
            del z
        loss = (lse * valid_weight_sum(labels, weights) - target_sum).sum()

        ctx.save_for_backward(hidden, weight, labels, lse)
        ctx.weights, ctx.chunk = weights, chunk
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, labels, lse = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[:2]
        g = grad_out.to(lse.dtype)
        coef = g * valid_weight_sum(labels, ctx.weights)  # [N]: weight of the softmax term
        idx, target_w = local_targets(labels, ctx.weights, 0, weight.shape[0])
        target_coef = -g * target_w  # [N, s]: 0 for ignored targets

        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        # fp32 accumulator: summing the chunks' contributions in bf16 would round at every chunk.
        grad_weight = torch.zeros(weight.shape, dtype=lse.dtype, device=weight.device) if need_weight else None
        for a in range(0, hidden.shape[0], ctx.chunk):
            b = a + ctx.chunk
            p = (hidden[a:b] @ weight.T).to(lse.dtype)  # recomputed logits, fp32
            p.sub_(lse[a:b, None]).exp_().mul_(coef[a:b, None])
            # scatter_add_ sums duplicates: a token twice in a bag counts twice, as in the loss.
            p.scatter_add_(1, idx[a:b], target_coef[a:b])
            g_logits = p.to(hidden.dtype)  # the chunk's gradient of the logits, in their dtype
            del p
            if need_hidden:
                torch.mm(g_logits, weight, out=grad_hidden[a:b])
            if need_weight:
                if g_logits.dtype == grad_weight.dtype:
                    grad_weight.addmm_(g_logits.T, hidden[a:b])
                else:
                    grad_weight += g_logits.T @ hidden[a:b]
            del g_logits
        if need_weight:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None


def _check(hidden, weight, labels, chunk_size) -> None:
    if isinstance(hidden, DTensor) or isinstance(weight, DTensor) or isinstance(labels, DTensor):
        raise ValueError(
            "fused_bag_cross_entropy supports unsharded hidden states and output weight only (plain "
            "tensors, e.g. the weight FSDP has unsharded inside the output layer's forward), got a "
            "DTensor; for sharded or tensor/loss-parallel tensors project with the model's output "
            "layer and use tst_titan.method.loss.bag_cross_entropy on the logits"
        )
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, L, D], got shape {tuple(hidden.shape)}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"weight must be [V, D] with D = hidden's last dim ({hidden.shape[-1]}), got shape {tuple(weight.shape)}"
        )
    if not hidden.is_floating_point() or hidden.dtype != weight.dtype:
        raise ValueError(f"hidden and weight must share one floating dtype, got {hidden.dtype} and {weight.dtype}")
    if hidden.device != weight.device or labels.device != hidden.device:
        raise ValueError(
            f"hidden, weight and labels must be on one device, got {hidden.device}, {weight.device}, {labels.device}"
        )
    if labels.dim() not in (2, 3):
        raise ValueError(f"labels must be [B, L] or [B, L, s], got shape {tuple(labels.shape)}")
    if tuple(labels.shape[:2]) != tuple(hidden.shape[:2]):
        raise ValueError(f"labels {tuple(labels.shape)} do not match hidden {tuple(hidden.shape)} in [B, L]")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int (positions per chunk) or None, got {chunk_size!r}")


def fused_bag_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    weighting: str = "uniform",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Summed (weighted) bag cross entropy of the logits ``hidden [B, L, D] @ weight[V, D].T``
    against ``labels [B, L, s]`` (or ``[B, L]``: next-token loss), without making those logits.

    ``chunk_size``: positions per chunk (default: ~256 MiB of fp32 logits per chunk, as in
    ``bag_cross_entropy``). Returns a scalar in fp32 (float64 for float64 inputs); gradients reach
    ``hidden`` and ``weight`` in their own dtype.
    """
    _check(hidden, weight, labels, chunk_size)
    if labels.dim() == 2:
        labels = labels.unsqueeze(-1)
    # also checks `weighting`; mean-1 weights are all 1 at s = 1, so 2-D labels are the plain CE
    weights = device_weights(labels.shape[-1], weighting, labels.device).to(_compute_dtype(hidden.dtype))
    vocab = weight.shape[0]
    labels = labels.long()
    assert_labels_in_vocab(labels, vocab)
    b, l, d = hidden.shape
    return _FusedBagCrossEntropy.apply(
        hidden.reshape(b * l, d), weight, labels.reshape(b * l, -1), weights, chunk_rows(vocab, chunk_size)
    )
