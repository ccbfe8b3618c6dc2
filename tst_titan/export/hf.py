"""A trained run as a Hugging Face model folder, the library of ``python -m tst_titan.tools.export``.

A TST model is an ordinary language model (bags only change the training data and the loss), so
its checkpoint is exported exactly like a baseline's:

* ``model.safetensors`` -- the checkpoint's model weights converted by torchtitan's own state-dict
  adapter (``train_spec.state_dict_adapter(...).to_hf``; for llama3 it permutes the q/k rows from
  torchtitan's interleaved RoPE layout to Hugging Face's half-split one);
* ``config.json`` -- ``LlamaForCausalLM`` (llama3 family, with its llama3 RoPE scaling) or
  ``Qwen3ForCausalLM`` (dense qwen3), with the model's dims, RoPE theta, norm eps, vocab, tied or
  untied embeddings; ``generation_config.json`` with the bos/eos ids;
* the tokenizer -- ``tokenizer.json`` and ``tokenizer_config.json`` of the run's token store (the
  tokenizer the run trained with), set up so that ``transformers.AutoTokenizer`` loads it offline
  and prepends the bos token as training did.

The run's config comes from ``RUN_DIR/tst_run.json`` (written at trainer start by the TST metrics
processor), or from a TOML config plus torchtitan command-line overrides. The model args are the
spec's flavor, updated from the config as torchtitan's trainer does. Full and model-only
checkpoints both work.
"""

from __future__ import annotations

import copy
import json
import os
import re
import warnings
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torchtitan.config import ConfigManager
from torchtitan.models.llama3 import TransformerModelArgs
from torchtitan.models.qwen3 import Qwen3ModelArgs
from torchtitan.protocols.train_spec import get_train_spec

from tst_titan.components.data_source import store_dir_of
from tst_titan.method.embedding import install_bag_embedding
from tst_titan.run_files import RUN_FILE
from tst_titan.train_spec import TST_SPEC_NAMES, flavors_of, register


class ExportError(ValueError):
    """The run cannot be exported; the message says why and what to pass."""


# -- the run -----------------------------------------------------------------------------------
def load_job_config(run_dir: str, config: str | None = None, overrides: list[str] | tuple = ()):
    """The run's torchtitan ``JobConfig``: from ``--config`` (+ overrides) or ``tst_run.json``."""
    register()  # the TST specs, for the config's checks and for the model
    if config is not None:
        return ConfigManager().parse_args(["--job.config_file", config, *overrides])
    if overrides:
        raise ExportError(f"overrides {list(overrides)} need --config TOML")
    path = os.path.join(run_root(run_dir), RUN_FILE)
    if not os.path.isfile(path):
        raise ExportError(
            f"{path} not found: {run_dir!r} is not the dump folder of a TST-spec run (they write "
            f"{RUN_FILE} at start); pass the run's config with --config TOML [--section.key value ...]"
        )
    with open(path) as f:
        saved = json.load(f)["job_config"]
    manager = ConfigManager()
    module = saved.get("job", {}).get("custom_config_module") or "tst_titan.config"
    config_cls = manager._maybe_add_custom_config([], {"job": {"custom_config_module": module}})
    return manager._dict_to_dataclass(config_cls, saved)


def run_root(path: str) -> str:
    """The dump folder of ``path`` (itself, or above a ``checkpoint/step-N`` directory)."""
    for candidate in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
        if os.path.isfile(os.path.join(candidate, RUN_FILE)):
            return candidate
    return path


def complete_checkpoint_steps(folder: str) -> list[int]:
    """Steps of the complete checkpoints (``step-N`` with a ``.metadata``) in a checkpoint folder."""
    steps = []
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            m = re.fullmatch(r"step-(\d+)", name)
            if m and os.path.isfile(os.path.join(folder, name, ".metadata")):
                steps.append(int(m.group(1)))
    return sorted(steps)


