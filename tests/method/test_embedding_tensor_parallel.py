"""The bag embedding under torchtitan's own tensor-parallel plan, on 2 gloo processes: a phase-1
forward and backward sends exactly the collectives of a baseline step (the bag mean is taken on each
rank's partial rows, before the embedding's reduce-scatter), and gives the one-process results."""

import contextlib

import pytest
import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor
from torch.utils._python_dispatch import TorchDispatchMode

from tests.helpers.distributed import run_on_processes

BATCH, POSITIONS, BAG_SIZE = 2, 8, 4


class CollectiveRecorder(TorchDispatchMode):
    """Records (collective, elements it sends) for every functional collective."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if func.namespace == "_c10d_functional" and name != "wait_tensor":
            self.calls.append((name, args[0].numel()))
        return func(*args, **(kwargs or {}))


def _tiny_llama3():
    from tst_titan.train_spec import get_tst_train_spec
    spec = get_tst_train_spec("tst_llama3")
    torch.manual_seed(0)
    model = spec.model_cls(spec.model_args["tiny"])
    with torch.no_grad():
        model.init_weights()
    return model


def _step(model, tokens, grad_out, recorder=None):
    """Forward and backward with a fixed output gradient (no loss: the loss has its own
    collectives, which differ between a multi-hot and a one-hot target by design); the collectives
    of the model's forward and backward go to ``recorder``."""
    model.zero_grad()
    with recorder or contextlib.nullcontext():
        out = model(tokens)
        if isinstance(out, DTensor):  # vocab-sharded logits (loss parallel)
            grad_out = torch.distributed.tensor.distribute_tensor(grad_out, out.device_mesh, out.placements)
        out.backward(grad_out)
    full = out.full_tensor() if isinstance(out, DTensor) else out
    weight_grad = model.tok_embeddings.weight.grad
    if isinstance(weight_grad, DTensor):
        weight_grad = weight_grad.full_tensor()
    return full.detach(), weight_grad.detach()


def _body(rank, world_size):
    from torchtitan.models.llama3.infra.parallelize import apply_tp

    from tst_titan.method.embedding import install_bag_embedding

    reference = install_bag_embedding(_tiny_llama3())
    parallel = _tiny_llama3()
    apply_tp(parallel, init_device_mesh("cpu", (world_size,)), loss_parallel=True,
             enable_float8_tensorwise_tp=False)
    install_bag_embedding(parallel)  # after parallelize, as the TST specs do

    generator = torch.Generator().manual_seed(1)
    vocab = reference.tok_embeddings.num_embeddings
    bags = torch.randint(0, vocab, (BATCH, POSITIONS, BAG_SIZE), generator=generator)
    bags[0, 0] = torch.tensor([0, vocab - 1, vocab // 2 - 1, vocab // 2])  # rows of both ranks in one bag
    plain = bags[..., 0]
    grad_out = torch.randn(BATCH, POSITIONS, vocab, generator=generator)

    sent = {}
    for name, tokens in (("baseline", plain), ("phase 1", bags)):
        recorder = CollectiveRecorder()
        got = _step(parallel, tokens, grad_out, recorder)
        sent[name] = recorder.calls
        want = _step(reference, tokens, grad_out)
        # float32 sums split over 2 ranks: equal up to reduction order, relative to each tensor's scale
        for got_tensor, want_tensor in zip(got, want):  # logits, embedding gradient
            torch.testing.assert_close(got_tensor, want_tensor, rtol=1e-5,
                                       atol=1e-5 * want_tensor.abs().max().item())

    # the embedding's reduce-scatter (the first collective) carries B·L·D elements in both
    # phases, never B·L·s·D; and nothing else differs either
    dim = reference.tok_embeddings.embedding_dim
    assert sent["baseline"][0] == ("reduce_scatter_tensor", BATCH * POSITIONS * dim)
    assert sent["phase 1"] == sent["baseline"]


@pytest.mark.slow
def test_phase1_sends_what_a_baseline_step_sends_and_matches_one_process():
    run_on_processes(_body, 2)
