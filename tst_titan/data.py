"""The phase-carrying dataset: the one place where TST's phase is decided.

A TST run has two phases inside one torchtitan run of ``training.steps`` optimizer steps:

* phase 1 (superposition), steps ``1 .. switch_step`` with ``switch_step = round(r * steps)``:
  each sample is ``s * (L + 1)`` contiguous tokens; the input is ``[L, s]`` (L bags of s tokens)
  and the labels are the *next* bag of every position, also ``[L, s]``;
* phase 2 (recovery): ordinary ``[L]`` inputs with next-token ``[L]`` labels.

``tst.mode`` chooses which side of phase 1 is superposed (the paper's section 5.2 ablation); only the
samples change, because the model averages when its *input* is 3-D and the loss uses the bag form
when the *labels* are 3-D:

=================  ===================  ==========================================  =============
``tst.mode``       input               labels                                      window
=================  ===================  ==========================================  =============
``full``           ``[L, s]`` bags      ``[L, s]``: the next bag                    ``s * (L + 1)``
``input_only``     ``[L, s]`` bags      ``[L]``: the next token after each bag      ``s * L + 1``
                                        (the first token of the next bag)
``output_only``    ``[L]`` tokens       ``[L, s]``: tokens ``t+1 .. t+s``           ``L + s``
=================  ===================  ==========================================  =============

The model and the loss only look at the shape of what they get (3-D means bags), so nothing else
needs the step counter and torchtitan's trainer is untouched. The switch is a *sample count* per
data-parallel rank (``switch_step * local_batch_size * grad_accum_steps``) kept in the dataset's
checkpointed state, so a resume lands exactly where the uninterrupted run would be, and a batch
never mixes phases (the switch is a multiple of the batch size).

Data comes from a token store (``tst_titan.store``): text tokenized once into memory-mapped
uint32 shards; a sample is a slice of it, so phase 1's s-times-higher token rate costs no
tokenization. Ranks read interleaved windows of one global cursor: at each sample every rank takes
the window at ``cursor + rank * window`` and the cursor advances by ``world * window``.

The position is a pure function of the sample index (:meth:`PhaseSchedule.position_after`), so the
phase can follow the *training step* even when a resume does not load the dataloader state: the
TST spec's learning-rate schedulers report the step they were resumed at to the process's
:class:`TrainingRun` (a small registry), and the dataset fast-forwards to ``step x samples per
step`` on its first ``__iter__`` (or, if its own state was loaded, checks that it agrees). The
metrics processor reads the epoch from the same registry and checks the position every step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch.distributed.checkpoint.stateful import Stateful
from torch.utils.data import IterableDataset
from torchtitan.components.dataloader import ParallelAwareDataloader
from torchtitan.tools.logging import logger

#: ``tst.mode`` values: which side of a phase-1 sample is superposed (see the module docstring).
MODES = ("full", "input_only", "output_only")

#: ``training.dataset`` values the TST specs understand.
DATASETS = {
    "embedded": "the Python standard library's sources, tokenized on first use into "
    "training.dataset_path (default ./data/embedded_v<vocab>)",
    "folder": "a local folder of .txt/.md/.rst/.py/.jsonl files at training.dataset_path, "
    "tokenized on first use into <dataset_path>/.tst_store",
    "store": "a token store prepared by `python -m tst_titan.prepare` at training.dataset_path",
}


@dataclass(frozen=True)
class PhaseSchedule:
    """When phase 1 ends, in steps and in samples per data-parallel rank."""

    enabled: bool
    bag_size: int
    switch_step: int  # steps 1..switch_step are phase 1; 0 when TST is off
    seq_len: int
    samples_per_step: int  # per data-parallel rank: local_batch_size * gradient accumulation
    dp_world_size: int
    mode: str = "full"  # tst.mode: "full", "input_only" or "output_only" (phase 1 only)

    @classmethod
    def from_job_config(cls, job_config, dp_world_size: int) -> "PhaseSchedule":
        tst = getattr(job_config, "tst", None)
        enabled = bool(tst is not None and tst.enable)
        training = job_config.training
        global_batch = training.global_batch_size
        if global_batch < 0:
            global_batch = training.local_batch_size * dp_world_size
        grad_accum = global_batch // (training.local_batch_size * dp_world_size)
        return cls(
            enabled=enabled,
            bag_size=tst.bag_size if enabled else 1,
            switch_step=round(tst.superposition_fraction * training.steps) if enabled else 0,
            seq_len=training.seq_len,
            samples_per_step=training.local_batch_size * max(grad_accum, 1),
            dp_world_size=dp_world_size,
            mode=getattr(tst, "mode", "full") if enabled else "full",
        )

    @property
    def switch_sample(self) -> int:
        """Index (per rank) of the first phase-2 sample."""
        return self.switch_step * self.samples_per_step

    def phase_of_step(self, step: int) -> int:
        """Phase of optimizer step ``step`` (1-based, as torchtitan counts)."""
        return 1 if step <= self.switch_step else 2

    def phase_of_sample(self, sample_index: int) -> int:
        return 1 if sample_index < self.switch_sample else 2

    def bag_size_of_phase(self, phase: int) -> int:
        """Tokens per input position (alias of :meth:`input_bag_size`)."""
        return self.input_bag_size(phase)

    def input_bag_size(self, phase: int) -> int:
        """Tokens averaged into one input position: s in phase 1 unless ``output_only``."""
        return self.bag_size if phase == 1 and self.mode != "output_only" else 1

    def target_bag_size(self, phase: int) -> int:
        """Targets per position: s in phase 1 unless ``input_only``."""
        return self.bag_size if phase == 1 and self.mode != "input_only" else 1

    def window(self, phase: int) -> int:
        """Tokens one sample consumes (see :func:`window_tokens`)."""
        return window_tokens(self.mode if phase == 1 else "full",
                             self.bag_size if phase == 1 else 1, self.seq_len)[0]

    def global_positions_per_step(self) -> int:
        return self.samples_per_step * self.dp_world_size * self.seq_len

    def raw_tokens_seen(self, step: int) -> int:
        """Input tokens read by all ranks after ``step`` steps: phase 1 reads s per position
        (``full``, ``input_only``) or one (``output_only``: its targets are the text that follows)."""
        bag_steps = min(step, self.switch_step)
        s_in = self.input_bag_size(1)
        return self.global_positions_per_step() * (s_in * bag_steps + step - bag_steps)

    def position_after(self, samples: int, n_tokens: int) -> tuple[int, int]:
        """``(cursor, epoch)`` of a rank's dataset after it served ``samples`` samples from a split
        of ``n_tokens`` tokens -- what :class:`TokenWindowDataset` reaches one sample at a time:
        strides of ``window * dp_world_size`` (per rank ``s*(L+1)`` in phase 1 -- ``s*L+1`` with
        ``input_only``, ``L+s`` with ``output_only`` -- and ``L+1`` after), a new epoch (cursor 0)
        when the next stride does not fit."""
        if samples <= 0:
            return 0, 0

        def run(count: int, stride: int, cursor: int, epoch: int) -> tuple[int, int]:
            if count <= 0:
                return cursor, epoch
            per_epoch = n_tokens // stride
            if per_epoch < 1:
                raise ValueError(f"a stride of {stride} tokens does not fit {n_tokens} tokens")
            left_in_epoch = max(n_tokens - cursor, 0) // stride
            if count <= left_in_epoch:
                return cursor + count * stride, epoch
            count -= left_in_epoch  # samples drawn after wrapping
            return ((count - 1) % per_epoch + 1) * stride, epoch + 1 + (count - 1) // per_epoch

        world = self.dp_world_size
        bag_samples = min(samples, self.switch_sample)
        cursor, epoch = run(bag_samples, self.window(1) * world, 0, 0)
        return run(samples - bag_samples, self.window(2) * world, cursor, epoch)


def window_tokens(mode: str, bag_size: int, seq_len: int) -> tuple[int, str]:
    """Tokens one phase-1 sample of ``mode`` takes (and the formula, for messages): L positions and
    the tokens their labels need. With ``bag_size`` 1 every mode is the plain ``L + 1``."""
    s, L = bag_size, seq_len
    if mode == "full":
        return s * (L + 1), f"tst.bag_size ({s}) x (training.seq_len ({L}) + 1)"
    if mode == "input_only":
        return s * L + 1, f"tst.bag_size ({s}) x training.seq_len ({L}) + 1"
    if mode == "output_only":
        return L + s, f"training.seq_len ({L}) + tst.bag_size ({s})"
    raise ValueError(f"tst.mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")


class TrainingRun:
    """What one trainer's pieces in this process share about its training data.

    torchtitan builds the dataloader, then the metrics processor, then the learning-rate
    schedulers, all from the same ``TrainSpec`` and without references to each other. The TST
    dataloader builder starts a new ``TrainingRun`` (:func:`begin_training_run`); the others pick
    up the current one when they are built. It carries

    * ``resume_step``: the step the learning-rate scheduler state was loaded at (its
      ``last_epoch`` is the trainer step), so the dataset can follow the step when its own state
      was not loaded (:func:`resume_aware_lr_schedulers`);
    * ``datasets``: this process's training dataset(s), for the epoch and position checks, and
      for the optimizer reset at the switch (``tst.optimizer_at_switch``, :mod:`tst_titan.optimizer`):
      at an optimizer step the training data has served exactly ``step x samples per step``;
    * ``settings``: the run's ``[tst]`` settings (:func:`tst_settings`), for the pieces torchtitan
      builds without the job config (the optimizers).
    """

    def __init__(self) -> None:
        self.resume_step: int | None = None
        self.datasets: list[TokenWindowDataset] = []
        self.settings: dict[str, Any] = {}

    def set_resume_step(self, step: int) -> None:
        self.resume_step = int(step)

    @property
    def epoch(self) -> int | None:
        """Epoch of the last sample served (None before any dataset exists)."""
        return max((d.epoch for d in self.datasets), default=None)

    def check_position(self, step: int) -> None:
        """After optimizer step ``step``, every training dataset must have served exactly
        ``step x samples_per_step`` samples: otherwise the data (and the phase) no longer follow
        the step -- e.g. a resume that loaded neither the dataloader nor the lr_scheduler state."""
        for d in self.datasets:
            expected = step * d.schedule.samples_per_step
            if d.sample_index != expected:
                sched = d.schedule
                raise RuntimeError(
                    f"[tst] after step {step} the training data of rank {d.dp_rank} is at sample "
                    f"{d.sample_index} (phase {sched.phase_of_sample(max(d.sample_index - 1, 0))}), "
                    f"but step {step} ends at sample {expected} (phase {sched.phase_of_step(step)}; "
                    f"{sched.samples_per_step} samples per step). The data position was neither "
                    "loaded nor recovered: a resume with both 'dataloader' and 'lr_scheduler' in "
                    "checkpoint.exclude_from_loading cannot know where the data (and the TST phase) "
                    "stand. Load at least one of them, or start a new run from the weights alone "
                    "with checkpoint.initial_load_path (model only, from step 0)."
                )


_current_run: TrainingRun | None = None


def begin_training_run() -> TrainingRun:
    """A new :class:`TrainingRun` for the trainer being built in this process."""
    global _current_run
    _current_run = TrainingRun()
    return _current_run


def current_training_run() -> TrainingRun | None:
    return _current_run


def resume_aware_lr_schedulers(build_lr_schedulers_fn):
    """Wrap a ``TrainSpec.build_lr_schedulers_fn`` so that loading the schedulers' checkpointed
    state tells the current :class:`TrainingRun` the step it resumes at (``last_epoch``)."""

    def build_lr_schedulers(optimizers, lr_scheduler_config, training_steps):
        schedulers = build_lr_schedulers_fn(optimizers, lr_scheduler_config, training_steps)
        run = current_training_run()
        if run is None:
            return schedulers
        load = schedulers.load_state_dict

        def load_state_dict(state_dict):
            load(state_dict)
            run.set_resume_step(state_dict["last_epoch"])

        schedulers.load_state_dict = load_state_dict
        return schedulers

    build_lr_schedulers.__name__ = f"resume_aware_{getattr(build_lr_schedulers_fn, '__name__', 'lr')}"
    return build_lr_schedulers


def tst_settings(job_config, schedule: PhaseSchedule) -> dict[str, Any]:
    """The settings a run was trained with, kept in the dataloader's checkpointed state."""
    tst = getattr(job_config, "tst", None)
    return {
        "enable": bool(tst is not None and tst.enable),
        "bag_size": tst.bag_size if tst is not None else 1,
        "superposition_fraction": tst.superposition_fraction if tst is not None else 0.0,
        "loss_weighting": tst.loss_weighting if tst is not None else "uniform",
        "mode": getattr(tst, "mode", "full") if tst is not None else "full",
        "optimizer_at_switch": getattr(tst, "optimizer_at_switch", "keep") if tst is not None else "keep",
        "steps": job_config.training.steps,
        "seq_len": schedule.seq_len,
        "samples_per_step": schedule.samples_per_step,
        "switch_step": schedule.switch_step,
        "switch_sample": schedule.switch_sample,
    }


