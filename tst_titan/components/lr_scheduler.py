"""Learning-rate schedulers that tell the data which step a run resumed at."""

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
        return schedulers

    build_lr_schedulers.__name__ = f"resume_aware_{getattr(build_lr_schedulers_fn, '__name__', 'lr')}"
    return build_lr_schedulers
