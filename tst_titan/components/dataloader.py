"""The phase-carrying training dataset and the TST data builders.

The phase lives in the data: a :class:`TokenWindowDataset` serves slices of a token store
(``tst_titan.datastore``), cut into bags by ``tst_titan.method.bagging`` for the first
``switch_sample`` samples of each data-parallel rank and into plain next-token samples after
(``tst_titan.method.schedule``). The model and the loss look only at the shape of what they get, so
nothing else needs the step counter and torchtitan's trainer is untouched.

Ranks read interleaved windows of one global cursor: at each sample every rank takes the window at
``cursor + rank * window`` and the cursor advances by ``world * window``. The sample index, the
cursor, the epoch and the run's ``[tst]`` settings are the dataloader's checkpointed state, so a
resume lands exactly where the uninterrupted run would be, and a resume with other settings is
refused. Without that state the dataset follows the step the learning-rate schedulers resumed at
(``tst_titan.components.run_context``).

``tst.data_seed`` reorders the training split's documents before any window is cut
(``tst_titan.datastore.store.DocumentOrderView``): every window size (phase-1 bags, phase-2
samples, any rank count) reads the same reordered stream, so a TST run and its baseline with the
same seed read the same tokens in the same order, and the position stays a pure function of the
sample index. Seed 0 serves the store itself.

``tst.window_order = "shuffled"`` draws the windows of that stream in a seeded random order instead
of one after the other (``tst_titan.datastore.window_order``); the window of a sample is still a
pure function of its index, so resumes and cool-down branches read what an uninterrupted run reads.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch.distributed.checkpoint.stateful import Stateful
from torch.utils.data import IterableDataset
from torchtitan.components.dataloader import ParallelAwareDataloader
from torchtitan.components.tokenizer import HuggingFaceTokenizer
from torchtitan.tools.logging import logger

from tst_titan.components.checks import tst_section, check_data_config
from tst_titan.components.data_source import ensure_store_of, store_dir_of
from tst_titan.components.run_context import TrainingRun, begin_training_run
from tst_titan.datastore.store import DocumentOrderView, TokenStore
from tst_titan.datastore.window_order import ShuffledWindows
from tst_titan.job_config import WINDOW_ORDERS
from tst_titan.method.bagging import make_sample, next_token_sample
from tst_titan.method.schedule import (
    PhaseSchedule,
    gradient_accumulation_steps,
    switch_step,
    window_tokens,
)


def phase_schedule(job_config, dp_world_size: int) -> PhaseSchedule:
    """The training data's schedule of a job config on ``dp_world_size`` data-parallel ranks."""
    tst, training = tst_section(job_config), job_config.training
    samples_per_step = training.local_batch_size * gradient_accumulation_steps(
        training.global_batch_size, training.local_batch_size, dp_world_size)
    if not tst.enable:
        return PhaseSchedule.plain(training.seq_len, samples_per_step, dp_world_size)
    return PhaseSchedule(
        bag_size=tst.bag_size,
        switch_step=switch_step(tst.superposition_fraction, training.steps),
        seq_len=training.seq_len,
        samples_per_step=samples_per_step,
        dp_world_size=dp_world_size,
        mode=tst.mode,
    )


