"""Dry run of a training config, the library of ``python -m tst_titan.tools.dryrun``.

Parses the config exactly as ``python -m torchtitan.train`` does (torchtitan's ``ConfigManager``,
the ``[job] custom_config_module``, command-line overrides, so every tst_titan config check runs),
except that the training data need not exist yet; resolves the parallelism degrees for a world
size like torchtitan's ``ParallelDims``; builds the model on the meta device (no memory, no GPU)
and returns what the command prints (:func:`dry_run`):

* ``params``: total parameters, active parameters per token (MoE: embeddings, attention, norms,
  router, shared experts and top_k/num_experts of the routed experts), and the breakdown;
* ``flops_per_position``: torchtitan's ``get_nparams_and_flops`` (6 x active non-embedding
  parameters + attention), per position; a phase-1 position carries s tokens at the same cost;
* ``tokens_per_step``: positions per optimizer step, and the text tokens read per step in each
  phase (phase 1 reads s per position);
* ``parallelism``: degrees for ``--world-size`` (default: the product of the config's degrees;
  with ``data_parallel_shard_degree = -1``, the smallest world size the config runs on),
  gradient-accumulation steps;
* ``memory_per_gpu_gib``: parameters + gradients + AdamW state, sharded as FSDP x TP x EP would
  shard them, in ``training.dtype`` (torchtitan keeps sharded parameters, gradients and
  optimizer state in it; ``mixed_precision_param`` only sets the compute copy). What it leaves out
  is listed in the JSON;
* ``float8``: which linears the converter would convert, and whether the float8 TP plan applies;
* ``data``: whether the token store exists and holds one sample per data-parallel rank.
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn
from torchtitan.config import ConfigManager
from torchtitan.models.moe.moe import GroupedExperts
from torchtitan.protocols.train_spec import get_train_spec

from tst_titan.components.checks import (
    check_sample_fits_store,
    moe_args_of,
    data_checks_deferred,
    resolve_parallelism,
    check_data_config,
)
from tst_titan.components.data_source import store_dir_of
from tst_titan.infra import float8
from tst_titan.method.schedule import switch_step
from tst_titan.train_spec import config_path as packaged_config
from tst_titan.train_spec import register

GIB = 1024**3
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def parse_config(config_path: str, overrides: list[str] = ()):
    """Parse like torchtitan (the TST specs and converters registered), with the data-on-disk
    checks deferred."""
    register()
    with data_checks_deferred():
        return ConfigManager().parse_args(["--job.config_file", config_path, *overrides])


def _count_params(model, model_args) -> dict:
    """Total/active parameters in the categories torchtitan's MoE counter uses."""
    counts = {"embedding": 0, "output": 0, "experts": 0, "router": 0, "shared_experts": 0, "other": 0}
    for name, p in model.named_parameters():
        n = p.numel()
        if "embedding" in name:
            counts["embedding"] += n
        elif name.startswith("output."):
            counts["output"] += n
        elif "moe.shared_experts" in name:
            counts["shared_experts"] += n
        elif "moe.router" in name:
            counts["router"] += n
        elif "moe.experts" in name:
            counts["experts"] += n
        else:
            counts["other"] += n
    total = sum(counts.values())
    if getattr(model_args, "enable_weight_tying", False):
        total -= counts["embedding"]
    active = total
    moe = moe_args_of(model_args)
    if moe is not None:
        active = total - counts["experts"] + counts["experts"] * moe.top_k // moe.num_experts
    return {"total": total, "active_per_token": active, "breakdown": counts}


def _memory(model, job_config, par: dict) -> dict:
    """Parameters + gradients + AdamW state per GPU, sharded like FSDP2 x TP x EP shard them."""
    dtype = job_config.training.dtype
    bytes_per = _DTYPE_BYTES.get(dtype, 4)
    fsdp, tp = par["fsdp"], par["tp"]
    shards_full = fsdp * tp  # TP-sharded dense weights; experts: efsdp x ep x etp = fsdp x tp
    per_rank = 0.0
    for name, p in model.named_parameters():
        replicated_over_tp = tp > 1 and (p.dim() == 1 or "moe.router" in name)
        per_rank += p.numel() / (fsdp if replicated_over_tp else shards_full)
    if par["pp"] > 1:
        per_rank /= par["pp"]  # roughly: stages split the layers
    optimizer = job_config.optimizer.name
    states = 2 if optimizer in ("AdamW", "Adam") else 1
    params_gib = per_rank * bytes_per / GIB
    return {
        "params": round(params_gib, 3),
        "grads": round(params_gib, 3),
        "optimizer_state": round(states * params_gib, 3),
        "total": round((2 + states) * params_gib, 3),
        "dtype": dtype,
        "sharded_over": f"FSDP {fsdp} x TP {tp}" + (f" (experts: EP {par['ep']} x EFSDP {par['efsdp']} x ETP {par['etp']})" if par["ep"] > 1 else ""),
        "includes": f"sharded parameters, gradients and {optimizer} state ({states} tensors) in "
        f"training.dtype = {dtype}; norms and MoE routers counted as replicated over TP",
        "excludes": "activations (see activation_checkpoint), logits and loss buffers, FSDP "
        "all-gather/reduce-scatter buffers (unsharded layer weights in "
        f"mixed_precision_param = {job_config.training.mixed_precision_param}), float8 casts, "
        "torch.compile workspaces, CUDA context and allocator fragmentation",
    }


