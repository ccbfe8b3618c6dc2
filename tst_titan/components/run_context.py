"""The one piece of state the builders of a TST trainer share: its :class:`TrainingRun`.

torchtitan's ``Trainer`` calls the ``TrainSpec`` builders one by one, with no reference to each
other: tokenizer, dataloader, metrics processor, ..., optimizers, learning-rate schedulers. The TST
dataloader builder starts the run (:func:`begin_training_run`); the metrics processor, the
optimizers and the schedulers then ask for the run their own config belongs to
(:func:`training_run_of`). Asking before the dataloader was built, or with another job config
(a stale run of an earlier trainer in the same process), is an error, never a silent fallback.
"""

from __future__ import annotations

from typing import Any

_current: "TrainingRun | None" = None


class TrainingRun:
    """What one trainer's pieces share about its training data.

    * ``job_config``: the config the run was built from (identity: builders prove they belong to
      this run by passing it, or the section of it that torchtitan gave them);
    * ``settings``: the run's ``[tst]`` settings (kept in the dataloader's checkpointed state);
    * ``datasets``: this process's training dataset(s), for the position and epoch checks and
      for the optimizer reset at the switch (at optimizer step k the data has served exactly
      ``k x samples per step`` samples);
    * ``resume_step``: the step the learning-rate scheduler state was loaded at (its
      ``last_epoch``), so the data can follow the step when its own state was not loaded;
    * ``optimizer_resets``: the steps before which ``tst.optimizer_at_switch = "reset_*"`` cleared
      the optimizer state.
    """

    def __init__(self, job_config, settings: dict[str, Any]) -> None:
        self.job_config = job_config
        self.settings = settings
        self.datasets: list = []
        self.resume_step: int | None = None
        self.optimizer_resets: list[int] = []

    def owns(self, config_part) -> bool:
        """Whether ``config_part`` is this run's job config or one of its sections."""
        job_config = self.job_config
        return config_part is job_config or any(
            config_part is value for value in vars(job_config).values()
        )

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


def begin_training_run(job_config, settings: dict[str, Any]) -> TrainingRun:
    """Start the :class:`TrainingRun` of the trainer being built in this process (called by the
    TST dataloader builder, the first TST piece torchtitan builds)."""
    global _current
    _current = TrainingRun(job_config, settings)
    return _current


def training_run_of(config_part, what: str) -> TrainingRun:
    """The run ``config_part`` (a job config or one of its sections) belongs to; ``what`` names
    the piece asking, for the error raised when there is none."""
    if _current is None or not _current.owns(config_part):
        raise RuntimeError(
            f"[tst] {what} of a TST train spec was built before the TST training dataloader of "
            "the same job config: the data decides the phase, and the "
            f"{what} follow it. Build the dataloader first (torchtitan's Trainer does), with "
            "the same job config object"
        )
    return _current
