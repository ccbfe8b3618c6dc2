"""CPU mode: what torchtitan 0.2.2 needs to train without an accelerator (acts only when torch
reports none)."""

import pytest
import torch
import torchtitan.components.metrics as metrics
import torchtitan.distributed.utils as dist_utils
import torchtitan.tools.utils as tools_utils
from torchtitan.models.moe.utils import _permute

import tst_titan.config  # noqa: F401  (activates the extension: the CPU mode)
from tst_titan.infra import cpu

pytestmark = pytest.mark.skipif(torch.accelerator.is_available(), reason="CPU mode is off with an accelerator")


def test_torchtitan_sees_a_cpu_device():
    assert tools_utils.device_type == dist_utils.device_type == "cpu"
    assert metrics.device_module is cpu.cpu_device_module
    monitor = metrics.build_device_memory_monitor()
    stats = monitor.get_peak_stats()
    assert stats.max_reserved_gib > 0  # the process's peak resident memory


def test_histc_counts_integer_tensors_on_cpu():
    experts = torch.tensor([0, 3, 3, 1, 3, 0, 2], dtype=torch.int64)
    counts = torch.histc(experts, bins=4, min=0, max=4)
    assert counts.dtype == torch.int64
    assert counts.tolist() == torch.bincount(experts, minlength=4).tolist()
    floats = torch.tensor([0.5, 1.5, 1.6])
    assert torch.histc(floats, bins=2, min=0, max=2).tolist() == [1.0, 2.0]


def test_apply_is_idempotent():
    assert cpu.apply() is True
    wrapped = torch.histc
    cpu.apply()
    assert torch.histc is wrapped


def test_permute_runs_on_cpu_tensors():
    # torchtitan's _permute (expert parallel, grouped-mm padding) calls a triton kernel; the CPU mode
    # routes CPU tensors to its reference implementation.
    x = torch.arange(12.0).view(6, 2)
    tokens_per_expert = torch.tensor([2, 0, 3, 1])  # 2 ranks x 2 local experts
    shape, permuted, indices, sizes = _permute(x, tokens_per_expert, ep_degree=2, num_local_experts=2)
    assert shape == (7, 2) and sizes.tolist() == [8, 8]  # each local expert padded to 8 rows
    # tokens arrive grouped [rank 0: E0 E1 | rank 1: E0 E1]; local expert 0 gets rows 0-1 (rank 0)
    # and 2-4 (rank 1), expert 1 row 5; padding rows point at the appended zero row (-1)
    assert indices[:9].tolist() == [0, 1, 2, 3, 4, -1, -1, -1, 5]
    assert torch.equal(permuted[:5], x[:5]) and not permuted[5:8].any()


def test_the_choice_follows_torch_accelerator_and_is_logged(monkeypatch, caplog):
    # An XPU/MPS/NPU machine has no CUDA but an accelerator: torchtitan's device choice is kept
    # (before, "no CUDA" alone switched such a machine to the CPU silently).
    monkeypatch.setattr(cpu, "_applied", False)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *a, **k: torch.device("xpu"))
    with caplog.at_level("INFO"):
        assert cpu.apply() is False
    assert "accelerator 'xpu' found" in caplog.text and not cpu.accelerator_absent()
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *a, **k: None)
    caplog.clear()
    with caplog.at_level("INFO"):
        assert cpu.apply() is True
    assert "no accelerator found" in caplog.text