def checkpoint_step_dir(run_dir: str, job_config, step: int | None = None) -> str:
    """The ``step-N`` directory to export (the latest complete one unless ``step``)."""
    if os.path.isfile(os.path.join(run_dir, ".metadata")):
        return run_dir  # a step directory itself
    folder = os.path.join(run_dir, job_config.checkpoint.folder)
    if step is not None:
        path = os.path.join(folder, f"step-{step}")
        if not os.path.isfile(os.path.join(path, ".metadata")):
            raise ExportError(f"no complete checkpoint {path} (no .metadata)")
        return path
    steps = complete_checkpoint_steps(folder)
    if not steps:
        raise ExportError(f"no checkpoint in {folder}: train with checkpoint.enable = true")
    return os.path.join(folder, f"step-{max(steps)}")


def _spec_and_args(job_config):
    spec = get_train_spec(job_config.model.name)
    if job_config.model.flavor not in spec.model_args:
        raise ExportError(
            f"model.flavor = {job_config.model.flavor!r} is not a flavor of {job_config.model.name!r}"
        )
    model_args = copy.deepcopy(spec.model_args[job_config.model.flavor])
    model_args.update_from_config(job_config)
    return spec, model_args


def family_of(model_args) -> str:
    if isinstance(model_args, TransformerModelArgs):
        return "llama3"
    if isinstance(model_args, Qwen3ModelArgs):
        if model_args.moe_enabled:
            raise ExportError("qwen3 MoE flavors are not exported (only dense qwen3 and llama3)")
        if not model_args.qk_norm:
            raise ExportError("qwen3 without qk_norm has no Qwen3ForCausalLM equivalent")
        return "qwen3"
    raise ExportError(
        f"{type(model_args).__name__}: only the llama3 and (dense) qwen3 families are exported"
    )


def load_model_state(step_dir: str, spec, model_args) -> dict[str, torch.Tensor]:
    """The checkpoint's model weights as full CPU tensors (torchtitan key names)."""
    with torch.device("meta"):
        model = spec.model_cls(model_args)
    state = {k: torch.empty(v.shape, dtype=v.dtype) for k, v in model.state_dict().items()}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": yes
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=step_dir)
    return state


def load_model(run_dir: str, step: int | None = None, config: str | None = None,
               overrides: list[str] | tuple = ()):
    """``(model, job_config)``: the run's model class (the spec's, TST hooks included for TST
    specs) on CPU with the checkpoint's weights, in eval mode."""
    job_config = load_job_config(run_dir, config, overrides)
    spec, model_args = _spec_and_args(job_config)
    state = load_model_state(checkpoint_step_dir(run_dir, job_config, step), spec, model_args)
    model = spec.model_cls(model_args)
    model.load_state_dict(state, strict=False)  # non-persistent buffers (RoPE) are rebuilt
    if job_config.model.name in TST_SPEC_NAMES:
        install_bag_embedding(model)
    return model.eval(), job_config


# -- Hugging Face files ------------------------------------------------------------------------
def hf_config(family: str, model_args, state: dict[str, torch.Tensor], bos_id: int, eos_id: int,
              dtype: torch.dtype) -> dict[str, Any]:
    dtype_name = str(dtype).replace("torch.", "")
    common = {
        "vocab_size": model_args.vocab_size,
        "hidden_size": model_args.dim,
        "num_hidden_layers": model_args.n_layers,
        "num_attention_heads": model_args.n_heads,
        "hidden_act": "silu",
        "rms_norm_eps": model_args.norm_eps,
        "rope_theta": float(model_args.rope_theta),
        "attention_bias": False,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": dtype_name,
        "use_cache": True,
    }
    if family == "llama3":
        rope = model_args.rope_scaling_args
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            **common,
            "intermediate_size": int(state["layers.0.feed_forward.w1.weight"].shape[0]),
            "num_key_value_heads": model_args.n_kv_heads or model_args.n_heads,
            "head_dim": model_args.dim // model_args.n_heads,
            # torchtitan's llama3 always applies the llama3 RoPE frequency scaling
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": float(rope.scaling_factor),
                "low_freq_factor": float(rope.low_freq_factor),
                "high_freq_factor": float(rope.high_freq_factor),
                "original_max_position_embeddings": int(rope.original_max_position_embeddings),
            },
            # HF wants it above the original length the scaling extends (original x factor)
            "max_position_embeddings": max(
                model_args.max_seq_len,
                int(rope.original_max_position_embeddings * rope.scaling_factor),
                int(rope.original_max_position_embeddings) + 1,
            ),
            "mlp_bias": False,
            "tie_word_embeddings": False,
        }
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        **common,
        "intermediate_size": model_args.hidden_dim,
        "num_key_value_heads": model_args.n_kv_heads,
        "head_dim": model_args.head_dim,
        "max_position_embeddings": model_args.max_seq_len,
        "tie_word_embeddings": bool(model_args.enable_weight_tying),
        "use_sliding_window": False,
    }


