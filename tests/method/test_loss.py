"""The bag loss: against a naive per-target reference, bit-exact at s = 1, memory, loss parallel;
and its torchtitan builder (tst_titan.components.loss)."""

from __future__ import annotations

import contextlib
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torchtitan.components.loss import cross_entropy_loss

from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor
from torch.distributed.tensor.parallel import loss_parallel

from tests.helpers.distributed import run_on_processes
from tst_titan.components.loss import build_bag_loss
from tst_titan.job_config import LOSS_WEIGHTINGS, ConfigError
from tst_titan.method.loss import bag_cross_entropy, bag_cross_entropy_reference, bag_weights

B, L, V = 2, 5, 37  # B·L = 10 positions


def _labels(s: int, vocab: int = V, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, vocab, (B, L, s), generator=g)
    labels[torch.rand(B, L, s, generator=g) < 0.2] = -100  # scattered ignored targets
    labels[1, 3] = -100  # one position with every target ignored
    return labels


def _logits(dtype=torch.float32, vocab: int = V, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(B, L, vocab, generator=g)).to(dtype).requires_grad_()


def _naive(logits: torch.Tensor, labels: torch.Tensor, weighting: str) -> torch.Tensor:
    """s separate float64 cross entropies, one per target position, weighted and summed."""
    s = labels.shape[-1]
    w = bag_weights(s, weighting).double()
    flat = logits.double().flatten(0, 1)
    total = torch.zeros((), dtype=torch.float64)
    for i in range(s):
        nll = F.cross_entropy(flat, labels[..., i].flatten(), reduction="none", ignore_index=-100)
        total = total + w[i] * nll.sum()
    return total


def _loss_and_grad(fn, logits, *args, **kwargs):
    leaf = logits.detach().clone().requires_grad_()
    loss = fn(leaf, *args, **kwargs)
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss, grad


# ---------------------------------------------------------------- weights


@pytest.mark.parametrize("s", [1, 2, 6, 16])
def test_bag_weights_formulas_and_mean_one(s):
    raw = {
        "uniform": [1.0] * s,
        "power": [1 / i for i in range(1, s + 1)],
        "mi": [3.63 + 1.35 * i**-1.25 for i in range(1, s + 1)],
        "mi_decay": [1.35 * i**-1.25 for i in range(1, s + 1)],
        "exponential": [math.exp(-i) for i in range(1, s + 1)],
    }
    assert set(raw) == set(LOSS_WEIGHTINGS)
    for name, r in raw.items():
        w = bag_weights(s, name)
        assert w.dtype == torch.float32 and w.shape == (s,)
        expected = torch.tensor(r, dtype=torch.float64) * s / sum(r)
        torch.testing.assert_close(w, expected.float())
        assert w.mean().item() == pytest.approx(1.0, abs=1e-6)
        assert w.sum().item() == pytest.approx(s, rel=1e-6)
        if name != "uniform" and s > 1:
            assert torch.all(w[:-1] > w[1:])  # decreasing with distance into the bag


def test_mi_with_its_plateau_is_nearly_uniform_and_its_decaying_part_is_not():
    # With the plateau 3.63 the weights run from 1.21 down to 0.92 at s = 6 (mean 1).
    mi, decay, power = bag_weights(6, "mi"), bag_weights(6, "mi_decay"), bag_weights(6, "power")
    assert (round(mi[0].item(), 2), round(mi[-1].item(), 2)) == (1.21, 0.92)
    assert decay[0] / decay[-1] > power[0] / power[-1] > mi[0] / mi[-1]  # 6^1.25 > 6 > 1.33


# Ways a loss could make a tensor from Python data (a blocking host-to-device copy on CUDA) or read
# one back to the host (a sync): none may run in a call after the first.
HOST_TO_DEVICE = ("tensor", "as_tensor", "asarray", "from_numpy", "full", "scalar_tensor")
DEVICE_TO_HOST = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__")


# bag size 1: [B, L] labels, the baseline's next-token loss through the same function (no weights)
@pytest.mark.parametrize("bag_size, weighting", [(1, "uniform")] + [
    (6, w) for w in ("uniform", "power", "mi", "mi_decay", "exponential")])