def tst_settings(job_config, schedule: PhaseSchedule) -> dict[str, Any]:
    """The settings a run was trained with, kept in the dataloader's checkpointed state."""
    tst = tst_section(job_config)
    return {
        "enable": tst.enable,
        "bag_size": tst.bag_size,
        "superposition_fraction": tst.superposition_fraction,
        "loss_weighting": tst.loss_weighting,
        "mode": tst.mode,
        "optimizer_at_switch": tst.optimizer_at_switch,
        "rewarm_steps": tst.rewarm_steps,
        "window_order": tst.window_order,
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
    ("rewarm_steps", "tst.rewarm_steps"),
    ("window_order", "tst.window_order"),
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
        data_seed: int = 0,
        window_order: str = "stream",
    ) -> None:
        self.data_seed = data_seed
        self.window_order = window_order
        # the stream every window is cut from: the store's document order, or a seeded one
        self.store = store if data_seed == 0 else DocumentOrderView(store, data_seed)
        self.schedule = schedule
        self.dp_rank = dp_rank
        self.infinite = infinite
        self.max_samples = max_samples
        self.name = name
        self.run = run  # the run this dataset serves: its resume step (see TrainingRun)
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
        self.cursor = 0  # stream order: the next window's first token (0 when shuffled)
        self.epoch = 0
        if window_order == "stream":
            self.shuffled = None
        elif window_order == "shuffled":
            self.shuffled = ShuffledWindows(
                n_tokens, schedule.window(1), schedule.window(2), schedule.switch_sample,
                schedule.dp_world_size, data_seed)
        else:
            raise ValueError(f"tst.window_order must be one of {', '.join(map(repr, WINDOW_ORDERS))}, "
                             f"got {window_order!r}")

    # -- the phase ---------------------------------------------------------------------------
    def _next_window(self) -> tuple[np.ndarray, int] | None:
        sched = self.schedule
        phase = sched.phase_of_sample(self.sample_index)
        window = sched.window(phase)
        if self.shuffled is not None:
            start, epoch = self.shuffled.start(self.sample_index, self.dp_rank)
            if epoch != self.epoch:
                if not self.infinite:
                    return None
                self._log_new_epoch(epoch)
        else:
            stride = window * sched.dp_world_size
            if self.cursor + stride > len(self.store):
                if not self.infinite:
                    return None
                self._log_new_epoch(self.epoch + 1)
                self.cursor = 0
            start = self.cursor + self.dp_rank * window
            self.cursor += stride
        tokens = self.store.slice(start, start + window)
        if self.sample_index == sched.switch_sample and sched.switch_step > 0 and self.dp_rank == 0:
            logger.info(
                f"[tst] switching to next-token training at step {sched.switch_step + 1} "
                f"(sample {self.sample_index} of rank {self.dp_rank}, epoch {self.epoch})"
            )
        self.sample_index += 1
        return tokens, phase

    def _log_new_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        logger.warning(
            f"[tst] {self.name} data exhausted after {self.sample_index} samples; "
            f"starting epoch {self.epoch} (text is now repeated)"
        )

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
        if self.shuffled is None:
            self.cursor, self.epoch = sched.position_after(expected, len(self.store))
        else:  # the epoch of the last sample served: the next one says whether a new one begins
            self.epoch = self.shuffled.start(expected - 1, self.dp_rank)[1]
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
        """(input, labels) of one window ``x`` (``tst_titan.method.bagging``)."""
        sched = self.schedule
        if phase == 1:
            inputs, labels = make_sample(x, sched.mode, sched.bag_size, sched.seq_len)
        else:
            inputs, labels = next_token_sample(x)
        return {"input": inputs}, labels

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
            "data_seed": self.data_seed,
            "window_order": self.window_order,
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
        # checkpoints written before tst.data_seed existed read the store's order: seed 0
        saved_seed = state.get("data_seed", 0)
        if saved_seed != self.data_seed:
            raise ValueError(
                f"[tst] cannot resume: the checkpoint read the training documents in the order of "
                f"tst.data_seed = {saved_seed}, this run has tst.data_seed = {self.data_seed}; resume "
                "with the seed the checkpoint was trained with"
            )
        # checkpoints written before tst.window_order existed read windows in stream order
        saved_order = state.get("window_order", "stream")
        if saved_order != self.window_order:
            raise ValueError(
                f"[tst] cannot resume: the checkpoint read its windows with tst.window_order = "
                f"{saved_order!r}, this run has {self.window_order!r}; resume with the order the "
                "checkpoint was trained with"
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
def build_tst_tokenizer(job_config, *, flavors: dict) -> HuggingFaceTokenizer:
    """The tokenizer is the token store's own, so data and tokenizer cannot disagree.
    ``flavors``: the train spec's model args by flavor (bound by ``tst_titan.train_spec``)."""
    vocab_size = flavors[job_config.model.flavor].vocab_size
    # The parse-time data checks again, at trainer start: a config built or changed in code (or a
    # store deleted since parsing) fails here naming the key, not deep in the tokenizer.
    check_data_config(job_config, vocab_size)
    return HuggingFaceTokenizer(ensure_store_of(job_config, vocab_size))


def build_tst_dataloader(dp_world_size: int, dp_rank: int, tokenizer, job_config, *, flavors: dict,
                         **kwargs) -> ParallelAwareDataloader:
    """The training dataloader; starts the run's :class:`TrainingRun`, which the optimizers,
    learning-rate schedulers and metrics processor built after it belong to."""
    vocab_size = flavors[job_config.model.flavor].vocab_size
    schedule = phase_schedule(job_config, dp_world_size)
    run = begin_training_run(job_config, tst_settings(job_config, schedule))
    dataset = TokenWindowDataset(
        TokenStore(ensure_store_of(job_config, vocab_size), "train"), schedule, dp_rank,
        infinite=True, run=run, settings=run.settings, data_seed=tst_section(job_config).data_seed,
        window_order=tst_section(job_config).window_order,
    )
    run.datasets.append(dataset)
    return ParallelAwareDataloader(
        dataset,
        dp_rank=dp_rank,
        dp_world_size=dp_world_size,
        batch_size=job_config.training.local_batch_size,
    )


def build_validation_dataset(job_config, dp_world_size: int, dp_rank: int, vocab_size: int
                             ) -> TokenWindowDataset:
    """Plain next-token samples from the held-out split, from its start (so every evaluation
    reads the same tokens). ``validation.steps = -1`` reads the whole split once."""
    val = job_config.validation
    path = val.dataset_path or store_dir_of(job_config, vocab_size)
    schedule = PhaseSchedule.plain(val.seq_len, val.local_batch_size, dp_world_size)
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
