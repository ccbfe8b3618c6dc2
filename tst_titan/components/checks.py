"""Every config check, in one place: a bad config stops before any compute, naming the key.

:func:`check_job_config` runs when torchtitan parses a config (``tst_titan.infra.config_hook``)
and again for the data at trainer start: the ``[tst]`` section, its fit with the other sections,
the model, parallelism, float8 and sample-size keys, and the data. :func:`resolve_parallelism` and
:func:`check_sample_fits_store` need the world size and also serve the dry run.
"""

from __future__ import annotations

import contextlib
import math
import os

from torchtitan.distributed.parallel_dims import ParallelDims
from torchtitan.protocols.model_converter import _registry_model_converter_cls

from tst_titan.components.data_source import store_dir_of
from tst_titan.datastore.store import read_manifest
from tst_titan.infra import float8
from tst_titan.job_config import (
    DATASETS,
    LOSS_WEIGHTINGS,
    MODES,
    OPTIMIZER_AT_SWITCH,
    TST,
    WINDOW_ORDERS,
    ConfigError,
)
from tst_titan.method.schedule import gradient_accumulation_steps, switch_step, window_tokens

#: Upper bound on the tokens of one sample, ``tst.bag_size * (training.seq_len + 1)`` (phase 1 reads
#: s * (L + 1) tokens per sample). 2^20 tokens is > 30x the paper's largest (s = 16, L = 2048 or
#: 4096); beyond it a "bag" is not a bag any more, and the int64 batches the dataloader builds
#: (inputs and labels: 16 bytes per token per sample) grow without bound.
MAX_SAMPLE_TOKENS = 1 << 20


def moe_args_of(model_args):
    return getattr(model_args, "moe_args", None) if getattr(model_args, "moe_enabled", False) else None


# -- float8 ---------------------------------------------------------------------------------------
def check_float8(job_config, model_args) -> None:
    converters = list(job_config.model.converters)
    for name in converters:
        if name == float8.TORCHTITAN_FLOAT8_GROUPED_MM:
            raise ConfigError(
                f"model.converters: {name!r} (torchtitan 0.2.2's MoE float8) fails to import with "
                f"torchao 0.18 (MoETrainingConfig is gone); use {float8.FLOAT8_GROUPED_MM!r}"
            )
        if name not in _registry_model_converter_cls:
            known = ", ".join(sorted(_registry_model_converter_cls))
            raise ConfigError(f"model.converters: unknown converter {name!r}; registered: {known}")
    cfg = job_config.quantize.linear.float8
    if float8.FLOAT8_LINEAR in converters:
        if cfg.recipe_name not in float8.FLOAT8_RECIPES:
            allowed = ", ".join(repr(r) for r in float8.FLOAT8_RECIPES[1:])
            raise ConfigError(
                f"quantize.linear.float8.recipe_name = {cfg.recipe_name!r} is not a float8 recipe; "
                f"allowed: {allowed}, or leave it unset (tensorwise)"
            )
        if cfg.recipe_name is not None and cfg.enable_fsdp_float8_all_gather:
            raise ConfigError(
                "quantize.linear.float8.enable_fsdp_float8_all_gather = true cannot be combined "
                f"with quantize.linear.float8.recipe_name = {cfg.recipe_name!r} (torchtitan asserts "
                "it): leave recipe_name unset for tensorwise scaling with float8 all-gathers"
            )
        if (
            cfg.recipe_name == "rowwise_with_gw_hp"
            and float8.AUTO_FILTER_SMALL_KN in float8.fqn_list(cfg.filter_fqns)
        ):
            raise ConfigError(
                "quantize.linear.float8.filter_fqns: torchao has no auto_filter_small_kn for "
                "recipe_name = 'rowwise_with_gw_hp'; list the modules to skip instead"
            )
        compile_on = job_config.compile.enable and "model" in job_config.compile.components
        if cfg.emulate and compile_on:
            raise ConfigError(
                "quantize.linear.float8.emulate = true does not work with compile.enable = true "
                "(torchtitan refuses it); emulation is for CPU correctness tests only"
            )
    if float8.FLOAT8_GROUPED_MM in converters:
        moe = moe_args_of(model_args)
        if moe is None:
            raise ConfigError(
                f"model.converters: {float8.FLOAT8_GROUPED_MM!r} converts MoE experts, but "
                f"model.flavor = {job_config.model.flavor!r} has none"
            )
        if not moe.use_grouped_mm:
            raise ConfigError(
                f"model.converters: {float8.FLOAT8_GROUPED_MM!r} needs grouped-mm experts, but "
                f"model.flavor = {job_config.model.flavor!r} computes them with a for-loop "
                "(use_grouped_mm = False)"
            )