def test_a_call_after_the_first_makes_no_tensor_from_python_data_and_reads_nothing_back(
        monkeypatch, weighting, bag_size):
    # what Python code can do; a sync inside one C++ op (a boolean mask, nonzero) is the GPU
    # tests' to catch (tests/integration/test_gpu.py, sync debug mode)
    logits, labels = _logits().requires_grad_(), _labels(bag_size)[..., 0] if bag_size == 1 else _labels(bag_size)
    bag_cross_entropy(logits, labels, weighting).backward()  # the first call may build the weights
    calls = []

    def spy(owner, name):
        real = getattr(owner, name)
        monkeypatch.setattr(owner, name, lambda *a, **k: calls.append(name) or real(*a, **k))

    for name in HOST_TO_DEVICE:
        spy(torch, name)
    for name in DEVICE_TO_HOST:
        spy(torch.Tensor, name)
    torch.full((1,), 2.0).item()  # the spies see what they watch
    assert calls == ["full", "item"]
    calls.clear()
    bag_cross_entropy(logits, labels, weighting).backward()
    monkeypatch.undo()
    assert calls == []


def test_labels_outside_the_vocabulary_raise_like_torchtitan():
    logits = _logits()
    for bad in (V, -5):
        labels = _labels(6)
        labels[0, 1, 2] = bad
        with pytest.raises(RuntimeError, match="outside the vocabulary"):
            bag_cross_entropy(logits, labels)
        with pytest.raises((RuntimeError, IndexError)):  # torchtitan's own, for 2-D labels
            cross_entropy_loss(logits, labels[..., 2])


def test_unknown_weighting_is_rejected():
    with pytest.raises(ValueError, match=r"tst\.loss_weighting.*'uniform'.*'power'.*'mi'"):
        bag_weights(4, "linear")
    with pytest.raises(ValueError, match=r"tst\.loss_weighting"):
        bag_cross_entropy(_logits(), _labels(4), weighting="linear")


# ---------------------------------------------------------------- against the reference


@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize("weighting", LOSS_WEIGHTINGS)
@pytest.mark.parametrize("s", [1, 2, 6, 16])
def test_matches_naive_reference(s, weighting, chunk_size):
    logits, labels = _logits(), _labels(s)
    loss, grad = _loss_and_grad(bag_cross_entropy, logits, labels, weighting, chunk_size)
    ref, ref_grad = _loss_and_grad(_naive, logits, labels, weighting)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss, ref.float(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weighting", LOSS_WEIGHTINGS)
@pytest.mark.parametrize("s", [1, 6])
def test_plain_reference_matches_naive(s, weighting):
    logits, labels = _logits(), _labels(s)
    loss, grad = _loss_and_grad(bag_cross_entropy_reference, logits, labels, weighting)
    ref, ref_grad = _loss_and_grad(_naive, logits, labels, weighting)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss, ref.float(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)
    if s == 1:  # 2-D labels are bags of one
        assert torch.equal(bag_cross_entropy_reference(logits, labels[..., 0], weighting),
                           bag_cross_entropy_reference(logits, labels, weighting))


def test_duplicate_targets_count_once_per_occurrence():
    # vocab 3 and s = 16: every bag is full of repeats.
    logits, labels = _logits(vocab=3), _labels(16, vocab=3)
    loss, grad = _loss_and_grad(bag_cross_entropy, logits, labels, "power", 4)
    ref, ref_grad = _loss_and_grad(_naive, logits, labels, "power")
    torch.testing.assert_close(loss, ref.float(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weighting", ["uniform", "mi"])
def test_bf16_logits(weighting):
    logits, labels = _logits(torch.bfloat16), _labels(6)
    loss, grad = _loss_and_grad(bag_cross_entropy, logits, labels, weighting, 3)
    # the float64 loss of the same bf16 logits, differentiated in float64
    ref, ref_grad = _loss_and_grad(_naive, logits.detach().double(), labels, weighting)
    assert loss.dtype == torch.float32
    assert grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=0)  # fp32 sums of exact inputs
    # computed in fp32, stored in bf16: within one bf16 rounding of the exact gradient (8 significant
    # bits: at most 2^-8 relative, the tolerance; a relative 1e-4 is below bf16's resolution, so no
    # bf16-stored gradient can meet it); atol for fp32 cancellation where a softmax term meets a target's
    torch.testing.assert_close(grad.double(), ref_grad, rtol=2**-8, atol=1e-6)


# ---------------------------------------------------------------- exactness vs torchtitan


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("weighting", LOSS_WEIGHTINGS)
def test_bag_size_one_is_bit_identical_to_torchtitan(weighting, dtype):
    logits, labels = _logits(dtype), _labels(1)
    loss, grad = _loss_and_grad(bag_cross_entropy, logits, labels, weighting)
    ref, ref_grad = _loss_and_grad(cross_entropy_loss, logits, labels[..., 0])
    assert torch.equal(loss, ref)
    assert torch.equal(grad, ref_grad)


def test_2d_labels_are_torchtitan_cross_entropy():
    logits, labels = _logits(), _labels(1)[..., 0]
    loss, grad = _loss_and_grad(bag_cross_entropy, logits, labels, "power")
    ref, ref_grad = _loss_and_grad(cross_entropy_loss, logits, labels)
    assert torch.equal(loss, ref)
    assert torch.equal(grad, ref_grad)


# ---------------------------------------------------------------- edge cases


def test_all_ignored_gives_zero_loss_and_grad():
    labels = torch.full((B, L, 6), -100)
    loss, grad = _loss_and_grad(bag_cross_entropy, _logits(), labels, "mi", 3)
    assert loss.item() == 0.0
    assert torch.count_nonzero(grad) == 0


def test_no_grad_and_logits_without_grad():
    logits, labels = _logits(), _labels(6)
    expected = _naive(logits, labels, "uniform").float()
    with torch.no_grad():
        out = bag_cross_entropy(logits, labels, chunk_size=4)
    assert not out.requires_grad
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-4)
    out = bag_cross_entropy(logits.detach(), labels)
    assert not out.requires_grad
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-4)


