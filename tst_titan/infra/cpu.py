"""Everything torchtitan 0.2.2 needs to train on a machine without an accelerator, in one place.

torchtitan 0.2.2 has no CPU mode (upstream issue #1661): ``tools.utils`` falls back to
``device_type = "cuda"`` and the trainer dies in ``torch.cuda.set_device``. On such a machine
:func:`apply` (called by ``tst_titan.train_spec.register``, i.e. when a config names
``custom_config_module = "tst_titan.config"``, before torchtitan builds its trainer) makes the stock
trainer run on CPU over gloo. It does nothing at all when torch reports an accelerator
(``torch.accelerator``: CUDA, ROCm, XPU, MPS...), so accelerator runs see
unmodified torchtitan. No extension point serves: the trainer reads ``device_type`` and
``device_module`` from module globals before any train-spec builder runs.

What is changed, and why:

* ``device_type``/``device_module`` become ``"cpu"`` and a small stand-in for ``torch.cuda``
  (set_device, memory stats, ...) in every torchtitan module that bound them at import time.
  With ``device_type == "cpu"`` torchtitan picks gloo by itself.
* FSDP2 over gloo: torchtitan sets the gradient divide factor to 1.0, which FSDP implements with
  ``ReduceOp.PREMUL_SUM``, which gloo lacks. :func:`prepare_parallelized_model` forces plain sum
  reduction on every FSDP module instead (same result: the factor is 1).
* MoE router: ``torch.histc`` has no CPU kernel for integer tensors; we count in float and cast back.
* MoE token permutation (``torchtitan.models.moe.utils._permute``, used by expert parallelism and
  grouped-mm padding) calls ``generate_permute_indices`` without ``use_cpu``, i.e. a triton kernel
  that cannot take CPU tensors; on CPU tensors we select its reference CPU implementation.
* float8 tensor parallelism (torchao's float8 TP styles all-gather float8 activations): gloo has
  no float8 dtypes ("Invalid scalar type"), so on CPU the bytes are all-gathered as uint8 and viewed
  back (:func:`prepare_parallelized_model`, only for models with ``Float8Linear`` modules).
"""

from __future__ import annotations

import os
import resource
import types

import torch
import torchtitan.components.metrics as metrics
import torchtitan.distributed.parallel_dims as parallel_dims
import torchtitan.distributed.utils as dist_utils
import torchtitan.models.moe.utils as moe_utils
import torchtitan.tools.profiling as profiling
import torchtitan.tools.utils as tools_utils
from torch.distributed.fsdp import FSDPModule
from torchtitan.tools.logging import logger

#: Every torchtitan (and torch) name :func:`apply` replaces; a test fails if one disappears.
PATCHED_NAMES = (
    ("torchtitan.tools.utils", "device_type"),
    ("torchtitan.tools.utils", "device_module"),
    ("torchtitan.components.metrics", "device_type"),
    ("torchtitan.components.metrics", "device_module"),
    ("torchtitan.distributed.parallel_dims", "device_type"),
    ("torchtitan.distributed.utils", "device_type"),
    ("torchtitan.distributed.utils", "device_module"),
    ("torchtitan.tools.profiling", "device_module"),
    ("torchtitan.components.metrics", "build_device_memory_monitor"),
    ("torchtitan.models.moe.utils", "generate_permute_indices"),
    ("torch", "histc"),
    # float8 over gloo (prepare_parallelized_model, only with the [float8] extra): torchao's op table
    ("torchao.float8.float8_ops", "FLOAT8_OPS_TABLE"),
)

_applied = False


def accelerator_absent() -> bool:
    """Whether torch reports no accelerator at all (CUDA, ROCm, XPU, MPS, ...): only then does CPU
    mode apply. A machine with another accelerator keeps torchtitan's own device choice."""
    return torch.accelerator.current_accelerator() is None


def _peak_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _CPUDeviceProperties:
    def __init__(self) -> None:
        pages = os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
        self.total_memory = pages * os.sysconf("SC_PAGE_SIZE") if pages else 1 << 34
        self.name = "cpu"


def _memory_stats(device=None) -> dict:
    # The process's peak resident set is the only honest "peak memory" a CPU run has.
    peak = _peak_rss_bytes()
    return {
        "active_bytes.all.peak": peak,
        "reserved_bytes.all.peak": peak,
        "num_alloc_retries": 0,
        "num_ooms": 0,
    }


def _noop(*args, **kwargs):
    return None


