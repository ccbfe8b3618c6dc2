"""Which checkpoint of a run to evaluate or sample, checked before any model is built: the run's
config, the ``step-N`` folder, the tokenizer (and that its vocabulary fits the checkpoint's
embedding), the run's token store and its next-token validation loss at that step. Then the
checkpoint as a Hugging Face folder through :func:`tst_titan.export.hf.export` (cached)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass

from tokenizers import Tokenizer

from tst_titan.analysis.runs import checkpoint_tensor_names
from tst_titan.datastore.store import read_manifest
from tst_titan.export.hf import ExportError, complete_checkpoint_steps, export, load_job_config, tokenizer_dir_of
from tst_titan.run_files import METRICS_FILE, RUN_FILE, read_metrics
from tst_titan.train_spec import TST_SPEC_NAMES, flavors_of
from tst_titan.components.data_source import store_dir_of


class EvaluationError(ValueError):
    """Bad input to evaluate or generate; the message names the argument and what it accepts."""


@dataclass
class RunCheckpoint:
    """One checkpoint of one run, resolved and checked."""

    run_dir: str  # as given (the name in tables and evaluate.json)
    path: str  # absolute dump folder
    step: int
    step_dir: str
    job_config: object
    tokenizer_dir: str
    tokenizer_vocab: int  # tokens in tokenizer.json, added tokens included
    embedding_rows: int  # rows of the checkpoint's tok_embeddings.weight
    seq_len: int  # training.seq_len: the context the model was trained on
    store_dir: str | None  # the run's token store (holds the held-out "val" split), if any
    val_loss: float | None  # next-token validation loss logged at ``step``, if any

    @property
    def label(self) -> str:
        return os.path.normpath(self.run_dir)


def checkpoint_steps_of(path: str, job_config) -> list[int]:
    """Steps of the complete checkpoints in the run's ``checkpoint.folder``."""
    return complete_checkpoint_steps(os.path.join(path, job_config.checkpoint.folder))


def tokenizer_vocab_size(tokenizer_dir: str) -> int:
    path = os.path.join(tokenizer_dir, "tokenizer.json")
    if not os.path.isfile(path):
        raise EvaluationError(f"--tokenizer {tokenizer_dir!r}: no tokenizer.json there")
    return Tokenizer.from_file(path).get_vocab_size(with_added_tokens=True)


def _val_loss_at(path: str, step: int) -> float | None:
    if not os.path.isfile(os.path.join(path, METRICS_FILE)):
        return None
    rows = [r for r in read_metrics(path) if r.get("step") == step and "val_loss" in r]
    return float(rows[-1]["val_loss"]) if rows else None


def _store_of(job_config) -> str | None:
    if job_config.model.name not in TST_SPEC_NAMES:
        return None
    vocab = flavors_of(job_config.model.name)[job_config.model.flavor].vocab_size
    path = store_dir_of(job_config, vocab)
    return os.path.abspath(path) if path and read_manifest(path) is not None else None


def resolve(run_dir: str, step: int | None = None, tokenizer: str | None = None) -> RunCheckpoint:
    """Check one RUN_DIR argument (and ``--step``, ``--tokenizer``) without building a model."""
    if not os.path.isdir(run_dir):
        raise EvaluationError(f"RUN_DIR {run_dir!r} is not a folder")
    path = os.path.abspath(run_dir)
    if not os.path.isfile(os.path.join(path, RUN_FILE)):
        raise EvaluationError(
            f"RUN_DIR {run_dir!r} has no {RUN_FILE}: give the dump folder of a run trained with a "
            "TST spec (tst_llama3, tst_qwen3; baselines too), which writes it at start")
    try:
        job_config = load_job_config(path)
    except ExportError as e:
        raise EvaluationError(f"RUN_DIR {run_dir!r}: {e}") from e
    steps = checkpoint_steps_of(path, job_config)
    if not steps:
        raise EvaluationError(
            f"RUN_DIR {run_dir!r} has no checkpoint (no complete "
            f"{job_config.checkpoint.folder}/step-N folder): train it with --checkpoint.enable")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise EvaluationError(f"--step {step}: {run_dir!r} has no checkpoint at that step; it has steps {steps}")
    step_dir = os.path.join(path, job_config.checkpoint.folder, f"step-{step}")
    if tokenizer is None:
        try:
            tokenizer_dir = tokenizer_dir_of(job_config)
        except ExportError as e:
            raise EvaluationError(f"RUN_DIR {run_dir!r}: {e}") from e
    else:
        tokenizer_dir = tokenizer
    vocab = tokenizer_vocab_size(tokenizer_dir)
    tensors = checkpoint_tensor_names(step_dir)
    if "tok_embeddings.weight" not in tensors:
        raise EvaluationError(f"RUN_DIR {run_dir!r}: checkpoint {step_dir} has no tok_embeddings.weight")
    rows = int(tensors["tok_embeddings.weight"][1].size[0])
    if vocab > rows:
        raise EvaluationError(
            f"--tokenizer {tokenizer_dir!r} has {vocab} tokens but the checkpoint of {run_dir!r} embeds "
            f"{rows} (model {job_config.model.name} / {job_config.model.flavor}): it is not the tokenizer "
            "this run was trained with; pass the run's token store or model.hf_assets_path folder")
    return RunCheckpoint(
        run_dir=run_dir, path=path, step=step, step_dir=step_dir, job_config=job_config,
        tokenizer_dir=os.path.abspath(tokenizer_dir), tokenizer_vocab=vocab, embedding_rows=rows,
        seq_len=int(job_config.training.seq_len), store_dir=_store_of(job_config),
        val_loss=_val_loss_at(path, step))


def hf_folder(ckpt: RunCheckpoint, cache_dir: str) -> str:
    """The checkpoint exported as a Hugging Face model folder under ``cache_dir`` (float32),
    reused while its ``tst_export.json`` names the same checkpoint and tokenizer and is newer
    than the checkpoint."""
    key = hashlib.blake2b(f"{ckpt.step_dir}|{ckpt.tokenizer_dir}".encode(), digest_size=6).hexdigest()
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(ckpt.path))
    out = os.path.join(os.path.abspath(cache_dir), f"{name}-step{ckpt.step}-{key}")
    summary = os.path.join(out, "tst_export.json")
    if os.path.isfile(summary):
        with open(summary) as f:
            done = json.load(f)
        fresh = os.path.getmtime(summary) >= os.path.getmtime(os.path.join(ckpt.step_dir, ".metadata"))
        if done.get("checkpoint") == ckpt.step_dir and done.get("tokenizer") == ckpt.tokenizer_dir and fresh:
            return out
    export(ckpt.path, out, step=ckpt.step, tokenizer=ckpt.tokenizer_dir)
    return out