# -- parallelism that the config alone decides ----------------------------------------------------
def check_parallel_shapes(job_config, model_args) -> None:
    par = job_config.parallelism
    tp, cp, ep = par.tensor_parallel_degree, par.context_parallel_degree, par.expert_parallel_degree
    flavor = job_config.model.flavor
    if tp > 1:
        n_heads = model_args.n_heads
        n_kv_heads = getattr(model_args, "n_kv_heads", None) or n_heads
        for key, value in (("n_heads", n_heads), ("n_kv_heads", n_kv_heads)):
            if value % tp:
                divisors = [d for d in range(2, n_heads + 1) if n_heads % d == 0 and n_kv_heads % d == 0]
                raise ConfigError(
                    f"parallelism.tensor_parallel_degree = {tp} does not divide {key} = {value} of "
                    f"model.flavor = {flavor!r} (tensor parallelism splits whole attention heads); "
                    f"allowed: 1{''.join(f', {d}' for d in divisors)}"
                )
        if model_args.vocab_size % tp:
            raise ConfigError(
                f"parallelism.tensor_parallel_degree = {tp} does not divide the vocabulary "
                f"({model_args.vocab_size}) of model.flavor = {flavor!r}: loss parallel shards "
                "the logits over the vocabulary and TST's bag loss needs equal shards (pad the "
                "flavor's vocab_size to a multiple of the TP degree)"
            )
    divisor = tp * cp * 2
    if tp * cp > 1 and job_config.training.seq_len % divisor:
        raise ConfigError(
            f"training.seq_len = {job_config.training.seq_len} must be a multiple of "
            f"{divisor} = 2 x parallelism.tensor_parallel_degree ({tp}) x "
            f"context_parallel_degree ({cp}) (torchtitan's sequence-parallel requirement)"
        )
    if ep > 1:
        moe = moe_args_of(model_args)
        if moe is None:
            raise ConfigError(
                f"parallelism.expert_parallel_degree = {ep} needs an MoE flavor; "
                f"model.flavor = {flavor!r} has no experts"
            )
        if moe.num_experts % ep:
            raise ConfigError(
                f"parallelism.expert_parallel_degree = {ep} does not divide the "
                f"{moe.num_experts} experts of model.flavor = {flavor!r}"
            )


# -- sample size ----------------------------------------------------------------------------------
def sample_window(job_config) -> tuple[int, str]:
    """Tokens the largest sample takes, and what it is (phase-1 bag window or plain window)."""
    tst, training = job_config.tst, job_config.training
    bag_steps = switch_step(tst.superposition_fraction, training.steps) if tst.enable else 0
    if bag_steps > 0:
        return window_tokens(tst.mode, tst.bag_size, training.seq_len)
    return training.seq_len + 1, f"training.seq_len ({training.seq_len}) + 1"


def check_sample_size(job_config) -> None:
    window, what = sample_window(job_config)
    if window > MAX_SAMPLE_TOKENS:
        raise ConfigError(
            f"tst.bag_size: a phase-1 sample would be {what} = {window} tokens, more than the "
            f"{MAX_SAMPLE_TOKENS} tokens per sample the data pipeline serves; lower tst.bag_size "
            "or training.seq_len"
        )


def check_sample_fits_store(job_config, dp_degree: int, vocab_size: int) -> dict | None:
    """If the token store exists: its training split must hold one sample for each of the
    ``dp_degree`` data-parallel ranks. Returns what was checked (None without a store)."""
    try:
        path = store_dir_of(job_config, vocab_size)
        manifest = read_manifest(path) if path else None
    except (OSError, ValueError):
        return None
    if manifest is None:
        return None
    tokens = int(manifest["splits"]["train"]["tokens"])
    window, what = sample_window(job_config)
    needed = window * dp_degree
    if tokens < needed:
        raise ConfigError(
            f"tst.bag_size / training.seq_len: one sample is {what} = {window} tokens, "
            f"{dp_degree} data-parallel rank(s) need {needed}, but the training split of "
            f"training.dataset_path = {path!r} holds {tokens}; use more text or a smaller "
            "tst.bag_size / training.seq_len"
        )
    return {"path": path, "train_tokens": tokens, "tokens_per_sample": window, "dp_ranks": dp_degree}


