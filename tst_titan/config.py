"""The ``[tst]`` config section, and the checks that stop a bad config before any compute.

Enable it in a torchtitan TOML with::

    [job]
    custom_config_module = "tst_titan.config"

    [tst]
    enable = true
    bag_size = 6                   # the paper's s
    superposition_fraction = 0.3   # the paper's r, a fraction of training.steps
    loss_weighting = "uniform"     # "uniform" | "power" | "mi" | "exponential"
    mode = "full"                  # "full" | "input_only" | "output_only" (ablations, paper 5.2)
    optimizer_at_switch = "keep"   # "keep" | "reset" AdamW's state at the first phase-2 step

Every key can be overridden on the command line (``--tst.bag_size 4``). torchtitan merges the
``JobConfig`` below into its own; importing this module also registers the TST train specs, so the
``model.name = "tst_llama3"`` in the same TOML resolves.
"""

# No `from __future__ import annotations`: torchtitan merges these dataclasses into its own
# JobConfig and resolves the field types from the merged class's module.
import contextlib
from dataclasses import dataclass, field

# Importing the package applies the CPU accommodations (no-op with CUDA) and registers train specs.
import tst_titan  # noqa: F401
from tst_titan.data import MODES
from tst_titan.loss import LOSS_WEIGHTINGS
from tst_titan.optimizer import OPTIMIZER_AT_SWITCH


class ConfigError(ValueError):
    """A bad configuration value; the message names the key and what is allowed."""


@dataclass
class TST:
    enable: bool = False
    """Train the first ``superposition_fraction`` of the steps on bags of ``bag_size`` tokens."""

    bag_size: int = 4
    """s: tokens per bag (>= 1). A bag's input is the mean of its s embeddings; each position is
    trained to predict every token of the next bag. s = 1 is exactly ordinary training."""

    superposition_fraction: float = 0.3
    """r in [0, 1): the first round(r * training.steps) optimizer steps use bags."""

    loss_weighting: str = "uniform"
    """Weight of target i of the next bag: "uniform", "power" (1/i), "mi" (the paper's fitted
    mutual-information curve 3.63 + 1.35 i^-1.25) or "exponential" (e^-i); normalised to mean 1."""

    mode: str = "full"
    """Which side of phase 1 is superposed (the paper's section 5.2 ablation): "full" (bag input,
    next-bag target), "input_only" (bag input, target the next single token after the bag) or
    "output_only" (ordinary token input, each position predicts its next s tokens with the bag loss).
    Phase 2 is ordinary next-token training in every mode."""

    optimizer_at_switch: str = "keep"
    """At the first phase-2 step, "keep" the optimizer state (AdamW moments; what a torchtitan
    resume does) or "reset" it to a fresh optimizer's (what patch-level training did). The
    learning-rate schedule runs on unchanged in both."""


@dataclass
class JobConfig:
    tst: TST = field(default_factory=TST)


def validate_tst_section(tst: TST) -> None:
    """Checks of the ``[tst]`` section alone. Run after parsing, not in ``__post_init__``: tyro
    would turn the error into a usage message and exit, hiding it from callers."""
    if not isinstance(tst.enable, bool):
        raise ConfigError(f"tst.enable must be true or false, got {tst.enable!r}")
    if isinstance(tst.bag_size, bool) or not isinstance(tst.bag_size, int) or tst.bag_size < 1:
        raise ConfigError(f"tst.bag_size must be an integer >= 1, got {tst.bag_size!r}")
    r = tst.superposition_fraction
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not (0.0 <= r < 1.0):
        raise ConfigError(f"tst.superposition_fraction must be a number in [0, 1), got {r!r}")
    if tst.loss_weighting not in LOSS_WEIGHTINGS:
        raise ConfigError(
            f"tst.loss_weighting must be one of {', '.join(map(repr, LOSS_WEIGHTINGS))}, "
            f"got {tst.loss_weighting!r}"
        )
    if tst.mode not in MODES:
        raise ConfigError(f"tst.mode must be one of {', '.join(map(repr, MODES))}, got {tst.mode!r}")
    if tst.optimizer_at_switch not in OPTIMIZER_AT_SWITCH:
        raise ConfigError(
            f"tst.optimizer_at_switch must be one of {', '.join(map(repr, OPTIMIZER_AT_SWITCH))}, "
            f"got {tst.optimizer_at_switch!r}"
        )
    if tst.enable and tst.mode != "full" and tst.bag_size < 2:
        raise ConfigError(
            f"tst.mode = {tst.mode!r} needs tst.bag_size >= 2, got {tst.bag_size}: with one token per "
            "bag it is ordinary next-token training (use tst.enable = false for the baseline)"
        )


