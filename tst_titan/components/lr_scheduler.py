"""Learning-rate schedulers that tell the data which step a run resumed at, and re-warm the rate
after the switch with ``tst.optimizer_at_switch = "reset_rewarm"``."""

from __future__ import annotations

from tst_titan.components.run_context import training_run_of


def resume_aware_lr_schedulers(build_lr_schedulers_fn):
    """Wrap a ``TrainSpec.build_lr_schedulers_fn`` so that loading the schedulers' checkpointed
    state tells the run the step it resumes at (``last_epoch`` is the trainer step): the dataset
    then follows that step even when its own state was not loaded."""

    def build_lr_schedulers(optimizers, lr_scheduler_config, training_steps):
        run = training_run_of(lr_scheduler_config, "learning-rate schedulers")
        schedulers = build_lr_schedulers_fn(optimizers, lr_scheduler_config, training_steps)
        # This container's load_state_dict is the only place the resumed step is seen (torchtitan
        # 0.2.2 has no load hook), so this one instance's method is wrapped.
        load = schedulers.load_state_dict

        def load_state_dict(state_dict):
            load(state_dict)
            run.set_resume_step(state_dict["last_epoch"])

        schedulers.load_state_dict = load_state_dict
        settings = run.settings
        if settings["enable"] and settings["optimizer_at_switch"] == "reset_rewarm" and settings["switch_step"] > 0:
            rewarm_after_switch(schedulers, settings["switch_step"], settings["rewarm_steps"])
        return schedulers

    build_lr_schedulers.__name__ = f"resume_aware_{getattr(build_lr_schedulers_fn, '__name__', 'lr')}"
    return build_lr_schedulers


def rewarm_factor(last_epoch: int, switch_step: int, rewarm_steps: int) -> float:
    """The factor on the scheduled learning rate of the step that LambdaLR computes at
    ``last_epoch`` (= trainer step - 1): 1 in phase 1, then ``min(1, j / rewarm_steps)`` for
    phase-2 step j = 1, 2, ... (the first phase-2 step is trainer step ``switch_step + 1``)."""
    if last_epoch < switch_step:
        return 1.0
    return min(1.0, (last_epoch - switch_step + 1) / rewarm_steps)


def rewarm_after_switch(schedulers, switch_step: int, rewarm_steps: int) -> None:
    """Multiply every scheduler's learning-rate factor by :func:`rewarm_factor`. The factor is a
    pure function of the step, so a resumed run follows the same rates."""
    for scheduler in schedulers:
        scheduler.lr_lambdas = [
            _rewarmed(base, switch_step, rewarm_steps) for base in scheduler.lr_lambdas
        ]


def _rewarmed(base, switch_step: int, rewarm_steps: int):
    def lr_factor(last_epoch: int) -> float:
        return base(last_epoch) * rewarm_factor(last_epoch, switch_step, rewarm_steps)

    return lr_factor
