"""float8 with torchtitan 0.2.2: the tensor-parallel plan fix and a working MoE converter.

**The float8 tensor-parallel bug.** torchtitan 0.2.2's parallelize functions decide whether to use
torchao's float8 TP styles (``Float8ColwiseParallel``, ``Float8RowwiseParallel``,
``PrepareFloat8ModuleInput``: the TP all-gathers then move float8 instead of bf16) with
``"float8" in job_config.model.converters``, but the converter is registered as
``"quantize.linear.float8"``, so the float8 plan never applies. :func:`float8_tp_plan_enabled`
(used by every ``tst_<family>`` parallelize function) presents the converters list the way
torchtitan checks it, for the duration of the family's parallelize call, when it is safe:

* the recipe is tensorwise (``recipe_name`` unset or ``"tensorwise"``): torchtitan keeps plain TP
  for the rowwise recipes by design (no float8 all-gather for them), and so do we;
* every ``nn.Linear`` of the transformer blocks outside the MoE layers (the modules the TP plan
  gives colwise/rowwise styles) was converted to ``Float8Linear``: torchao's float8 styles raise on
  a plain ``nn.Linear``, and ``PrepareFloat8ModuleInput`` would cast the inputs of unconverted
  linears. With ``filter_fqns`` (e.g. ``auto_filter_small_kn``) leaving some block linears in high
  precision, the plain TP plan is used and the converted linears still compute in float8; the
  reason is logged.

**MoE float8.** torchtitan 0.2.2's ``quantize.grouped_mm.float8`` imports torchao's
``MoETrainingConfig``, which torchao 0.18 no longer has. ``tst.quantize.grouped_mm.float8``
(:class:`Float8GroupedExpertsConverter`) does the same with torchao 0.18's
``Float8TrainingOpConfig``: the weights of the ``GroupedExperts`` modules matching
``quantize.grouped_mm.float8.fqns`` become ``Float8TrainingWeightWrapperTensor``, whose
``_grouped_mm`` runs dynamic rowwise float8 scaled grouped GEMMs. It needs an SM89+ GPU and the
grouped-mm experts (``use_grouped_mm = True``); its GPU speed is unmeasured (README, "Model
configs"). The conversion itself is tested on CPU (:func:`convert_grouped_experts_to_float8`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from functools import partial

import torch
import torchtitan.components.quantization  # noqa: F401  (registers torchtitan's own converters first)
from torch import nn
from torchtitan.components.quantization import FP8_GROUP_ALIGNMENT_SIZE, QuantizationConverter
from torchtitan.components.quantization.utils import module_filter_fn
from torchtitan.models.moe.moe import GroupedExperts
from torchtitan.models.moe.utils import set_token_group_alignment_size_m
from torchtitan.protocols import model_converter
from torchtitan.tools.logging import logger
from torchtitan.tools.utils import has_cuda_capability

#: What :func:`float8_tp_plan_enabled` works around: the test every family's parallelize function
#: makes (no extension point chooses the float8 TP plan in 0.2.2, so the converters list is
#: presented the way this expression reads it, during that call only).
TORCHTITAN_FLOAT8_TP_CHECK = '"float8" in job_config.model.converters'

#: torchtitan's float8 linear converter, and the name its parallelize functions look for.
FLOAT8_LINEAR = "quantize.linear.float8"
TORCHTITAN_FLOAT8_FLAG = "float8"
#: torchtitan 0.2.2's MoE converter (broken with torchao 0.18) and ours.
TORCHTITAN_FLOAT8_GROUPED_MM = "quantize.grouped_mm.float8"
FLOAT8_GROUPED_MM = "tst.quantize.grouped_mm.float8"
#: ``quantize.linear.float8.recipe_name`` values torchao 0.18 knows (None = tensorwise).
FLOAT8_RECIPES = (None, "tensorwise", "rowwise", "rowwise_with_gw_hp")
AUTO_FILTER_SMALL_KN = "auto_filter_small_kn"


def fqn_list(fqns) -> list[str]:
    if isinstance(fqns, str):
        return [f.strip() for f in fqns.split(",") if f.strip()]
    return list(fqns or [])


# -- which linears the float8 converter converts -------------------------------------------------
def linear_filter_fn(float8_config):
    """The module filter torchtitan's ``Float8LinearConverter`` builds from
    ``[quantize.linear.float8]`` (``filter_fqns``, with ``auto_filter_small_kn`` meaning torchao's
    size heuristic for the recipe), without mutating the config as torchtitan's does."""
    fqns = fqn_list(float8_config.filter_fqns)
    if AUTO_FILTER_SMALL_KN in fqns:
        from torchao.float8 import _auto_filter_for_recipe  # optional: the [float8] extra

        fqns.remove(AUTO_FILTER_SMALL_KN)
        return _auto_filter_for_recipe(float8_config.recipe_name or "tensorwise", filter_fqns=fqns)
    return partial(module_filter_fn, filter_fqns=fqns)


