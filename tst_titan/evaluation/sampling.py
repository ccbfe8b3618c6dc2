"""Text from a checkpoint, the library of ``python -m tst_titan.tools.generate``: the exported
Hugging Face model's ``generate`` (greedy, or temperature / top-k sampling, seeded), and greedy
decoding with torchtitan's own model of the same checkpoint for the first steps, to show that
both give the same tokens -- a TST checkpoint is an ordinary language model.

The prompt is encoded by the run's tokenizer as training did (bos first): the token store's for
runs on a store, the ``model.hf_assets_path`` folder (e.g. the Llama-3 tokenizer of the big
configs) otherwise, or ``--tokenizer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tst_titan.evaluation.checkpoint import EvaluationError, RunCheckpoint, hf_folder
from tst_titan.export.hf import load_model


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int = 32
    temperature: float = 0.0  # 0: greedy
    top_k: int | None = None  # with temperature > 0: sample among the k most likely tokens
    seed: int = 0
    num_samples: int = 1

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise EvaluationError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise EvaluationError(f"--temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise EvaluationError(f"--top-k must be >= 1, got {self.top_k}")
        if self.top_k is not None and self.temperature == 0:
            raise EvaluationError("--top-k needs --temperature > 0 (temperature 0 is greedy decoding)")
        if self.num_samples < 1:
            raise EvaluationError(f"--num-samples must be >= 1, got {self.num_samples}")


def load_hf(ckpt: RunCheckpoint, cache_dir: str, device: str = "cpu"):
    """(model, tokenizer) of the checkpoint's Hugging Face export, float32, eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # optional: the [export] extra

    folder = hf_folder(ckpt, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).eval()
    return model, tokenizer


def hf_generate(model, tokenizer, prompt: str, settings: SamplingSettings) -> list[list[int]]:
    """Token ids (prompt included) of ``num_samples`` continuations by ``transformers`` generate."""
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(model.device)
    kwargs: dict[str, Any] = dict(max_new_tokens=settings.max_new_tokens, min_new_tokens=settings.max_new_tokens,
                                  pad_token_id=tokenizer.pad_token_id)
    if settings.temperature > 0:
        kwargs.update(do_sample=True, temperature=settings.temperature, top_k=settings.top_k or 0, top_p=1.0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    out = []
    for i in range(settings.num_samples):
        torch.manual_seed(settings.seed + i)
        with torch.no_grad():
            out.append(model.generate(ids, **kwargs)[0].tolist())
    return out


def torchtitan_greedy(ckpt: RunCheckpoint, prompt_ids: list[int], steps: int) -> list[int]:
    """``steps`` greedy tokens after ``prompt_ids`` from torchtitan's model of the checkpoint (the
    run's spec, full forward at each step: no cache). Stops at the run's seq_len."""
    model, _ = load_model(ckpt.path, step=ckpt.step)
    ids = list(prompt_ids)
    steps = min(steps, ckpt.seq_len - len(ids))
    with torch.no_grad():
        for _ in range(max(steps, 0)):
            logits = model(torch.tensor([ids]))[0, -1]
            ids.append(int(torch.argmax(logits)))
    return ids[len(prompt_ids):]


def generate(ckpt: RunCheckpoint, prompt: str, settings: SamplingSettings, *, cache_dir: str,
             check_steps: int = 8, device: str = "cpu") -> dict[str, Any]:
    """Samples from the checkpoint, and the greedy check against torchtitan's model."""
    settings.check()
    model, tokenizer = load_hf(ckpt, cache_dir, device)
    prompt_ids = tokenizer(prompt).input_ids
    if len(prompt_ids) >= ckpt.seq_len:
        raise EvaluationError(f"--prompt is {len(prompt_ids)} tokens; the run was trained on "
                              f"{ckpt.seq_len}: give a shorter prompt")
    samples = hf_generate(model, tokenizer, prompt, settings)
    greedy = samples if settings.temperature == 0 else hf_generate(
        model, tokenizer, prompt, SamplingSettings(max_new_tokens=settings.max_new_tokens))
    hf_first = greedy[0][len(prompt_ids):]
    titan = torchtitan_greedy(ckpt, prompt_ids, min(check_steps, settings.max_new_tokens)) if check_steps else []
    return {
        "run": ckpt.label, "step": ckpt.step, "tokenizer": ckpt.tokenizer_dir,
        "prompt": prompt, "prompt_ids": prompt_ids,
        "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
        "samples": [{"ids": s[len(prompt_ids):], "text": tokenizer.decode(s[len(prompt_ids):])} for s in samples],
        "beyond_seq_len": len(prompt_ids) + settings.max_new_tokens > ckpt.seq_len,
        "greedy_check": {"steps": len(titan), "hf": hf_first[:len(titan)], "torchtitan": titan,
                         "equal": hf_first[:len(titan)] == titan},
    }