#: Stand-in for ``torch.cuda`` as torchtitan uses it (see the module docstring).
cpu_device_module = types.SimpleNamespace(
    set_device=_noop,
    current_device=lambda: 0,
    device_count=lambda: 1,
    get_device_name=lambda device=None: "cpu",
    get_device_properties=lambda device=None: _CPUDeviceProperties(),
    memory_stats=_memory_stats,
    reset_peak_memory_stats=_noop,
    empty_cache=_noop,
    synchronize=_noop,
    is_available=lambda: True,
    memory=types.SimpleNamespace(_record_memory_history=_noop, _dump_snapshot=_noop),
)


def _histc_with_integer_cpu_support(histc):
    def histc_any(input, bins=100, min=0, max=0, *, out=None):  # noqa: A002 - torch's names
        if input.device.type == "cpu" and not input.is_floating_point() and out is None:
            return histc(input.float(), bins=bins, min=min, max=max).to(input.dtype)
        if out is None:
            return histc(input, bins=bins, min=min, max=max)
        return histc(input, bins=bins, min=min, max=max, out=out)

    histc_any.__wrapped__ = histc
    return histc_any


def _permute_indices_with_cpu_path(generate):
    def generate_permute_indices(tokens_per_expert_group, *args, use_cpu: bool = False, **kwargs):
        use_cpu = use_cpu or tokens_per_expert_group.device.type == "cpu"
        return generate(tokens_per_expert_group, *args, use_cpu=use_cpu, **kwargs)

    generate_permute_indices.__wrapped__ = generate
    return generate_permute_indices


def apply() -> bool:
    """Make torchtitan run on CPU when torch reports no accelerator; log the choice. Idempotent;
    returns True if CPU mode is on."""
    global _applied
    if _applied:
        return True
    accelerator = torch.accelerator.current_accelerator()
    if accelerator is not None:
        logger.info(f"[tst] accelerator {accelerator.type!r} found (torch.accelerator): torchtitan "
                    "keeps its own device choice, tst_titan's CPU mode is off")
        return False
    logger.info("[tst] no accelerator found (torch.accelerator): torchtitan runs on the CPU over gloo "
                "(tst_titan.infra.cpu)")

    modules = {m.__name__: m for m in (tools_utils, metrics, parallel_dims, dist_utils, profiling)}
    for module_name, name in PATCHED_NAMES:
        if name == "device_type":
            setattr(modules[module_name], name, "cpu")
        elif name == "device_module":
            setattr(modules[module_name], name, cpu_device_module)
    # DeviceMemoryMonitor's default argument was bound to "cuda:0" at import time.
    metrics.build_device_memory_monitor = lambda: metrics.DeviceMemoryMonitor("cpu")

    if not hasattr(torch.histc, "__wrapped__"):
        torch.histc = _histc_with_integer_cpu_support(torch.histc)

    if not hasattr(moe_utils.generate_permute_indices, "__wrapped__"):
        moe_utils.generate_permute_indices = _permute_indices_with_cpu_path(
            moe_utils.generate_permute_indices
        )

    _applied = True
    return True


def _float8_all_gather_as_bytes(allgather_fp8):
    """torchao's all-gather of a Float8TrainingTensor, moving its bytes as uint8 on CPU (gloo)."""

    def allgather_fp8_cpu(aten_op, args, kwargs=None):
        fp8_input = args[0]
        if fp8_input._data.device.type != "cpu":
            return allgather_fp8(aten_op, args, kwargs)
        from torchao.float8.float8_training_tensor import Float8TrainingTensor  # optional: [float8]

        data = fp8_input._data.contiguous()
        out = aten_op(data.view(torch.uint8), *args[1:], **(kwargs or {}))
        return Float8TrainingTensor(
            out.view(data.dtype),
            fp8_input._scale,
            fp8_input._orig_dtype,
            fp8_input._linear_mm_config,
            fp8_input._gemm_input_role,
        )

    allgather_fp8_cpu.__wrapped__ = allgather_fp8
    return allgather_fp8_cpu


def _enable_float8_collectives_over_gloo() -> None:
    from torchao.float8.float8_ops import FLOAT8_OPS_TABLE  # optional: the [float8] extra

    ops = (
        torch.ops._c10d_functional.all_gather_into_tensor.default,
        torch.ops.c10d_functional.all_gather_into_tensor.default,
    )
    for op in ops:
        handler = FLOAT8_OPS_TABLE.get(op)
        if handler is not None and not hasattr(handler, "__wrapped__"):
            FLOAT8_OPS_TABLE[op] = _float8_all_gather_as_bytes(handler)


def prepare_parallelized_model(model: torch.nn.Module) -> None:
    """Post-parallelize fix-ups for CPU (no-op with an accelerator): FSDP2 sum reduction over gloo;
    float8 all-gathers over gloo."""
    if not accelerator_absent():
        return
    if any(type(m).__name__ == "Float8Linear" for m in model.modules()):
        _enable_float8_collectives_over_gloo()
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_force_sum_reduction_for_comms(True)
