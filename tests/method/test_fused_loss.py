"""The fused projection + bag loss: the loss and gradients of hidden and weight against a float64
per-target reference on the materialised logits, torchtitan's cross entropy at s = 1, bf16 within
its rounding bound, and memory (no tensor of the logits' size is ever made)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Replicate, distribute_tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torchtitan.components.loss import cross_entropy_loss

from tests.method.test_loss import _labels  # the same B, L, V and ignored targets as the logits-level tests
from tst_titan.job_config import LOSS_WEIGHTINGS
from tst_titan.method.fused_loss import fused_bag_cross_entropy
from tst_titan.method.loss import bag_cross_entropy, bag_cross_entropy_reference, bag_weights

B, L, D, V = 2, 5, 8, 37  # B·L = 10 positions; V·D = 296 < B·L·V = 370


def _inputs(dtype=torch.float64, vocab: int = V, seed: int = 0):
    """hidden [B, L, D] and weight [V, D] giving logits of standard deviation ~2."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, L, D, generator=g, dtype=torch.float64)
    weight = 2 * torch.randn(vocab, D, generator=g, dtype=torch.float64) / D**0.5
    return hidden.to(dtype), weight.to(dtype)


def _reference64(hidden, weight, labels, weighting="uniform"):
    """s separate float64 cross entropies of the materialised logits, weighted and summed."""
    if labels.dim() == 2:
        labels = labels.unsqueeze(-1)
    w = bag_weights(labels.shape[-1], weighting).double()  # the float32 weights, as the kernel's
    logits = (hidden.double() @ weight.double().T).flatten(0, 1)
    total = torch.zeros((), dtype=torch.float64)
    for i in range(labels.shape[-1]):
        nll = F.cross_entropy(logits, labels[..., i].flatten(), reduction="none", ignore_index=-100)
        total = total + w[i] * nll.sum()
    return total


def _loss_and_grads(fn, hidden, weight, *args, **kwargs):
    h, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    loss = fn(h, w, *args, **kwargs)
    return (loss, *torch.autograd.grad(loss, (h, w)))


def _close(actual, expected, rtol, atol=0.0):
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=rtol, atol=atol)


# ---------------------------------------------------------------- against the references


