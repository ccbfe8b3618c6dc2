"""CPU mode: what torchtitan 0.2.2 needs to train without CUDA (acts only when CUDA is absent)."""

import pytest
import torch

import tst_titan  # noqa: F401  (applies the CPU mode)
from tst_titan import cpu

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU mode is inactive with CUDA")


def test_torchtitan_sees_a_cpu_device():
    import torchtitan.components.metrics as metrics
    import torchtitan.distributed.utils as dist_utils
    import torchtitan.tools.utils as tools_utils

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
