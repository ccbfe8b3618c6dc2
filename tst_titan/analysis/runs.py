"""One run's dump folder: what it was (:func:`run_info`), its DCP checkpoints, and its model and
embeddings loaded from them as plain CPU tensors (no process group).

A run is the dump folder of ``python -m torchtitan.train`` on a TST spec: ``metrics.jsonl``,
``tst_run.json`` (the job config, when the run wrote one) and ``checkpoint/step-N`` DCP folders.
Relative paths are relative to the current directory.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any, Sequence

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from tst_titan.components.data_source import store_dir_of
from tst_titan.method import schedule
from tst_titan.method.embedding import install_bag_embedding
from tst_titan.run_files import METRICS_FILE, read_metrics, read_run_file
from tst_titan.train_spec import flavors_of, get_tst_train_spec

#: Top-level keys of a torchtitan checkpoint that are not model weights.
NON_MODEL_STATES = ("optimizer", "lr_scheduler", "dataloader", "train_state")
#: Wrapper segments that may prefix parameter names (compile, activation checkpointing, FSDP1/DDP).
_WRAPPER_SEGMENTS = ("_orig_mod", "_checkpoint_wrapped_module", "_fsdp_wrapped_module", "module")
#: The stages of a TST run the embedding notebook compares (see :func:`stage_checkpoints`).
STAGES = ("start", "end of phase 1", "after switch", "end")


def relpath(path: str) -> str:
    """For printing: relative to the current directory when inside it."""
    path, here = os.path.abspath(path), os.getcwd()
    return os.path.relpath(path, here) if path.startswith(here + os.sep) else path


def save_figure(fig, run_dir: str, name: str, dpi: int = 80) -> str:
    """Save a figure as ``<run>/figures/<name>.png``; return the path."""
    folder = os.path.join(os.path.abspath(run_dir), "figures")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.png")
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


# -- what a run was ---------------------------------------------------------------------------
@dataclass
class RunInfo:
    """What the analysis needs to know about a run (from ``tst_run.json``, else ``train.log``)."""

    path: str
    enabled: bool
    bag_size: int  # s (1 when TST is off)
    superposition_fraction: float
    steps: int | None  # training.steps
    switch_step: int  # phase 1 = steps 1..switch_step; 0 for a baseline
    model_name: str
    flavor: str
    seq_len: int | None
    store_dir: str | None  # the token store the run read

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))


def _store_dir(training: dict, model_name: str, flavor: str) -> str | None:
    cfg = SimpleNamespace(
        training=SimpleNamespace(dataset=training.get("dataset"), dataset_path=training.get("dataset_path")),
        model=SimpleNamespace(name=model_name, flavor=flavor),
    )
    try:
        path = store_dir_of(cfg, flavors_of(model_name)[flavor].vocab_size)
    except Exception:  # an unknown model, flavor or dataset: the caller passes store_dir
        return None
    return os.path.abspath(path) if path else None


def run_info(run_dir: str, store_dir: str | None = None, use_record: bool = True) -> RunInfo:
    """Switch step, bag size, model and token store of a run.

    Read from ``<run>/tst_run.json`` (the job config, when the run wrote one; ``use_record=False``
    ignores it); otherwise from ``train.log`` and ``metrics.jsonl`` (:func:`_run_info_from_log`).
    ``store_dir`` overrides the token store the statistics read."""
    run_dir = os.path.abspath(run_dir)
    record = read_run_file(run_dir) if use_record else None
    if record is None:
        return _run_info_from_log(run_dir, store_dir)
    job = record["job_config"]
    tst, training, model = job.get("tst", {}), job["training"], job["model"]
    enabled = bool(tst.get("enable"))
    steps = int(training["steps"])
    r = float(tst.get("superposition_fraction", 0.0))
    return RunInfo(
        path=run_dir, enabled=enabled, bag_size=int(tst.get("bag_size", 1)) if enabled else 1,
        superposition_fraction=r if enabled else 0.0, steps=steps,
        switch_step=schedule.switch_step(r, steps) if enabled else 0, model_name=model["name"],
        flavor=model["flavor"], seq_len=int(training["seq_len"]),
        store_dir=os.path.abspath(store_dir) if store_dir else _store_dir(training, model["name"], model["flavor"]),
    )


def _run_info_from_log(run_dir: str, store_dir: str | None) -> RunInfo:
    """What a run without ``tst_run.json`` tells: torchtitan's model line in ``train.log`` (name,
    flavor, ``max_seq_len`` = training.seq_len, the vocab), the logged switch, and
    ``metrics.jsonl`` (the bag size is raw tokens / positions at a phase-1 step; the run's length is
    its last logged step). The token store: ``store_dir``, else the demo pair's ``demo.json``, else
    the ``hf_assets_path`` torchtitan logs (TST specs read the tokenizer from the store), else the
    embedded store for the vocab."""
    log_path = os.path.join(run_dir, "train.log")
    text = open(log_path).read() if os.path.exists(log_path) else ""
    model = re.search(r"Building (\S+) (\S+?)with (\{.*?\n\})", text, re.S)
    switch = re.search(r"\[tst\] switching to next-token training at step (\d+)", text)
    rows = read_metrics(run_dir) if os.path.exists(os.path.join(run_dir, METRICS_FILE)) else []
    phase1 = [r for r in rows if r.get("phase") == 1]
    switch_step = int(switch.group(1)) - 1 if switch else (max(r["step"] for r in phase1) if phase1 else 0)
    bag = 1
    if phase1 and phase1[0].get("positions_seen"):
        bag = round(phase1[0]["raw_tokens_seen"] / phase1[0]["positions_seen"])
    steps = rows[-1]["step"] if rows else None
    model_name, flavor, args = "tst_llama3", "tiny", {}
    if model:
        model_name, flavor = model.group(1), model.group(2)
        try:
            args = json.loads(model.group(3))
        except json.JSONDecodeError:
            args = {}
    candidates = [store_dir]
    demo = os.path.join(os.path.dirname(run_dir), "demo.json")
    if os.path.exists(demo):  # a demo pair records its store next to the runs
        with open(demo) as f:
            candidates.append(json.load(f).get("store_dir"))
    assets = re.search(r"hf_assets_path: (\S+?)/model\.safetensors\.index\.json", text)
    candidates.append(assets.group(1) if assets else None)
    if args.get("vocab_size"):
        candidates.append(os.path.join("data", f"embedded_v{args['vocab_size']}"))
    found = next((os.path.abspath(c) for c in candidates
                  if c and os.path.exists(os.path.join(c, "manifest.json"))), None)
    return RunInfo(path=run_dir, enabled=switch_step > 0, bag_size=bag if switch_step > 0 else 1,
                   superposition_fraction=switch_step / steps if steps and switch_step else 0.0, steps=steps,
                   switch_step=switch_step, model_name=model_name, flavor=flavor, seq_len=args.get("max_seq_len"),
                   store_dir=found or (os.path.abspath(store_dir) if store_dir else None))


def switch_step(run_dir: str) -> int:
    """The last phase-1 step of a run (0 for a baseline): steps ``1..switch_step`` are bag steps."""
    return run_info(run_dir).switch_step


# -- checkpoints ------------------------------------------------------------------------------
def checkpoint_dir(run_dir: str, step: int) -> str:
    return os.path.join(os.path.abspath(run_dir), "checkpoint", f"step-{step}")


def checkpoint_steps(run_dir: str) -> list[int]:
    """Steps of the complete DCP checkpoints of a run (folders ``checkpoint/step-N`` with metadata)."""
    folder = os.path.join(os.path.abspath(run_dir), "checkpoint")
    if not os.path.isdir(folder):
        return []
    steps = []
    for name in os.listdir(folder):
        m = re.fullmatch(r"step-(\d+)", name)
        if m and os.path.exists(os.path.join(folder, name, ".metadata")):
            steps.append(int(m.group(1)))
    return sorted(steps)


def stage_checkpoints(run_dir: str, switch: int | None = None) -> dict[str, int] | None:
    """The checkpoints the embedding notebook compares: the first, the last one of phase 1
    (``step <= switch``), the first one after the switch, and the last; None unless the switch is
    bracketed (a checkpoint on each side)."""
    steps = checkpoint_steps(run_dir)
    switch = switch_step(run_dir) if switch is None else switch
    before = [s for s in steps if s <= switch]
    after = [s for s in steps if s > switch]
    if switch <= 0 or not before or not after:
        return None
    return {"start": steps[0], "end of phase 1": before[-1], "after switch": after[0], "end": steps[-1]}


def _clean_name(key: str) -> str:
    parts = key.split(".")
    if parts and parts[0] == "model":
        parts = parts[1:]
    return ".".join(p for p in parts if p not in _WRAPPER_SEGMENTS)


def checkpoint_tensor_names(path: str) -> dict[str, Any]:
    """``{cleaned model parameter name: (checkpoint key, TensorStorageMetadata)}`` of a DCP folder:
    tensor entries outside the optimizer / scheduler / dataloader / train-state, with wrapper
    prefixes (``model.``, ``_orig_mod.``, ...) removed."""
    metadata = FileSystemReader(path).read_metadata()
    names = {}
    for key, md in metadata.state_dict_metadata.items():
        if not isinstance(md, TensorStorageMetadata) or key.split(".")[0] in NON_MODEL_STATES:
            continue
        name = _clean_name(key)
        if name in names:
            raise ValueError(f"{path}: checkpoint keys {names[name][0]!r} and {key!r} are both {name!r}")
        names[name] = (key, md)
    return names


def load_checkpoint_tensors(path: str, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Model weights of a DCP checkpoint folder as plain CPU tensors, by parameter name
    (``tok_embeddings.weight``, ``output.weight``, ...); ``names`` selects some. Works without a
    process group (``no_dist``) on full and model-only checkpoints."""
    path = os.path.abspath(path)
    available = checkpoint_tensor_names(path)
    wanted = list(available) if names is None else list(names)
    missing = [n for n in wanted if n not in available]
    if missing:
        raise KeyError(f"{path} has no tensor(s) {missing}; it has {sorted(available)}")
    state = {}
    for name in wanted:
        key, md = available[name]
        state[key] = torch.empty(tuple(md.size), dtype=md.properties.dtype)
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(state, storage_reader=FileSystemReader(path), no_dist=True)
    return {name: state[available[name][0]] for name in wanted}


def load_embeddings(run_dir: str, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input embeddings ``tok_embeddings.weight``, output head ``output.weight``), float32 ``[V, D]``."""
    t = load_checkpoint_tensors(checkpoint_dir(run_dir, step), ["tok_embeddings.weight", "output.weight"])
    return t["tok_embeddings.weight"].float(), t["output.weight"].float()


def build_model(model_name: str, flavor: str, seq_len: int):
    """The TST spec's model (CPU, float32) with the bag-mean embedding: ``[B, L, s]`` inputs are bags."""
    spec = get_tst_train_spec(model_name)
    args = spec.model_args[flavor]
    if hasattr(args, "max_seq_len"):
        args = replace(args, max_seq_len=seq_len)
    return install_bag_embedding(spec.model_cls(args))


def load_model(run_dir: str, step: int, info: RunInfo | None = None, seq_len: int | None = None):
    """The run's model with the weights of checkpoint ``step`` (eval mode, bag embedding installed)."""
    info = info or run_info(run_dir)
    model = build_model(info.model_name, info.flavor, seq_len or info.seq_len or 2048)
    weights = load_checkpoint_tensors(checkpoint_dir(run_dir, step))
    model.load_state_dict(weights, strict=True)
    return model.eval()