@pytest.mark.parametrize(
    "s, weighting, chunk_size",
    [(s, weighting, 3) for s in (1, 2, 6, 16) for weighting in LOSS_WEIGHTINGS]
    # 3 and 7 do not divide B·L = 10; 64 is more than all of it; None: the default (all of it here)
    + [(s, "power", chunk) for s in (1, 6) for chunk in (None, 1, 7, 64)],
)
def test_float64_matches_reference(s, weighting, chunk_size):
    hidden, weight = _inputs()
    labels = _labels(s)
    loss, gh, gw = _loss_and_grads(fused_bag_cross_entropy, hidden, weight, labels, weighting, chunk_size)
    ref, ref_gh, ref_gw = _loss_and_grads(_reference64, hidden, weight, labels, weighting)
    assert loss.dtype == torch.float64 and loss.dim() == 0
    assert gh.dtype == gw.dtype == torch.float64
    _close(loss, ref, rtol=1e-10)
    _close(gh, ref_gh, rtol=1e-10, atol=1e-12)
    _close(gw, ref_gw, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("weighting", ["uniform", "mi"])
@pytest.mark.parametrize("s", [1, 6])
def test_float32_matches_plain_reference(s, weighting):
    hidden, weight = _inputs(torch.float32)
    labels = _labels(s)
    loss, gh, gw = _loss_and_grads(fused_bag_cross_entropy, hidden, weight, labels, weighting, 3)
    ref, ref_gh, ref_gw = _loss_and_grads(
        lambda h, w, *a: bag_cross_entropy_reference(h @ w.T, *a), hidden, weight, labels, weighting)
    assert loss.dtype == gh.dtype == gw.dtype == torch.float32
    _close(loss, ref, rtol=1e-5)
    _close(gh, ref_gh, rtol=1e-5, atol=1e-6)
    _close(gw, ref_gw, rtol=1e-5, atol=1e-6)


def test_gradcheck():
    hidden, weight = _inputs()
    labels = _labels(4)
    assert torch.autograd.gradcheck(
        lambda h, w: fused_bag_cross_entropy(h, w, labels, "power", chunk_size=3),
        (hidden.requires_grad_(), weight.requires_grad_()),
    )


def test_2d_labels_are_torchtitan_cross_entropy():
    hidden, weight = _inputs(torch.float32)
    labels = _labels(1)[..., 0]
    loss, gh, gw = _loss_and_grads(fused_bag_cross_entropy, hidden, weight, labels, "power", 3)
    ref, ref_gh, ref_gw = _loss_and_grads(lambda h, w, t: cross_entropy_loss(h @ w.T, t), hidden, weight, labels)
    assert loss.dtype == ref.dtype == torch.float32
    _close(loss, ref, rtol=1e-6)
    _close(gh, ref_gh, rtol=1e-5, atol=1e-6)
    _close(gw, ref_gw, rtol=1e-5, atol=1e-6)
    # [B, L] labels are bags of one: the same kernel, bit for bit.
    assert torch.equal(loss, fused_bag_cross_entropy(hidden, weight, labels.unsqueeze(-1), chunk_size=3))


def test_duplicates_count_twice():
    hidden, weight = _inputs()
    labels = _labels(1)
    twice = torch.cat([labels, labels], dim=-1)  # every target listed twice
    loss = fused_bag_cross_entropy(hidden, weight, labels, chunk_size=3)
    _close(fused_bag_cross_entropy(hidden, weight, twice, chunk_size=3), 2 * loss, rtol=1e-13)
    # vocab 3 and s = 16: bags full of repeats, gradients included
    hidden, weight = _inputs(vocab=3)
    labels = _labels(16, vocab=3)
    loss, gh, gw = _loss_and_grads(fused_bag_cross_entropy, hidden, weight, labels, "power", 4)
    ref, ref_gh, ref_gw = _loss_and_grads(_reference64, hidden, weight, labels, "power")
    _close(loss, ref, rtol=1e-10)
    _close(gh, ref_gh, rtol=1e-10, atol=1e-12)
    _close(gw, ref_gw, rtol=1e-10, atol=1e-12)


def test_ignored_targets_contribute_nothing():
    hidden, weight = _inputs()
    loss, gh, gw = _loss_and_grads(fused_bag_cross_entropy, hidden, weight, torch.full((B, L, 6), -100), "mi", 3)
    assert loss.item() == 0.0
    assert torch.count_nonzero(gh) == 0 and torch.count_nonzero(gw) == 0
    # Ignoring a target is dropping it: the last bag position ignored = a bag of s - 1 (uniform).
    labels = _labels(6)
    dropped = labels.clone()
    dropped[..., -1] = -100
    _close(fused_bag_cross_entropy(hidden, weight, dropped), fused_bag_cross_entropy(hidden, weight, labels[..., :-1]),
           rtol=1e-13)


def test_bf16_within_its_rounding_bound():
    hidden, weight = _inputs(torch.bfloat16)
    labels = _labels(6)
    loss, gh, gw = _loss_and_grads(fused_bag_cross_entropy, hidden, weight, labels, "mi", 3)
    # The reference on the very same bf16 values, in float64.
    ref, ref_gh, ref_gw = _loss_and_grads(_reference64, hidden.double(), weight.double(), labels, "mi")
    assert loss.dtype == torch.float32 and gh.dtype == gw.dtype == torch.bfloat16
    # Each logit is rounded once to bf16 (unit roundoff u = 2^-8): |dz| <= u·|z|. logsumexp moves by
    # at most max_j |dz_j| and the target logit by |dz_t|, so each target's term moves by at most
    # 2u·w_i·max_j|z_j|; summed over the targets (fp32 accumulation is far below this).
    u = 2.0**-8
    logits = hidden.double() @ weight.double().T
    w = bag_weights(6, "mi").double()
    wsum = ((labels != -100) * w).sum(-1)
    bound = (2 * u * wsum * logits.abs().amax(-1)).sum()
    assert abs(loss.double() - ref) <= bound
    # Gradients: the logits' rounding moves softmax by ~2u·max|z| relative, then the bf16 gradient
    # of the logits and the bf16 matmul round once more each (u): compared in norm.
    grad_tol = 2 * u * logits.abs().max() + 2 * u
    for got, want in ((gh, ref_gh), (gw, ref_gw)):
        assert (got.double() - want).norm() <= grad_tol * want.norm()


# ---------------------------------------------------------------- bad input


def test_labels_outside_the_vocabulary_raise():
    hidden, weight = _inputs()
    for bad in (V, -5):
        for s in (1, 6):
            labels = _labels(s)
            labels[0, 1, 0] = bad
            with pytest.raises(RuntimeError, match="outside the vocabulary"):
                fused_bag_cross_entropy(hidden, weight, labels)


def test_bad_arguments_are_named():
    hidden, weight = _inputs()
    with pytest.raises(ValueError, match=r"tst\.loss_weighting"):
        fused_bag_cross_entropy(hidden, weight, _labels(4), weighting="linear")
    with pytest.raises(ValueError, match="chunk_size"):
        fused_bag_cross_entropy(hidden, weight, _labels(4), chunk_size=0)
    with pytest.raises(ValueError, match=r"labels .* do not match hidden"):
        fused_bag_cross_entropy(hidden, weight, torch.zeros(B, L + 1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[B, L, s\]"):
        fused_bag_cross_entropy(hidden, weight, torch.zeros(B, L, 4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"hidden must be \[B, L, D\]"):
        fused_bag_cross_entropy(hidden[0], weight, _labels(4)[0])
    with pytest.raises(ValueError, match=r"weight must be \[V, D\]"):
        fused_bag_cross_entropy(hidden, weight[:, :-1], _labels(4))
    with pytest.raises(ValueError, match="one floating dtype"):
        fused_bag_cross_entropy(hidden, weight.float(), _labels(4))


@pytest.fixture
def one_rank_group():
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    if owned:
        dist.destroy_process_group()


def test_dtensors_are_refused(one_rank_group):
    hidden, weight = _inputs()
    mesh = DeviceMesh("cpu", [0])
    for h, w in ((distribute_tensor(hidden, mesh, [Replicate()]), weight),
                 (hidden, distribute_tensor(weight, mesh, [Replicate()]))):
        with pytest.raises(ValueError, match=r"unsharded hidden states and output weight.*bag_cross_entropy"):
            fused_bag_cross_entropy(h, w, _labels(4))


# ---------------------------------------------------------------- grads asked for, memory


def test_frozen_weight_and_no_grad():
    hidden, weight = _inputs()
    labels = _labels(6)
    ref, ref_gh, _ = _loss_and_grads(_reference64, hidden, weight, labels)
    h = hidden.clone().requires_grad_()
    loss = fused_bag_cross_entropy(h, weight, labels, chunk_size=3)  # weight needs no gradient
    (gh,) = torch.autograd.grad(loss, h)
    _close(gh, ref_gh, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        out = fused_bag_cross_entropy(hidden.requires_grad_(), weight, labels)
    assert not out.requires_grad
    _close(out, ref, rtol=1e-10)


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        sizes = [t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.largest = max([self.largest, *sizes])
        return out


def _largest_tensor(fn, hidden, weight, labels):
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    with _LargestTensor() as mode:
        fn(h, w, labels).backward()
    return mode.largest


def test_never_makes_a_tensor_of_the_logits_size():
    hidden, weight = _inputs(torch.float32)
    labels = _labels(6)
    chunk = 3
    fused = _largest_tensor(lambda h, w, t: fused_bag_cross_entropy(h, w, t, chunk_size=chunk), hidden, weight, labels)
    # The largest: one chunk of logits (3·37 = 111) or the weight's gradient (V·D = 296).
    assert fused == max(chunk * V, V * D) < B * L * V
    # The same probe on the unfused path sees the logits (and their gradient): it can tell.
    unfused = _largest_tensor(lambda h, w, t: bag_cross_entropy(h @ w.T, t, chunk_size=chunk), hidden, weight, labels)
    assert unfused == B * L * V


def test_saves_only_inputs_and_one_logsumexp_per_position():
    hidden, weight = _inputs(torch.bfloat16)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fused_bag_cross_entropy(h, w, _labels(16), chunk_size=3)
    floats = sorted((str(t.dtype), t.numel()) for t in saved if t.is_floating_point())
    assert floats == sorted([("torch.bfloat16", B * L * D), ("torch.bfloat16", V * D), ("torch.float32", B * L)])
    assert [t.shape for t in saved if not t.is_floating_point()] == [(B * L, 16)]  # the labels