def check_model_config(job_config, model_args) -> None:
    """Parse-time checks for a TST spec (see the module docstring)."""
    check_float8(job_config, model_args)
    check_parallel_shapes(job_config, model_args)
    check_sample_size(job_config)


# -- world-size dependent -------------------------------------------------------------------------
def _fewest_fsdp_shards(degrees: dict) -> int:
    """The smallest ``dp_shard`` for which expert parallelism (which borrows its ranks from
    FSDP x CP x TP) fits: ``ep x etp`` must divide ``dp_shard x cp x tp``."""
    experts = degrees["ep"] * degrees["etp"] if degrees["ep"] > 1 else 1
    return next(k for k in range(1, experts + 1) if (k * degrees["cp"] * degrees["tp"]) % experts == 0)


def resolve_parallelism(job_config, world_size: int | None = None) -> dict:
    """The degrees torchtitan's ``ParallelDims`` would use on ``world_size`` ranks, plus the
    derived mesh sizes, data-parallel degree and gradient-accumulation steps. Default world size:
    the product of the config's degrees; with ``data_parallel_shard_degree = -1``, the smallest
    world size the config runs on (the fewest FSDP shards that expert parallelism allows)."""
    par = job_config.parallelism
    degrees = {
        "dp_replicate": par.data_parallel_replicate_degree,
        "dp_shard": par.data_parallel_shard_degree,
        "cp": par.context_parallel_degree,
        "tp": par.tensor_parallel_degree,
        "pp": par.pipeline_parallel_degree,
        "ep": par.expert_parallel_degree,
        "etp": par.expert_tensor_parallel_degree,
    }
    if world_size is None:
        world_size = math.prod(v for k, v in degrees.items() if k not in ("ep", "etp", "dp_shard"))
        world_size *= degrees["dp_shard"] if degrees["dp_shard"] > 0 else _fewest_fsdp_shards(degrees)
    if world_size < 1:
        raise ConfigError(f"--world-size must be >= 1, got {world_size}")
    try:
        dims = ParallelDims(**degrees, world_size=world_size)
    except AssertionError as e:
        raise ConfigError(
            f"parallelism.*_degree: {', '.join(f'{k}={v}' for k, v in degrees.items())} do not fit a "
            f"world size of {world_size}: {e}"
        ) from None
    fsdp = dims.dp_shard * dims.cp
    if dims.ep > 1 and (fsdp * dims.tp) % (dims.etp * dims.ep):
        raise ConfigError(
            f"parallelism.expert_parallel_degree = {dims.ep} (x expert_tensor_parallel_degree "
            f"{dims.etp}) must divide data_parallel_shard_degree x context_parallel_degree x "
            f"tensor_parallel_degree = {fsdp * dims.tp} on a world size of {world_size}"
        )
    dp = dims.dp_replicate * dims.dp_shard
    training = job_config.training
    global_batch = training.global_batch_size
    if global_batch < 0:
        global_batch = training.local_batch_size * dp
    if global_batch % (training.local_batch_size * dp):
        raise ConfigError(
            f"training.global_batch_size = {global_batch} must be a multiple of "
            f"training.local_batch_size ({training.local_batch_size}) x data-parallel degree "
            f"({dp}) on a world size of {world_size}"
        )
    return {
        "world_size": world_size,
        "dp_replicate": dims.dp_replicate,
        "dp_shard": dims.dp_shard,
        "cp": dims.cp,
        "tp": dims.tp,
        "pp": dims.pp,
        "ep": dims.ep,
        "etp": dims.etp,
        "fsdp": fsdp,
        "efsdp": fsdp * dims.tp // (dims.etp * dims.ep) if dims.ep > 1 else None,
        "data_parallel": dp,
        "loss_parallel": dims.tp > 1 and not job_config.parallelism.disable_loss_parallel,
        "global_batch_size": global_batch,
        "gradient_accumulation_steps": gradient_accumulation_steps(global_batch, training.local_batch_size, dp),
    }


# -- the [tst] section and its fit with the rest of the config ------------------------------
def tst_section(job_config) -> TST:
    """The ``[tst]`` section of a config that a TST train spec builds from; a ``ConfigError``
    saying how to add it when the config has none."""
    tst = getattr(job_config, "tst", None)
    if tst is None:
        raise ConfigError(
            f"model.name = {job_config.model.name!r} is a TST train spec, but the config has no [tst] "
            'section: add [job] custom_config_module = "tst_titan.config" (with tst.enable = false '
            "for the baseline)"
        )
    return tst