def tokenizer_dir_of(job_config) -> str:
    """Where the run's tokenizer is: the token store (TST specs) or ``model.hf_assets_path``."""
    candidates = []
    if job_config.model.name in TST_SPEC_NAMES:
        vocab_size = flavors_of(job_config.model.name)[job_config.model.flavor].vocab_size
        candidates.append(store_dir_of(job_config, vocab_size))
    if job_config.model.hf_assets_path:
        candidates.append(job_config.model.hf_assets_path)
    for path in candidates:
        if os.path.isfile(os.path.join(path, "tokenizer.json")):
            return path
    raise ExportError(
        f"no tokenizer.json in {candidates} (paths are relative to where the run was started): "
        "pass --tokenizer DIR"
    )


def write_tokenizer(src: str, out: str, max_len: int) -> tuple[int, int, str, str]:
    """Copy the tokenizer; make it prepend bos like training did; return bos/eos ids and tokens."""
    with open(os.path.join(src, "tokenizer.json")) as f:
        tok = json.load(f)
    config_path = os.path.join(src, "tokenizer_config.json")
    config = {}
    if os.path.isfile(config_path):
        with open(config_path) as f:
            config = json.load(f)
    bos, eos = config.get("bos_token"), config.get("eos_token")
    added = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    vocab = tok.get("model", {}).get("vocab", {})
    ids = {**(vocab if isinstance(vocab, dict) else {}), **added}
    if bos not in ids or eos not in ids:
        raise ExportError(f"tokenizer in {src}: bos {bos!r} / eos {eos!r} not in its vocabulary")
    bos_id, eos_id = ids[bos], ids[eos]
    # A post-processor that prepends bos: Hugging Face fast tokenizers honour it on any version.
    tok["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    }
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    hf_tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": eos,
        "add_bos_token": False,  # the post-processor adds it
        "add_eos_token": False,
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
    }
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(hf_tok_config, f, indent=1)
    with open(os.path.join(out, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": bos, "eos_token": eos, "pad_token": eos}, f, indent=1)
    return bos_id, eos_id, bos, eos


def export(run_dir: str, out_dir: str, step: int | None = None, config: str | None = None,
           overrides: list[str] | tuple = (), tokenizer: str | None = None,
           dtype: str = "float32") -> dict[str, Any]:
    """Write the Hugging Face model folder; return a summary."""
    from safetensors.torch import save_file  # optional: the [export] extra

    job_config = load_job_config(run_dir, config, overrides)
    spec, model_args = _spec_and_args(job_config)
    family = family_of(model_args)
    if spec.state_dict_adapter is None:
        raise ExportError(f"{job_config.model.name!r} has no state-dict adapter")
    step_dir = checkpoint_step_dir(run_dir, job_config, step)
    state = load_model_state(step_dir, spec, model_args)
    torch_dtype = getattr(torch, dtype)

    tok_src = tokenizer or tokenizer_dir_of(job_config)
    adapter = spec.state_dict_adapter(model_args, None)  # no HF index to read: one file
    hf_state = adapter.to_hf(state)
    os.makedirs(out_dir, exist_ok=True)
    bos_id, eos_id, _, _ = write_tokenizer(tok_src, out_dir, model_args.max_seq_len)
    save_file({k: v.to(torch_dtype).contiguous() for k, v in hf_state.items()},
              os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    cfg = hf_config(family, model_args, state, bos_id, eos_id, torch_dtype)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": eos_id}, f, indent=1)
    summary = {
        "checkpoint": step_dir,
        "out": out_dir,
        "architecture": cfg["architectures"][0],
        "tensors": len(hf_state),
        "parameters": int(sum(v.numel() for v in hf_state.values())),
        "tokenizer": tok_src,
        "dtype": dtype,
    }
    with open(os.path.join(out_dir, "tst_export.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
