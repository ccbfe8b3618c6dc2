"""Checks of the model, parallelism, float8 and sample-size keys that stop a bad config early.

:func:`validate_model_config` runs at parse time (from ``tst_titan.config.validate_job_config``,
for TST specs). :func:`resolve_parallelism` and :func:`check_sample_fits_store` need the world
size and run in the dry run (``python -m tst_titan.dryrun``) and, with the degrees a config fixes,
at parse time. Every message names the key to change.
"""

from __future__ import annotations

import math

#: Upper bound on the tokens of one sample, ``tst.bag_size * (training.seq_len + 1)`` (phase 1 reads
#: s * (L + 1) tokens per sample). 2^20 tokens is > 30x the paper's largest (s = 16, L = 2048 or
#: 4096); beyond it a "bag" is not a bag any more, and the int64 batches the dataloader builds
#: (inputs and labels: 16 bytes per token per sample) grow without bound.
MAX_SAMPLE_TOKENS = 1 << 20


def _error(message: str):
    from tst_titan.config import ConfigError

    return ConfigError(message)


def _moe_args(model_args):
    return getattr(model_args, "moe_args", None) if getattr(model_args, "moe_enabled", False) else None


# -- float8 ---------------------------------------------------------------------------------------
def check_float8(job_config, model_args) -> None:
    from torchtitan.protocols.model_converter import _registry_model_converter_cls

    from tst_titan import float8

    converters = list(job_config.model.converters)
    for name in converters:
        if name == float8.TORCHTITAN_FLOAT8_GROUPED_MM:
            raise _error(
                f"model.converters: {name!r} (torchtitan 0.2.2's MoE float8) fails to import with "
                f"torchao 0.18 (MoETrainingConfig is gone); use {float8.FLOAT8_GROUPED_MM!r}"
            )
        if name not in _registry_model_converter_cls:
            known = ", ".join(sorted(_registry_model_converter_cls))
            raise _error(f"model.converters: unknown converter {name!r}; registered: {known}")
    cfg = job_config.quantize.linear.float8
    if float8.FLOAT8_LINEAR in converters:
        if cfg.recipe_name not in float8.FLOAT8_RECIPES:
            allowed = ", ".join(repr(r) for r in float8.FLOAT8_RECIPES[1:])
            raise _error(
                f"quantize.linear.float8.recipe_name = {cfg.recipe_name!r} is not a float8 recipe; "
                f"allowed: {allowed}, or leave it unset (tensorwise)"
            )
        if cfg.recipe_name is not None and cfg.enable_fsdp_float8_all_gather:
            raise _error(
                "quantize.linear.float8.enable_fsdp_float8_all_gather = true cannot be combined "
                f"with quantize.linear.float8.recipe_name = {cfg.recipe_name!r} (torchtitan asserts "
                "it): leave recipe_name unset for tensorwise scaling with float8 all-gathers"
            )
        if (
            cfg.recipe_name == "rowwise_with_gw_hp"
            and float8.AUTO_FILTER_SMALL_KN in float8._fqn_list(cfg.filter_fqns)
        ):
            raise _error(
                "quantize.linear.float8.filter_fqns: torchao has no auto_filter_small_kn for "
                "recipe_name = 'rowwise_with_gw_hp'; list the modules to skip instead"
            )
        compile_on = job_config.compile.enable and "model" in job_config.compile.components
        if cfg.emulate and compile_on:
            raise _error(
                "quantize.linear.float8.emulate = true does not work with compile.enable = true "
                "(torchtitan refuses it); emulation is for CPU correctness tests only"
            )
    if float8.FLOAT8_GROUPED_MM in converters:
        moe = _moe_args(model_args)
        if moe is None:
            raise _error(
                f"model.converters: {float8.FLOAT8_GROUPED_MM!r} converts MoE experts, but "
                f"model.flavor = {job_config.model.flavor!r} has none"
            )
        if not moe.use_grouped_mm:
            raise _error(
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
                raise _error(
                    f"parallelism.tensor_parallel_degree = {tp} does not divide {key} = {value} of "
                    f"model.flavor = {flavor!r} (tensor parallelism splits whole attention heads); "
                    f"allowed: 1{''.join(f', {d}' for d in divisors)}"
                )
        if model_args.vocab_size % tp:
            raise _error(
                f"parallelism.tensor_parallel_degree = {tp} does not divide the vocabulary "
                f"({model_args.vocab_size}) of model.flavor = {flavor!r}: loss parallel shards "
                "the logits over the vocabulary and TST's bag loss needs equal shards (pad the "
                "flavor's vocab_size to a multiple of the TP degree)"
            )
    divisor = tp * cp * 2
    if tp * cp > 1 and job_config.training.seq_len % divisor:
        raise _error(
            f"training.seq_len = {job_config.training.seq_len} must be a multiple of "
            f"{divisor} = 2 x parallelism.tensor_parallel_degree ({tp}) x "
            f"context_parallel_degree ({cp}) (torchtitan's sequence-parallel requirement)"
        )
    if ep > 1:
        moe = _moe_args(model_args)
        if moe is None:
            raise _error(
                f"parallelism.expert_parallel_degree = {ep} needs an MoE flavor; "
                f"model.flavor = {flavor!r} has no experts"
            )
        if moe.num_experts % ep:
            raise _error(
                f"parallelism.expert_parallel_degree = {ep} does not divide the "
                f"{moe.num_experts} experts of model.flavor = {flavor!r}"
            )


# -- sample size ----------------------------------------------------------------------------------
def sample_window(job_config) -> tuple[int, str]:
    """Tokens the largest sample takes, and what it is (phase-1 bag window or plain window)."""
    from tst_titan.data import window_tokens

    tst, training = job_config.tst, job_config.training
    bag_steps = round(tst.superposition_fraction * training.steps) if tst.enable else 0
    if bag_steps > 0:
        return window_tokens(getattr(tst, "mode", "full"), tst.bag_size, training.seq_len)
    return training.seq_len + 1, f"training.seq_len ({training.seq_len}) + 1"


def check_sample_size(job_config) -> None:
    window, what = sample_window(job_config)
    if window > MAX_SAMPLE_TOKENS:
        raise _error(
            f"tst.bag_size: a phase-1 sample would be {what} = {window} tokens, more than the "
            f"{MAX_SAMPLE_TOKENS} tokens per sample the data pipeline serves; lower tst.bag_size "
            "or training.seq_len"
        )


def check_sample_fits_store(job_config, dp_degree: int) -> dict | None:
    """If the token store exists: its training split must hold one sample for each of the
    ``dp_degree`` data-parallel ranks. Returns what was checked (None without a store)."""
    from tst_titan.data import store_dir_of
    from tst_titan.store import read_manifest

    try:
        path = store_dir_of(job_config)
        manifest = read_manifest(path) if path else None
    except (OSError, ValueError):
        return None
    if manifest is None:
        return None
    tokens = int(manifest["splits"]["train"]["tokens"])
    window, what = sample_window(job_config)
    needed = window * dp_degree
    if tokens < needed:
        raise _error(
            f"tst.bag_size / training.seq_len: one sample is {what} = {window} tokens, "
            f"{dp_degree} data-parallel rank(s) need {needed}, but the training split of "
            f"training.dataset_path = {path!r} holds {tokens}; use more text or a smaller "
            "tst.bag_size / training.seq_len"
        )
    return {"path": path, "train_tokens": tokens, "tokens_per_sample": window, "dp_ranks": dp_degree}


def validate_model_config(job_config, model_args) -> None:
    """Parse-time checks for a TST spec (see the module docstring)."""
    check_float8(job_config, model_args)
    check_parallel_shapes(job_config, model_args)
    check_sample_size(job_config)


# -- world-size dependent -------------------------------------------------------------------------
def resolve_parallelism(job_config, world_size: int | None = None) -> dict:
    """The degrees torchtitan's ``ParallelDims`` would use on ``world_size`` ranks (default: the
    product of the config's degrees, ``data_parallel_shard_degree = -1`` counting as 1), plus the
    derived mesh sizes, data-parallel degree and gradient-accumulation steps."""
    from torchtitan.distributed.parallel_dims import ParallelDims

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
        world_size *= max(degrees["dp_shard"], 1)
    if world_size < 1:
        raise _error(f"--world-size must be >= 1, got {world_size}")
    try:
        dims = ParallelDims(**degrees, world_size=world_size)
    except AssertionError as e:
        raise _error(
            f"parallelism.*_degree: {', '.join(f'{k}={v}' for k, v in degrees.items())} do not fit a "
            f"world size of {world_size}: {e}"
        ) from None
    fsdp = dims.dp_shard * dims.cp
    if dims.ep > 1 and (fsdp * dims.tp) % (dims.etp * dims.ep):
        raise _error(
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
        raise _error(
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
        "gradient_accumulation_steps": global_batch // (training.local_batch_size * dp),
    }