def float8_linear_fqns(model: nn.Module, float8_config) -> list[str]:
    """Names of the ``nn.Linear`` modules the float8 converter would convert (works on meta)."""
    keep = linear_filter_fn(float8_config)
    return [name for name, mod in model.named_modules() if isinstance(mod, nn.Linear) and keep(mod, name)]


def tp_planned_linear_fqns(model: nn.Module) -> list[str]:
    """The block linears torchtitan's TP plans give (float8) colwise/rowwise styles: every
    ``nn.Linear`` under ``layers`` outside MoE layers (whose router and shared experts get plain
    styles)."""
    return [
        name
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and name.startswith("layers.") and ".moe." not in name
    ]


@dataclass
class Float8TPDecision:
    enabled: bool
    reason: str
    unconverted: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "float8_tp_plan": self.enabled,
            "reason": self.reason,
            "unconverted_block_linears": len(self.unconverted),
        }


def decide_float8_tp(job_config, planned: list[str], converted: set[str]) -> Float8TPDecision:
    """Whether the float8 TP plan can apply, given the TP-planned block linears and which of them
    are (or would be) float8."""
    if FLOAT8_LINEAR not in job_config.model.converters:
        return Float8TPDecision(False, f"{FLOAT8_LINEAR!r} is not in model.converters")
    recipe = job_config.quantize.linear.float8.recipe_name
    if recipe not in (None, "tensorwise"):
        return Float8TPDecision(
            False, f"recipe {recipe!r}: torchtitan keeps plain TP (high-precision all-gathers) for rowwise recipes"
        )
    unconverted = [name for name in planned if name not in converted]
    if unconverted:
        return Float8TPDecision(
            False,
            f"{len(unconverted)} of {len(planned)} block linears stay high precision "
            f"(filter_fqns), e.g. {unconverted[0]!r}: torchao's float8 TP styles need every "
            "TP-planned linear in float8, so plain TP is used (converted linears still run float8)",
            unconverted,
        )
    return Float8TPDecision(True, "tensorwise float8 TP: float8 all-gathers for the block linears")


def float8_tp_decision(model: nn.Module, job_config) -> Float8TPDecision:
    """:func:`decide_float8_tp` for a model whose float8 converter has already run."""
    from torchao.float8.float8_linear import Float8Linear  # optional: the [float8] extra

    planned = tp_planned_linear_fqns(model)
    converted = {name for name, mod in model.named_modules() if isinstance(mod, Float8Linear)}
    return decide_float8_tp(job_config, planned, converted)