def check_tst_section(tst: TST) -> None:
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
    steps = tst.rewarm_steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"tst.rewarm_steps must be an integer >= 0, got {steps!r}")
    seed = tst.data_seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(
            f"tst.data_seed must be an integer >= 0 (0: the token store's document order), got {seed!r}"
        )
    if tst.window_order not in WINDOW_ORDERS:
        raise ConfigError(
            f"tst.window_order must be one of {', '.join(map(repr, WINDOW_ORDERS))}, got {tst.window_order!r}"
        )
    if tst.optimizer_at_switch == "reset_rewarm" and steps < 1:
        raise ConfigError(
            "tst.rewarm_steps must be >= 1 with tst.optimizer_at_switch = 'reset_rewarm' (the steps "
            f"over which the learning rate is warmed up again after the switch), got {steps}"
        )
    if tst.optimizer_at_switch != "reset_rewarm" and steps != 0:
        raise ConfigError(
            f"tst.rewarm_steps = {steps} is only used with tst.optimizer_at_switch = 'reset_rewarm' "
            f"(this config has {tst.optimizer_at_switch!r}); leave it at 0"
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


def check_job_config(job_config, *, tst_spec_names, flavors_of) -> None:
    """Checks across sections. Called by torchtitan's ConfigManager right after parsing, i.e. before
    the trainer builds anything (``tst_titan.infra.config_hook``). ``tst_spec_names``: the TST
    train specs; ``flavors_of(name)``: a TST spec's model args by flavor."""
    name = job_config.model.name
    if getattr(job_config, "tst", None) is None and name not in tst_spec_names:
        return  # neither the [tst] section nor a TST spec: not ours to check
    tst = tst_section(job_config)
    check_tst_section(tst)
    is_tst_spec = name in tst_spec_names
    if tst.enable and not is_tst_spec:
        raise ConfigError(
            f"tst.enable = true needs a TST train spec, but model.name = {name!r}; "
            f"use one of {', '.join(sorted(tst_spec_names))}"
        )
    if not is_tst_spec:
        return

    if tst.enable and tst.optimizer_at_switch != "keep" and job_config.optimizer.early_step_in_backward:
        raise ConfigError(
            f"tst.optimizer_at_switch = {tst.optimizer_at_switch!r} needs optimizer.early_step_in_backward = false: the "
            "reset runs right before the first phase-2 optimizer step, which happens inside the "
            "backward pass with early_step_in_backward"
        )
    phase2_steps = job_config.training.steps - switch_step(tst.superposition_fraction, job_config.training.steps)
    if tst.enable and tst.rewarm_steps > phase2_steps:
        raise ConfigError(
            f"tst.rewarm_steps = {tst.rewarm_steps} is longer than phase 2 ({phase2_steps} steps of "
            f"training.steps = {job_config.training.steps}): the learning rate would never be warm again"
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
    flavors = flavors_of(name)
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
    model_args = flavors[job_config.model.flavor]
    check_model_config(job_config, model_args)
    if _data_checks_deferred:
        return
    check_data_config(job_config, model_args.vocab_size)


# -- data ---------------------------------------------------------------------------------------
def check_data_config(job_config, vocab_size: int) -> None:
    """Data checks that can run at config-parse time (no building); ``vocab_size`` is the model
    flavor's."""
    dataset, path = job_config.training.dataset, job_config.training.dataset_path
    if dataset not in DATASETS:
        allowed = "; ".join(f"{k!r}: {v}" for k, v in DATASETS.items())
        raise ConfigError(f"training.dataset = {dataset!r} is not known to TST specs; allowed: {allowed}")
    if dataset in ("folder", "store"):
        if not path:
            raise ConfigError(f"training.dataset = {dataset!r} needs training.dataset_path")
        if not os.path.isdir(path) or not os.listdir(path):
            raise ConfigError(f"training.dataset_path = {path!r} is missing or empty")
    if dataset == "store":
        manifest = read_manifest(path)
        if manifest is None:
            raise ConfigError(
                f"training.dataset_path = {path!r} is not a token store (no manifest.json); build "
                "one with `python -m tst_titan.tools.prepare --out DIR ...` or use training.dataset = 'folder'"
            )
        if manifest["vocab_size"] > vocab_size:
            raise ConfigError(
                f"the tokenizer of training.dataset_path = {path!r} has {manifest['vocab_size']} "
                f"tokens, more than model.flavor = {job_config.model.flavor!r} embeds ({vocab_size})"
            )
