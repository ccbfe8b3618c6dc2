"""Bag embedding: a bag's input is the plain mean of its s token embeddings.

During phase 1 the model receives ``[B, L, s]`` token ids. The stock embedding table maps them to
``[B, L, s, D]``; a forward hook on ``tok_embeddings`` averages the bag dimension, so the
transformer blocks see ``[B, L, D]`` in both phases (compiled blocks do not recompile at the
switch) and the model has no new parameter: a TST checkpoint is an ordinary checkpoint.

The mean is taken as the paper does: sum in float32, divide by s, cast back (bf16 sums of 16
embeddings lose bits). The hook is installed *after* torchtitan's parallelize function, so under
tensor parallelism it sees the output of the embedding's own TP hook: a local tensor sharded on the
position dimension (sequence parallel), whose bag dimension is whole on every rank.
"""

from __future__ import annotations

import torch
from torch import nn


def bag_mean(embeddings: torch.Tensor) -> torch.Tensor:
    """``[..., s, D] -> [..., D]``: float32 mean over the bag dimension, in the input's dtype."""
    bag_size = embeddings.shape[-2]
    return (embeddings.float().sum(dim=-2) / bag_size).to(embeddings.dtype)


def _average_bags(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
    tokens = args[0]
    if tokens.dim() == 3:  # [B, L, s]: a phase-1 batch of bags
        return bag_mean(output)
    return None  # [B, L]: ordinary next-token batch, output unchanged


def install_bag_embedding(model: nn.Module) -> nn.Module:
    """Make ``model.tok_embeddings`` average bag inputs. Idempotent; models without an embedding
    (later pipeline stages) are returned unchanged."""
    embedding = getattr(model, "tok_embeddings", None)
    if embedding is None or getattr(embedding, "_tst_bag_hook", None) is not None:
        return model
    embedding._tst_bag_hook = embedding.register_forward_hook(_average_bags)
    return model
