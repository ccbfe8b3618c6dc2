"""``[tst] optimizer_at_switch``: keep the optimizer state across the phase switch, or reset it.

* ``"keep"`` (default): AdamW's moments and step counts carry over into phase 2, as they do when
  torchtitan resumes a checkpoint (the paper resumed its recovery phase from a checkpoint; a
  community replication found resetting hurts).
* ``"reset_moments"``: right before the first phase-2 optimizer step every optimizer's
  per-parameter state is cleared, so that step is a fresh AdamW's first step (bias correction from
  step 1, zero moments), at the scheduled learning rate (param groups are kept).
* ``"reset_rewarm"``: the same reset, and the learning rate warmed up again from 0 over
  ``tst.rewarm_steps`` steps (``tst_titan.components.lr_scheduler``): what patch-level training
  (Shao et al.) did when it restarted its schedule.

The TST specs wrap ``TrainSpec.build_optimizers_fn`` (:func:`switch_aware_optimizers`): with
a reset, a step pre-hook on torchtitan's ``OptimizersContainer`` looks at where the training
data stands. At optimizer step k the dataset has served exactly ``k x samples per step`` samples
(the trainer draws every microbatch of a step before the step; the metrics processor checks it
after every step), so the hook resets when that count is ``(switch_step + 1) x samples per step``.
The data position is checkpointed (or recovered from the scheduler's step), so a run resumed after
the switch does not reset again, and one resumed from the last bag step's checkpoint resets at the
same step as the uninterrupted run: resume stays bit-exact.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torchtitan.tools.logging import logger

from tst_titan.components.run_context import TrainingRun, training_run_of


def reset_optimizer_state(optimizers) -> int:
    """Clear the per-parameter state of every optimizer in ``optimizers`` (an
    ``OptimizersContainer`` or one ``torch.optim.Optimizer``); return how many parameters had state.
    Param groups (learning rate, betas, weight decay) are kept."""
    count = 0
    for opt in getattr(optimizers, "optimizers", None) or [optimizers]:
        count += len(opt.state)
        opt.state.clear()
    if getattr(optimizers, "optimizers", None) is not None:
        optimizers.state.clear()  # the container's own (normally empty) state
    return count


def reset_step(run: TrainingRun) -> int | None:
    """The optimizer step before which a ``reset_*`` run clears the state (the first phase-2 step),
    or None without a phase 1 or without a training dataset."""
    if not run.datasets:
        return None
    switch_step = run.datasets[0].schedule.switch_step
    return switch_step + 1 if switch_step > 0 else None


def upcoming_step(run: TrainingRun) -> int | None:
    """The optimizer step about to run: the samples the training data served / samples per step."""
    if not run.datasets:
        return None
    dataset = run.datasets[0]
    per_step = dataset.schedule.samples_per_step
    if dataset.sample_index % per_step:
        return None  # mid-step: not at an optimizer step
    return dataset.sample_index // per_step


def install_reset_at_switch(optimizers: Optimizer, run: TrainingRun):
    """Register the pre-step hook that resets ``optimizers`` before the first phase-2 step of
    ``run``; returns the hook handle. ``run.optimizer_resets`` lists the steps it reset at."""

    def reset_before_first_phase2_step(optimizer, args, kwargs):
        step = upcoming_step(run)
        if step is None or step != reset_step(run):
            return None
        cleared = reset_optimizer_state(optimizer)
        run.optimizer_resets.append(step)
        setting = run.settings.get("optimizer_at_switch", "reset_moments")
        rate = ("learning rate warmed up again over tst.rewarm_steps = "
                f"{run.settings.get('rewarm_steps')} steps" if setting == "reset_rewarm"
                else "learning-rate schedule unchanged")
        logger.info(
            f"[tst] optimizer state reset before step {step}, the first next-token step "
            f"(tst.optimizer_at_switch = {setting!r}; {cleared} parameters' moments cleared, {rate})"
        )
        return None

    return optimizers.register_step_pre_hook(reset_before_first_phase2_step)


def switch_aware_optimizers(build_optimizers_fn):
    """Wrap a ``TrainSpec.build_optimizers_fn``: with ``tst.optimizer_at_switch = "reset_*"`` (read
    from the run the optimizer config belongs to, started by the TST dataloader, which torchtitan
    builds first), install :func:`install_reset_at_switch`."""

    def build_optimizers(model_parts, optimizer_config, parallel_dims, ft_manager=None):
        run = training_run_of(optimizer_config, "optimizers")
        optimizers = build_optimizers_fn(model_parts, optimizer_config, parallel_dims, ft_manager)
        if run.settings["optimizer_at_switch"] == "keep" or not run.settings["enable"]:
            return optimizers
        if reset_step(run) is None:
            return optimizers  # no phase 1, no switch
        install_reset_at_switch(optimizers, run)
        return optimizers

    build_optimizers.__name__ = f"switch_aware_{getattr(build_optimizers_fn, '__name__', 'optimizers')}"
    return build_optimizers
