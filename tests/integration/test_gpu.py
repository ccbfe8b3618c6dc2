"""The GPU path (``-m gpu``; skipped cleanly without CUDA, see tests/conftest.py): the bag loss in
bf16 against a float64 reference, phase-1 memory against the baseline at the Llama-3 vocabulary, no
host-device synchronisation in a step, torch.compile with bags, FSDP2 on one GPU.
``scripts/gpu_check.sh`` runs these first; with ``TST_GPU_RECORD=FILE`` the measured figures are
also written to FILE (JSON)."""

import json
import os
import warnings

import pytest
import torch
from torchtitan.components.loss import cross_entropy_loss

from tst_titan.method.loss import bag_cross_entropy
from tests.helpers.models import bag_batch, small_llama3

pytestmark = pytest.mark.gpu

LLAMA3_VOCAB = 128256
BAG_SIZE = 6


def record(name: str, values: dict) -> None:
    """Add ``values`` under ``name`` to the JSON file named by $TST_GPU_RECORD (if set)."""
    path = os.environ.get("TST_GPU_RECORD")
    if not path:
        return
    data = json.load(open(path)) if os.path.exists(path) else {}
    data[name] = values
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def test_bf16_bag_loss_matches_a_float64_reference_under_autocast():
    torch.manual_seed(0)
    hidden = torch.randn(4, 512, 256, device="cuda")
    head = torch.nn.Linear(256, 32768, bias=False, device="cuda")
    labels = torch.randint(0, 32768, (4, 512, BAG_SIZE), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = head(hidden)
    assert logits.dtype == torch.bfloat16
    logits = logits.detach().requires_grad_()
    loss = bag_cross_entropy(logits, labels)
    loss.backward()
    exact_logits = logits.detach().double().requires_grad_()
    exact = -torch.log_softmax(exact_logits, dim=-1).gather(-1, labels).sum()  # uniform weights: all 1
    exact.backward()
    grad_error = (logits.grad.double() - exact_logits.grad).abs()
    record("bf16_bag_loss_vs_float64", {
        "positions": 4 * 512, "vocab": 32768, "bag_size": BAG_SIZE,
        "loss_relative_error": abs(loss.double().item() - exact.item()) / abs(exact.item()),
        "grad_max_relative_error": (grad_error / exact_logits.grad.abs().clamp_min(1e-30)).max().item(),
        "grad_relative_error_norm": (grad_error.norm() / exact_logits.grad.norm()).item()})
    # the same bf16 logits: only fp32 accumulation separates the loss from the float64 one
    torch.testing.assert_close(loss.double(), exact, rtol=1e-5, atol=0)
    # the gradient is computed in fp32 and written in bf16: one bf16 rounding (at most 2^-8
    # relative) of the exact gradient; atol covers fp32 cancellation where softmax meets a target
    torch.testing.assert_close(logits.grad.double(), exact_logits.grad, rtol=2**-8, atol=1e-9)


def _peak_step_bytes(model, inputs, labels, loss_fn) -> int:
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = loss_fn(model(inputs), labels)
    loss.backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def test_phase1_peak_memory_is_within_5_percent_of_the_baseline_at_vocab_128k():
    # 4 x 2048 positions at the Llama-3 vocabulary: the logits are 2 GiB in bf16, so a loss that kept
    # an fp32 copy of them (the +38% spike measured on an H200) would show at once.
    model = small_llama3(vocab=LLAMA3_VOCAB, dim=256)
    base_in, base_labels = bag_batch(4, 2048, LLAMA3_VOCAB, 1)
    bag_in, bag_labels = bag_batch(4, 2048, LLAMA3_VOCAB, BAG_SIZE)
    _peak_step_bytes(model, base_in, base_labels, cross_entropy_loss)  # warm up allocator and kernels
    baseline = _peak_step_bytes(model, base_in, base_labels, cross_entropy_loss)
    phase1 = _peak_step_bytes(model, bag_in, bag_labels, bag_cross_entropy)
    record("phase1_vs_baseline_peak_memory", {"positions": 4 * 2048, "vocab": LLAMA3_VOCAB, "bag_size": BAG_SIZE,
                                              "baseline_gib": baseline / 2**30, "phase1_gib": phase1 / 2**30,
                                              "ratio": phase1 / baseline})
    assert phase1 <= 1.05 * baseline, (phase1 / 2**30, baseline / 2**30)


@pytest.mark.parametrize("bag_size", [1, BAG_SIZE], ids=["phase2", "phase1"])
def test_a_step_makes_no_host_device_synchronisation(bag_size):
    model = small_llama3(vocab=32768)
    inputs, labels = bag_batch(2, 256, 32768, bag_size)
    loss_fn = bag_cross_entropy  # 2-D labels go to torchtitan's cross-entropy inside it

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(model(inputs), labels)
        loss.backward()
        return loss

    step()  # first call: caches (the loss weights on the device), allocator, kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any blocking sync below raises
    try:
        loss = step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    record(f"syncs_forward_backward_{'phase1' if bag_size > 1 else 'phase2'}",
           {"positions": 2 * 256, "bag_size": bag_size, "embedding_indices": 2 * 256 * bag_size, "syncs": 0})
    assert torch.isfinite(loss).item()


def _syncs_in_a_training_step(model, optimizer, inputs, labels) -> int:
    """Blocking host-device synchronisations in one whole training step (forward, loss, backward,
    gradient clipping, AdamW), counted by torch's sync debug mode (one warning each)."""

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = bag_cross_entropy(model(inputs), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # first call: caches, allocator, kernels, optimizer state
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def test_a_whole_training_step_at_a_real_batch_syncs_no_more_in_phase1_than_the_baseline():
    # 4 x 1024 positions: 4,096 embedding indices for the baseline and 24,576 for s = 6 bags, both
    # past the 3,072 up to which CUDA's embedding backward uses its per-feature kernel, so both run
    # the sorting backward that real batches run. Whatever torch's own kernels and AdamW sync (if
    # anything) the baseline syncs as well; phase 1 must add none.
    model = small_llama3(vocab=32768)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    syncs = {}
    for name, bag_size in (("baseline", 1), ("phase1", BAG_SIZE)):
        inputs, labels = bag_batch(4, 1024, 32768, bag_size)
        syncs[name] = _syncs_in_a_training_step(model, optimizer, inputs, labels)
    record("syncs_per_training_step", {"positions": 4 * 1024, "bag_size": BAG_SIZE, **syncs})
    assert syncs["phase1"] <= syncs["baseline"], syncs


def test_compiled_blocks_with_bags_match_eager(monkeypatch):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)  # restored after the test
    eager, compiled = small_llama3(), small_llama3()
    for name, block in compiled.layers.named_children():  # what torchtitan's apply_compile does
        compiled.layers.register_module(name, torch.compile(block, backend="inductor", fullgraph=True))
    inputs, labels = bag_batch(2, 128, 2048, BAG_SIZE)
    losses = []
    for model in (eager, compiled):
        loss = bag_cross_entropy(model(inputs), labels)
        loss.backward()
        losses.append(loss)
    grads = [m.tok_embeddings.weight.grad for m in (eager, compiled)]
    record("compile_with_bags_vs_eager", {
        "unique_graphs": torch._dynamo.utils.counters["stats"]["unique_graphs"],
        "loss_relative_difference": abs(losses[1].item() - losses[0].item()) / abs(losses[0].item()),
        "embedding_grad_max_difference": (grads[1] - grads[0]).abs().max().item(),
        "embedding_grad_max": grads[0].abs().max().item()})
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=0)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-4 * grads[0].abs().max().item())


def test_fsdp2_on_one_gpu_trains_phase1_like_the_plain_model(monkeypatch):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from tst_titan.experiments.runner import free_port

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        plain, sharded = small_llama3(), small_llama3()
        mesh = init_device_mesh("cuda", (1,))
        for block in sharded.layers.values():
            fully_shard(block, mesh=mesh)
        fully_shard(sharded, mesh=mesh)
        runs = []
        for model in (plain, sharded):
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            losses = []
            for step in range(3):
                inputs, labels = bag_batch(2, 128, 2048, BAG_SIZE, seed=step)
                loss = bag_cross_entropy(model(inputs), labels)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                losses.append(loss.item())
            runs.append(losses)
        record("fsdp2_one_gpu_phase1", {"plain_losses": runs[0], "fsdp2_losses": runs[1]})
        # one rank: FSDP2's all-gather and reduce-scatter are copies, so the same float32 math
        assert runs[1] == pytest.approx(runs[0], rel=1e-6)
    finally:
        dist.destroy_process_group()
