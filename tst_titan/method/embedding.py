"""Bag embedding: a bag's input is the plain mean of its s token embeddings.

During phase 1 the model receives ``[B, L, s]`` token ids; the embedding returns ``[B, L, D]``, the
mean of each bag's s rows, so the transformer blocks see ``[B, L, D]`` in both phases (compiled
blocks do not recompile at the switch) and the model has no new parameter: a TST checkpoint is an
ordinary checkpoint. ``[B, L]`` ids (phase 2, the baseline) take the stock path unchanged.

The mean is taken as the paper does: sum in float32, divide by s, cast back (bf16 sums of 16
embeddings lose bits).

Tensor parallelism. torchtitan shards the table by vocabulary rows (``RowwiseParallel``): each rank
looks up the ids it owns, and the embedding's output hook reduce-scatters the partial rows over
the position dimension (sequence parallel). Averaging *after* that hook would make the collective
carry ``[B, L, s, D]``: s times the baseline's traffic and buffer. The mean is linear, so it is
taken on each rank's partial rows *before* the collective (:func:`vocab_parallel_bag_mean`), and a
phase-1 step communicates exactly the ``[B, L, D]`` a baseline step does. That needs the bag path
inside the embedding's forward, between torchtitan's input and output hooks; a forward hook would
run after the output hook (or, prepended, would have to undo the private masking state of DTensor's
vocab-parallel lookup). :func:`install_bag_embedding` therefore gives the embedding module a
forward of its own that handles bags and defers to ``nn.Embedding.forward`` for everything else.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor, Partial, Shard


def bag_mean(embeddings: torch.Tensor) -> torch.Tensor:
    """``[..., s, D] -> [..., D]``: float32 mean over the bag dimension, in the input's dtype."""
    bag_size = embeddings.shape[-2]
    return (embeddings.float().sum(dim=-2) / bag_size).to(embeddings.dtype)


def vocab_parallel_bag_mean(tokens: DTensor, weight: DTensor) -> DTensor:
    """The bag means of ``tokens`` (``[B, L, s]``, replicated) through a table sharded by rows
    (``Shard(0)`` over one mesh dimension), as a ``Partial`` ``[B, L, D]``: each rank's sum holds
    the rows it owns, ids of other ranks' rows contribute 0. Reducing the result (what the
    embedding's tensor-parallel output hook does) gives the bag means of the whole table."""
    mesh = weight.device_mesh
    vocab_size = weight.shape[0]
    rows, first_row = Shard.local_shard_size_and_offset(vocab_size, mesh.size(0), mesh.get_local_rank(0))
    ids = tokens.to_local()
    foreign = (ids < first_row) | (ids >= first_row + rows)
    local_ids = (ids - first_row).masked_fill(foreign, 0)  # any owned row; zeroed just below
    embeddings = F.embedding(local_ids, weight.to_local()).masked_fill(foreign.unsqueeze(-1), 0)
    return DTensor.from_local(bag_mean(embeddings), mesh, (Partial("sum"),), run_check=False)


def _is_row_sharded(weight: torch.Tensor) -> bool:
    return (isinstance(weight, DTensor) and weight.device_mesh.ndim == 1
            and tuple(weight.placements) == (Shard(0),))


def _bag_embedding_forward(self: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
    if tokens.dim() != 3:  # [B, L]: an ordinary next-token batch, the stock lookup
        return nn.Embedding.forward(self, tokens)
    if not isinstance(tokens, DTensor):  # one device, FSDP, DDP: the table is whole here
        return bag_mean(nn.Embedding.forward(self, tokens))
    if _is_row_sharded(self.weight) and all(p.is_replicate() for p in tokens.placements):
        return vocab_parallel_bag_mean(tokens, self.weight)
    weight_layout = getattr(self.weight, "placements", "a plain tensor")
    raise NotImplementedError(
        f"bag embedding under tensor parallelism supports a table sharded by rows (Shard(0), "
        f"torchtitan's RowwiseParallel) and replicated ids; got table {weight_layout}, ids "
        f"{tokens.placements}")


def install_bag_embedding(model: nn.Module) -> nn.Module:
    """Make ``model.tok_embeddings`` average bag inputs (see the module docstring). Idempotent;
    models without an embedding (later pipeline stages) are returned unchanged."""
    embedding = getattr(model, "tok_embeddings", None)
    if embedding is None or getattr(embedding, "_tst_bag_embedding", False):
        return model
    if not isinstance(embedding, nn.Embedding):
        raise TypeError(f"tok_embeddings is a {type(embedding).__name__}; the bag embedding needs an nn.Embedding")
    if embedding.max_norm is not None or embedding.padding_idx is not None:
        # The tensor-parallel bag path looks rows up itself; it would ignore these.
        raise ValueError("the bag embedding supports tok_embeddings without max_norm and padding_idx "
                         f"(got max_norm={embedding.max_norm}, padding_idx={embedding.padding_idx})")
    embedding.forward = types.MethodType(_bag_embedding_forward, embedding)
    embedding._tst_bag_embedding = True
    return model