def test_bad_label_shapes():
    with pytest.raises(ValueError, match="do not match"):
        bag_cross_entropy(_logits(), torch.zeros(B, L + 1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[B, L, s\]"):
        bag_cross_entropy(_logits(), torch.zeros(B, L, 4, 1, dtype=torch.long))


# ---------------------------------------------------------------- memory


def _saved_tensors(logits, labels):
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        bag_cross_entropy(logits, labels, chunk_size=3)
    return saved


def test_saves_no_fp32_logits_copy_and_nothing_that_grows_with_s():
    logits = _logits(torch.bfloat16)
    totals = {}
    for s in (2, 16):
        saved = _saved_tensors(logits, _labels(s))
        for t in saved:
            assert not (t.dtype == torch.float32 and t.numel() >= B * L * V), t.shape
            assert t.dim() < 3 or t.shape[-1] in (V, s), t.shape  # no [.., s, V] one-hots
        big = [t for t in saved if t.numel() >= B * L * V]
        assert len(big) == 1 and big[0].data_ptr() == logits.data_ptr()  # the logits themselves
        # Everything saved except the labels: logits + one fp32 lse per position, whatever s is.
        totals[s] = sum(t.numel() * t.element_size() for t in saved if t.dtype != torch.int64)
    assert totals[2] == totals[16] == logits.numel() * 2 + B * L * 4


# ---------------------------------------------------------------- builder


def _config(enable=None, weighting="uniform", compile_loss=False):
    cfg = SimpleNamespace(
        compile=SimpleNamespace(
            enable=compile_loss, components=["loss"] if compile_loss else [], backend="eager"
        )
    )
    if enable is not None:
        cfg.tst = SimpleNamespace(enable=enable, loss_weighting=weighting)
    return cfg


def test_build_bag_loss_reads_tst_section():
    logits, labels = _logits(), _labels(6)
    uniform = bag_cross_entropy(logits, labels)
    no_section = _config()
    no_section.model = SimpleNamespace(name="tst_llama3")
    with pytest.raises(ConfigError, match=r"no \[tst\] section.*custom_config_module"):
        build_bag_loss(no_section)
    torch.testing.assert_close(build_bag_loss(_config(False, "power"))(logits, labels), uniform)
    torch.testing.assert_close(
        build_bag_loss(_config(True, "power"))(logits, labels),
        bag_cross_entropy(logits, labels, "power"),
    )
    with pytest.raises(ValueError, match=r"tst\.loss_weighting"):
        build_bag_loss(_config(True, "nope"))


def test_build_bag_loss_compiles_only_the_plain_path():
    loss_fn = build_bag_loss(_config(True, "uniform", compile_loss=True))
    logits, labels = _logits(), _labels(6)
    plain = labels[..., 0]
    torch.testing.assert_close(loss_fn(logits, plain), cross_entropy_loss(logits, plain))
    torch.testing.assert_close(loss_fn(logits, labels), bag_cross_entropy(logits, labels))


# ---------------------------------------------------------------- loss parallel


def _loss_parallel_body(rank, world_size):
    mesh = DeviceMesh("cpu", list(range(world_size)))
    vocab = 36  # divisible by 2; targets land on both shards
    full = _logits(vocab=vocab).detach()

    def sharded(placement=Shard(2)):
        return distribute_tensor(full, mesh, [placement]).requires_grad_()

    for s, weighting, chunk, placement in [
        (6, "uniform", None, Shard(2)),
        (6, "power", 3, Shard(-1)),
        (16, "mi", 4, Shard(2)),
    ]:
        labels = _labels(s, vocab=vocab)
        ref, ref_grad = _loss_and_grad(bag_cross_entropy, full, labels, weighting, chunk)
        dt = sharded(placement)
        # torchtitan's trainer runs the loss inside loss_parallel(); it must not matter here.
        with loss_parallel() if chunk == 3 else contextlib.nullcontext():
            loss = bag_cross_entropy(dt, labels, weighting, chunk)
            assert type(loss) is torch.Tensor, type(loss)  # a plain tensor, same on every rank
            loss.backward()
        assert isinstance(dt.grad, DTensor) and dt.grad.placements == dt.placements
        torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-4)
        torch.testing.assert_close(dt.grad.full_tensor(), ref_grad, rtol=1e-5, atol=1e-6)

    # s = 1 goes through torchtitan's cross entropy, which needs the loss_parallel context (as in
    # torchtitan's trainer) and then returns a Replicate DTensor, like the baseline.
    labels = _labels(1, vocab=vocab)
    ref, ref_grad = _loss_and_grad(cross_entropy_loss, full, labels[..., 0])
    dt = sharded()
    with loss_parallel():
        loss = bag_cross_entropy(dt, labels)
        loss.backward()
    loss = loss.full_tensor() if isinstance(loss, DTensor) else loss
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(dt.grad.full_tensor(), ref_grad)

    # Sharded on the sequence: gathering all logits would cost what TP saves, so it is refused.
    with pytest.raises(ValueError, match=r"sharded on the vocabulary.*Shard\(dim=1\)"):
        bag_cross_entropy(distribute_tensor(full, mesh, [Shard(1)]), _labels(6, vocab=vocab))
    # A label past the full vocabulary (36) is an error on every rank, not a target dropped.
    beyond = _labels(6, vocab=vocab)
    beyond[0, 0, 0] = vocab
    with pytest.raises(RuntimeError, match="outside the vocabulary"):
        bag_cross_entropy(sharded(), beyond)

    odd = distribute_tensor(_logits(vocab=37).detach(), mesh, [Shard(2)])
    with pytest.raises(ValueError, match="divide evenly"):
        bag_cross_entropy(odd, _labels(6))
    torch.distributed.barrier()  # neither rank tears the group down while the other still uses it


@pytest.mark.slow
def test_loss_parallel_matches_single_process():
    run_on_processes(_loss_parallel_body, 2)


# ---------------------------------------------------------------- the kernel at s = 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_cross_entropy_is_torchtitans_next_token_loss(dtype):
    from tst_titan.method.loss import chunked_cross_entropy

    logits, labels = _logits(dtype), _labels(1)[..., 0]
    loss, grad = _loss_and_grad(chunked_cross_entropy, logits, labels, chunk_size=3)
    ref, ref_grad = _loss_and_grad(_naive, logits.detach().double(), labels[..., None], "uniform")
    torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=0)
    assert grad.dtype == dtype
    tolerance = {"rtol": 1e-6, "atol": 1e-7} if dtype == torch.float32 else {"rtol": 2**-8, "atol": 1e-6}
    torch.testing.assert_close(grad.double(), ref_grad, **tolerance)


def test_chunked_cross_entropy_refuses_bags_and_bad_labels():
    from tst_titan.method.loss import chunked_cross_entropy

    with pytest.raises(ValueError, match=r"labels must be \[B, L\]"):
        chunked_cross_entropy(_logits(), _labels(4))
    labels = _labels(1)[..., 0].clone()
    labels[0, 0] = V  # one past the vocabulary
    with pytest.raises(RuntimeError, match="outside the vocabulary"):
        chunked_cross_entropy(_logits(), labels)