def _float8(model, job_config, par: dict) -> dict | None:
    converters = list(job_config.model.converters)
    if not converters:
        return None
    out: dict = {"converters": converters}
    if float8.FLOAT8_LINEAR in converters:
        cfg = job_config.quantize.linear.float8
        converted = float8.float8_linear_fqns(model, cfg)
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        decision = float8.decide_float8_tp(job_config, float8.tp_planned_linear_fqns(model), set(converted))
        out["linear"] = {
            "recipe": cfg.recipe_name or "tensorwise",
            "filter_fqns": list(cfg.filter_fqns),
            "converted_linears": len(converted),
            "of_linears": len(linears),
            "converted_kinds": sorted({n.split(".", 2)[-1] if n.startswith("layers.") else n for n in converted}),
            "fsdp_float8_all_gather": bool(cfg.enable_fsdp_float8_all_gather and par["fsdp"] > 1),
            **(decision.as_dict() if par["tp"] > 1 else {"float8_tp_plan": False, "reason": "no TP"}),
        }
    if float8.FLOAT8_GROUPED_MM in converters:
        fqns = float8.fqn_list(job_config.quantize.grouped_mm.float8.fqns) or ["experts"]
        keep = float8.grouped_experts_filter(fqns)
        out["grouped_mm"] = {
            "fqns": fqns,
            "converted_expert_modules": sum(1 for n, m in model.named_modules() if keep(m, n)),
            "of_expert_modules": sum(1 for m in model.modules() if isinstance(m, GroupedExperts)),
        }
    return out


def _data(job_config, par: dict, vocab_size: int) -> dict:
    """The token store's state; ``vocab_size``: the model flavor's (it names the embedded store)."""
    path = store_dir_of(job_config, vocab_size)
    checked = check_sample_fits_store(job_config, par["data_parallel"], vocab_size)
    if checked is None:
        return {
            "dataset": job_config.training.dataset,
            "path": path,
            "present": False,
            "note": "not checked: build it first (python -m tst_titan.tools.prepare --out PATH ...; the "
            "embedded and folder datasets are built on first use)",
        }
    # The store exists: run the data checks the parse deferred (tokenizer vs vocab, ...).
    check_data_config(job_config, vocab_size)
    return {"dataset": job_config.training.dataset, "present": True, **checked}


def dry_run(config_path: str, overrides: list[str] = (), world_size: int | None = None) -> dict:
    """Everything the command prints, as a dict. ``config_path``: a TOML file, or the name of a
    packaged config (``debug_tst.toml``). Raises ``ConfigError`` for a bad config."""
    if not os.path.exists(config_path) and os.sep not in config_path:
        config_path = packaged_config(config_path)
    job_config = parse_config(config_path, list(overrides))
    par = resolve_parallelism(job_config, world_size)
    spec = get_train_spec(job_config.model.name)
    model_args = copy.deepcopy(spec.model_args[job_config.model.flavor])
    model_args.update_from_config(job_config)
    with torch.device("meta"):
        model = spec.model_cls(model_args)
    training, tst = job_config.training, getattr(job_config, "tst", None)
    _, flops = model_args.get_nparams_and_flops(model, training.seq_len)
    params = _count_params(model, model_args)
    positions = par["global_batch_size"] * training.seq_len
    enabled = tst is not None and tst.enable
    s = tst.bag_size if enabled and tst.mode != "output_only" else 1
    bag_steps = switch_step(tst.superposition_fraction, training.steps) if enabled else 0
    return {
        "config": os.path.abspath(config_path),
        "model": {"name": job_config.model.name, "flavor": job_config.model.flavor},
        "params": params,
        "flops_per_position": flops,
        "tokens_per_step": {
            "positions": positions,
            "global_batch_size": par["global_batch_size"],
            "seq_len": training.seq_len,
            "phase1_text_tokens": positions * s if bag_steps else None,
            "phase2_text_tokens": positions,
        },
        "tst": None if tst is None else {
            "enable": tst.enable,
            "bag_size": tst.bag_size,
            "superposition_fraction": tst.superposition_fraction,
            "mode": tst.mode,
            "optimizer_at_switch": tst.optimizer_at_switch,
            "rewarm_steps": tst.rewarm_steps,
            "data_seed": tst.data_seed,
            "window_order": tst.window_order,
            "bag_steps": bag_steps,
            "steps": training.steps,
        },
        "training_flops": flops * positions * training.steps,
        "parallelism": par,
        "memory_per_gpu_gib": _memory(model, job_config, par),
        "float8": _float8(model, job_config, par),
        "compile": job_config.compile.enable,
        "activation_checkpoint": job_config.activation_checkpoint.mode,
        "data": _data(job_config, par, spec.model_args[job_config.model.flavor].vocab_size),
    }