_data_checks_deferred = False


@contextlib.contextmanager
def data_checks_deferred():
    """Parse without the checks that need the training data on disk (the dry run: it reports the
    data's state instead). Every other check still runs."""
    global _data_checks_deferred
    previous, _data_checks_deferred = _data_checks_deferred, True
    try:
        yield
    finally:
        _data_checks_deferred = previous


def validate_job_config(job_config) -> None:
    """Checks across sections. Called by torchtitan's ConfigManager right after parsing, i.e. before
    the trainer builds anything (see :func:`_install_config_check`)."""
    from tst_titan import specs

    tst = getattr(job_config, "tst", None)
    if tst is None:
        return
    validate_tst_section(tst)
    name = job_config.model.name
    is_tst_spec = name in specs.TST_SPEC_NAMES
    if tst.enable and not is_tst_spec:
        raise ConfigError(
            f"tst.enable = true needs a TST train spec, but model.name = {name!r}; "
            f"use one of {', '.join(sorted(specs.TST_SPEC_NAMES))}"
        )
    if not is_tst_spec:
        return

    if tst.enable and tst.optimizer_at_switch == "reset" and job_config.optimizer.early_step_in_backward:
        raise ConfigError(
            "tst.optimizer_at_switch = 'reset' needs optimizer.early_step_in_backward = false: the "
            "reset runs right before the first phase-2 optimizer step, which happens inside the "
            "backward pass with early_step_in_backward"
        )
    par = job_config.parallelism
    if par.pipeline_parallel_degree > 1 and tst.enable:
        raise ConfigError(
            "parallelism.pipeline_parallel_degree must be 1 with tst.enable = true "
            "(bag inputs are not supported by pipeline stages)"
        )
    if par.context_parallel_degree > 1 and tst.enable:
        raise ConfigError(
            "parallelism.context_parallel_degree must be 1 with tst.enable = true "
            "(context parallel shards the sequence of [L, s] bag inputs incorrectly)"
        )
    flavors = specs.get_tst_train_spec(name).model_args
    if job_config.model.flavor not in flavors:
        raise ConfigError(
            f"model.flavor = {job_config.model.flavor!r} is not a flavor of {name!r}; "
            f"allowed: {', '.join(sorted(flavors))}"
        )
    attn_type = getattr(flavors[job_config.model.flavor], "attn_type", "sdpa")
    if tst.enable and attn_type in ("flex", "varlen"):
        raise ConfigError(
            f"model.flavor = {job_config.model.flavor!r} uses {attn_type} attention, whose masks are "
            "built from 2-D token inputs; with tst.enable = true use an sdpa flavor"
        )
    for section in ("training", "validation"):
        workers = getattr(job_config, section).dataloader.num_workers
        if workers != 0:
            raise ConfigError(
                f"{section}.dataloader.num_workers must be 0 for TST specs, got {workers}: the "
                "token store serves slices without tokenizing, and the phase counter lives in "
                "the dataset of the training process, which worker processes would copy"
            )
    val, training = job_config.validation, job_config.training
    if job_config.compile.enable and val.enable and val.seq_len != training.seq_len:
        raise ConfigError(
            f"validation.seq_len ({val.seq_len}) must equal training.seq_len ({training.seq_len}) "
            "with compile.enable: the compiled blocks fail on the second sequence length"
        )
    # Model shape vs TP/EP degrees, float8 converters and recipe, tokens per sample.
    from tst_titan.model_checks import validate_model_config

    validate_model_config(job_config, flavors[job_config.model.flavor])
    if _data_checks_deferred:
        return
    from tst_titan.data import validate_data_config

    validate_data_config(job_config)


def _install_config_check() -> None:
    """torchtitan 0.2.2 has no hook for whole-config validation of custom sections; we extend its
    ``ConfigManager._validate_config`` (called at the end of ``parse_args``) once."""
    from torchtitan.config.manager import ConfigManager

    original = ConfigManager._validate_config
    if getattr(original, "_tst_titan", False):
        return

    def _validate_config(self) -> None:
        original(self)
        validate_job_config(self.config)

    _validate_config._tst_titan = True
    ConfigManager._validate_config = _validate_config


_install_config_check()