#: Settings a resume must keep, in the order they are checked, with the key to name.
_RESUME_KEYS = (
    ("enable", "tst.enable"),
    ("bag_size", "tst.bag_size"),
    ("superposition_fraction", "tst.superposition_fraction"),
    ("loss_weighting", "tst.loss_weighting"),
    ("mode", "tst.mode"),
    ("optimizer_at_switch", "tst.optimizer_at_switch"),
    ("seq_len", "training.seq_len"),
    ("samples_per_step", "training.local_batch_size / training.global_batch_size"),
    ("switch_sample", "training.steps"),
)


class TokenWindowDataset(IterableDataset, Stateful):
    """Samples from a token store, bagged during phase 1; infinite (epochs) or one pass."""

    def __init__(
        self,
        store,
        schedule: PhaseSchedule,
        dp_rank: int,
        *,
        infinite: bool = True,
        max_samples: int | None = None,
        name: str = "train",
        run: TrainingRun | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.schedule = schedule
        self.dp_rank = dp_rank
        self.infinite = infinite
        self.max_samples = max_samples
        self.name = name
        self.run = run  # the trainer's registry: resume step (see TrainingRun)
        self.settings = settings  # [tst] settings kept in the checkpointed state
        self._state_loaded = False
        self._synced = False
        n_tokens = len(store)
        first_phase = schedule.phase_of_sample(0)
        first_window = schedule.window(first_phase)
        needed = first_window * schedule.dp_world_size
        if n_tokens < needed:
            formula = (window_tokens(schedule.mode, schedule.bag_size, schedule.seq_len)[1]
                       if first_phase == 1 else f"training.seq_len ({schedule.seq_len}) + 1")
            raise ValueError(
                f"the {name} split of {store.path} has {n_tokens} tokens, fewer than one "
                f"sample needs on {schedule.dp_world_size} rank(s): {needed} "
                f"(= {formula} per rank); use more text or a shorter "
                "training.seq_len / tst.bag_size"
            )
        self.sample_index = 0
        self.cursor = 0
        self.epoch = 0

    # -- the phase ---------------------------------------------------------------------------
    def _next_window(self) -> tuple[np.ndarray, int] | None:
        sched = self.schedule
        phase = sched.phase_of_sample(self.sample_index)
        window = sched.window(phase)
        stride = window * sched.dp_world_size
        if self.cursor + stride > len(self.store):
            if not self.infinite:
                return None
            self.epoch += 1
            self.cursor = 0
            logger.warning(
                f"[tst] {self.name} data exhausted after {self.sample_index} samples; "
                f"starting epoch {self.epoch} (text is now repeated)"
            )
        start = self.cursor + self.dp_rank * window
        tokens = self.store.slice(start, start + window)
        self.cursor += stride
        if self.sample_index == sched.switch_sample and sched.switch_step > 0 and self.dp_rank == 0:
            logger.info(
                f"[tst] switching to next-token training at step {sched.switch_step + 1} "
                f"(sample {self.sample_index} of rank {self.dp_rank}, epoch {self.epoch})"
            )
        self.sample_index += 1
        return tokens, phase

    def _follow_resume_step(self) -> None:
        """Once, before the first sample: make the position agree with the resumed step."""
        if self._synced:
            return
        self._synced = True
        step = self.run.resume_step if self.run is not None else None
        if step is None:
            return  # a new run, or the step is unknown (lr_scheduler state not loaded)
        sched = self.schedule
        expected = step * sched.samples_per_step
        if self._state_loaded:
            if self.sample_index != expected:
                raise ValueError(
                    f"[tst] the checkpoint's dataloader state of rank {self.dp_rank} is at sample "
                    f"{self.sample_index}, but its lr_scheduler state is at step {step}, which ends "
                    f"at sample {expected} ({sched.samples_per_step} samples per step = "
                    "training.local_batch_size x gradient accumulation): the checkpoint's parts "
                    "disagree. Resume from an intact checkpoint with the settings it was trained with"
                )
            return
        if expected == 0:
            return
        self.sample_index = expected
        self.cursor, self.epoch = sched.position_after(expected, len(self.store))
        logger.warning(
            f"[tst] the dataloader state was not loaded from the checkpoint; the {self.name} data "
            f"follows the resumed step {step}: rank {self.dp_rank} continues at sample {expected} "
            f"(phase {sched.phase_of_sample(expected)}, epoch {self.epoch}), the data the "
            "uninterrupted run would read"
        )

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        self._follow_resume_step()
        while self.max_samples is None or self.sample_index < self.max_samples:
            item = self._next_window()
            if item is None:
                return
            tokens, phase = item
            yield self._sample(torch.from_numpy(tokens.astype(np.int64)), phase)

    def _sample(self, x: torch.Tensor, phase: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(input, labels) of one window ``x`` (see the table in the module docstring)."""
        if phase != 1:
            return {"input": x[:-1]}, x[1:]
        s, L, mode = self.schedule.bag_size, self.schedule.seq_len, self.schedule.mode
        if mode == "input_only":
            # [s*L + 1] -> input: bags 0..L-1; label of bag j: token (j+1)*s, the one after it.
            return {"input": x[: s * L].view(L, s)}, x[s : s * L + 1 : s].contiguous()
        if mode == "output_only":
            # [L + s] -> input: tokens 0..L-1; labels of position t: tokens t+1..t+s.
            return {"input": x[:L]}, x[1:].unfold(0, s, 1).contiguous()
        # full: [s*(L+1)] -> input: bags 0..L-1, labels: bags 1..L (each position's next bag).
        bags = x.view(L + 1, s)
        return {"input": bags[:-1]}, bags[1:]

    # -- checkpointed state ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        sched = self.schedule
        state = {
            "sample_index": self.sample_index,
            "cursor": self.cursor,
            "epoch": self.epoch,
            "switch_sample": sched.switch_sample,
            "bag_size": sched.bag_size,
            "store_tokens": len(self.store),
        }
        if self.settings is not None:
            state["tst"] = dict(self.settings)
        return state

    def _check_settings(self, saved: dict[str, Any]) -> None:
        ours = self.settings or {}
        for key, name in _RESUME_KEYS:
            if key in saved and key in ours and saved[key] != ours[key]:
                detail = ""
                if key == "switch_sample":
                    detail = (
                        f" (phase 1 ends after step {saved.get('switch_step')} of "
                        f"{saved.get('steps')} there, after step {ours.get('switch_step')} of "
                        f"{ours.get('steps')} here: round(tst.superposition_fraction x training.steps))"
                    )
                raise ValueError(
                    f"[tst] cannot resume: the checkpoint was trained with {name} = "
                    f"{saved[key]!r}{' (switch sample)' if key == 'switch_sample' else ''}, this run "
                    f"has {ours[key]!r}{detail}. Resume with the settings the checkpoint was trained "
                    f"with (its [tst] settings: {_format_settings(saved)}), or start a new run from "
                    "its weights with checkpoint.initial_load_path"
                )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sched = self.schedule
        if "tst" in state:
            self._check_settings(state["tst"])
        saved = (state.get("bag_size"), state.get("switch_sample"))
        if saved != (sched.bag_size, sched.switch_sample):
            raise ValueError(
                f"[tst] the checkpoint was trained with bag size {saved[0]} switching at sample "
                f"{saved[1]}, this run has tst.bag_size {sched.bag_size} switching at sample "
                f"{sched.switch_sample} (tst.superposition_fraction x training.steps x batch); "
                "resume with the settings the checkpoint was trained with"
            )
        if state.get("store_tokens") != len(self.store):
            raise ValueError(
                f"[tst] the checkpoint read a token store of {state.get('store_tokens')} tokens, "
                f"training.dataset_path now has {len(self.store)}: resume on the same data"
            )
        self.sample_index = state["sample_index"]
        self.cursor = state["cursor"]
        self.epoch = state["epoch"]
        self._state_loaded = True


def _format_settings(settings: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} = {settings[k]!r}" for k in ("enable", "bag_size", "superposition_fraction",
                                           "loss_weighting", "mode", "optimizer_at_switch",
                                           "steps") if k in settings
    )


# -- building -------------------------------------------------------------------------------
def _flavor_vocab_size(job_config) -> int:
    from tst_titan.specs import get_tst_train_spec

    return get_tst_train_spec(job_config.model.name).model_args[job_config.model.flavor].vocab_size


def store_dir_of(job_config) -> str:
    """Where the token store of this config lives (see ``DATASETS``)."""
    dataset, path = job_config.training.dataset, job_config.training.dataset_path
    if dataset == "embedded":
        return path or os.path.join("data", f"embedded_v{_flavor_vocab_size(job_config)}")
    if dataset == "folder":
        return os.path.join(path, ".tst_store")
    return path


def validate_data_config(job_config) -> None:
    """Data checks that can run at config-parse time (no building)."""
    from tst_titan.config import ConfigError

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
        from tst_titan.store import read_manifest

        manifest = read_manifest(path)
        if manifest is None:
            raise ConfigError(
                f"training.dataset_path = {path!r} is not a token store (no manifest.json); build "
                "one with `python -m tst_titan.prepare --out DIR ...` or use training.dataset = 'folder'"
            )
        vocab = _flavor_vocab_size(job_config)
        if manifest["vocab_size"] > vocab:
            raise ConfigError(
                f"the tokenizer of training.dataset_path = {path!r} has {manifest['vocab_size']} "
                f"tokens, more than model.flavor = {job_config.model.flavor!r} embeds ({vocab})"
            )


def ensure_store(job_config) -> str:
    """Build the store on first use (embedded corpus, local folder); return its directory."""
    from tst_titan import store

    dataset, path = job_config.training.dataset, job_config.training.dataset_path
    out = store_dir_of(job_config)
    vocab = _flavor_vocab_size(job_config)
    if dataset == "embedded":
        store.ensure_embedded_store(out, vocab_size=vocab)
    elif dataset == "folder":
        store.ensure_folder_store(out, path, vocab_size=vocab)
    return out


def build_tst_tokenizer(job_config):
    """The tokenizer is the token store's own, so data and tokenizer cannot disagree."""
    from torchtitan.components.tokenizer import HuggingFaceTokenizer

    # The parse-time data checks again, at trainer start: a config built or changed in code (or a
    # store deleted since parsing) fails here naming the key, not deep in the tokenizer.
    validate_data_config(job_config)
    return HuggingFaceTokenizer(ensure_store(job_config))


def build_tst_dataloader(dp_world_size: int, dp_rank: int, tokenizer, job_config, **kwargs):
    from tst_titan.store import TokenStore

    schedule = PhaseSchedule.from_job_config(job_config, dp_world_size)
    run = begin_training_run()
    run.settings = tst_settings(job_config, schedule)
    dataset = TokenWindowDataset(
        TokenStore(ensure_store(job_config), "train"), schedule, dp_rank, infinite=True,
        run=run, settings=run.settings,
    )
    run.datasets.append(dataset)
    return ParallelAwareDataloader(
        dataset,
        dp_rank=dp_rank,
        dp_world_size=dp_world_size,
        batch_size=job_config.training.local_batch_size,
    )


def build_validation_dataset(job_config, dp_world_size: int, dp_rank: int) -> TokenWindowDataset:
    """Plain next-token samples from the held-out split, from its start (so every evaluation
    reads the same tokens). ``validation.steps = -1`` reads the whole split once."""
    from tst_titan.store import TokenStore

    val = job_config.validation
    path = val.dataset_path or store_dir_of(job_config)
    schedule = PhaseSchedule(
        enabled=False,
        bag_size=1,
        switch_step=0,
        seq_len=val.seq_len,
        samples_per_step=val.local_batch_size,
        dp_world_size=dp_world_size,
    )
    max_samples = None if val.steps == -1 else val.steps * val.local_batch_size
    dataset = TokenWindowDataset(
        TokenStore(path, "val"), schedule, dp_rank, infinite=False, max_samples=max_samples, name="val"
    )
    if max_samples is not None:
        available = len(dataset.store) // (schedule.window(2) * dp_world_size)
        if available < max_samples:
            raise ValueError(
                f"validation.steps = {val.steps} x validation.local_batch_size = "
                f"{val.local_batch_size} needs {max_samples} samples per rank, the val split of "
                f"{path} has {available}; lower validation.steps or use -1 (whole split)"
            )
    return dataset