@contextlib.contextmanager
def float8_tp_plan_enabled(model: nn.Module, job_config):
    """Around a torchtitan parallelize call: make its ``"float8" in converters`` test true when the
    float8 TP plan can and should apply (see the module docstring); restore the list afterwards."""
    converters = job_config.model.converters
    if FLOAT8_LINEAR not in converters or TORCHTITAN_FLOAT8_FLAG in converters:
        yield
        return
    decision = float8_tp_decision(model, job_config)
    if not decision.enabled:
        if job_config.parallelism.tensor_parallel_degree > 1:
            logger.warning(f"[tst] float8 TP plan not applied: {decision.reason}")
        yield
        return
    job_config.model.converters = [*converters, TORCHTITAN_FLOAT8_FLAG]
    try:
        yield
    finally:
        job_config.model.converters = converters


# -- MoE: float8 grouped GEMMs for the experts ---------------------------------------------------
def grouped_experts_filter(fqns: list[str]):
    def keep(mod: nn.Module, fqn: str) -> bool:
        return isinstance(mod, GroupedExperts) and any(target in fqn for target in fqns)

    return keep


def convert_grouped_experts_to_float8(model: nn.Module, fqns=("experts",)) -> list[str]:
    """Swap the weights of the ``GroupedExperts`` modules whose name contains one of ``fqns`` for
    torchao's ``Float8TrainingWeightWrapperTensor`` (dynamic rowwise float8 grouped GEMMs).
    Returns the converted module names. Runs anywhere; the float8 kernels need an SM89+ GPU."""
    # optional: the [float8] extra
    from torchao.prototype.moe_training.config import Float8TrainingOpConfig
    from torchao.quantization.quant_api import quantize_

    keep = grouped_experts_filter(fqn_list(fqns))
    converted = [name for name, mod in model.named_modules() if keep(mod, name)]
    quantize_(model, config=Float8TrainingOpConfig(), filter_fn=keep)
    return converted


class Float8GroupedExpertsConverter:
    """``tst.quantize.grouped_mm.float8``: torchtitan's ``quantize.grouped_mm.float8`` for torchao
    0.18 (options under ``[quantize.grouped_mm.float8]``: ``fqns``, e.g. ``["experts"]``)."""

    def __init__(self, job_config, parallel_dims):
        QuantizationConverter._validate(job_config)  # one quantization type for dense and MoE
        self.fqns = fqn_list(job_config.quantize.grouped_mm.float8.fqns) or ["experts"]
        if not has_cuda_capability(8, 9):
            raise ValueError(
                f"model.converters {FLOAT8_GROUPED_MM!r}: float8 grouped GEMMs need an SM89+ GPU "
                "(H100, H200, B200, L40S...); there is no emulation for them"
            )
        compile_config = job_config.compile
        if not (compile_config.enable and "model" in compile_config.components):
            logger.warning(
                "Compile is required for high performance float8 MoE training; enable it with --compile.enable"
            )
        # float8 grouped GEMMs need token groups aligned to 16 (16 bytes / 1 byte per element).
        set_token_group_alignment_size_m(FP8_GROUP_ALIGNMENT_SIZE)
        self.enabled = True

    def convert(self, model: nn.Module) -> None:
        converted = convert_grouped_experts_to_float8(model, self.fqns)
        logger.info(
            f"[tst] float8 rowwise grouped GEMMs for {len(converted)} expert modules "
            f"(matching {self.fqns})"
        )

    def post_optimizer_hook(self, model) -> None:
        pass


def register_converters() -> None:
    """Register ``tst.quantize.grouped_mm.float8`` with torchtitan (idempotent)."""
    if FLOAT8_GROUPED_MM not in model_converter._registry_model_converter_cls:
        model_converter.register_model_converter(Float8GroupedExpertsConverter, FLOAT8_GROUPED_MM)


def is_float8_weight(tensor: torch.Tensor) -> bool:
    """True for an expert weight converted by :func:`convert_grouped_experts_to_float8`."""
    from torchao.prototype.moe_training.tensor import Float8TrainingWeightWrapperTensor  # optional: [float8]

    return isinstance(tensor, Float8TrainingWeightWrapperTensor) or isinstance(
        getattr(tensor, "data", None), Float8TrainingWeightWrapperTensor
    )
