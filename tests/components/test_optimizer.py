"""tst.optimizer_at_switch: the reset hook on torchtitan's OptimizersContainer, on a small model.

(The same through real trainings, with resume across the switch: tests/integration/test_ablations.py;
the builder's order with the dataloader: tests/components/test_run_context.py.)"""

import copy
from types import SimpleNamespace

import pytest
import torch
from torchtitan.components.optimizer import OptimizersContainer

from tst_titan.components.optimizer import (
    install_reset_at_switch,
    reset_optimizer_state,
    switch_aware_optimizers,
)
from tst_titan.components.run_context import TrainingRun, begin_training_run

ADAMW = {"lr": 1e-2, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}
SWITCH_STEP, PER_STEP = 3, 2  # steps 1..3 are bag steps; 2 samples per step


class FakeData:
    """What the hook reads of the training dataset: the schedule and the samples served."""

    def __init__(self, sample_index=0):
        self.schedule = SimpleNamespace(switch_step=SWITCH_STEP, samples_per_step=PER_STEP)
        self.sample_index = sample_index


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def grads(m, step):
    """Deterministic gradients for step `step` (the same for every copy of the model)."""
    g = torch.Generator().manual_seed(step)
    for p in m.parameters():
        p.grad = torch.randn(p.shape, generator=g)


def train(m, opts, data, steps, start=1):
    """Steps start..steps as torchtitan runs them: the step's samples are drawn, then opt.step()."""
    for step in range(start, steps + 1):
        data.sample_index = step * PER_STEP
        grads(m, step)
        opts.step()
        opts.zero_grad()


def run_with(data):
    run = TrainingRun(None, {})
    run.datasets.append(data)
    return run


def test_reset_before_the_first_phase2_step_equals_a_fresh_adamw():
    m = model()
    opts = OptimizersContainer([m], torch.optim.AdamW, ADAMW)
    data = FakeData()
    run = run_with(data)
    install_reset_at_switch(opts, run)
    train(m, opts, data, SWITCH_STEP)
    assert run.optimizer_resets == []
    inner = opts.optimizers[0]
    assert all(s["step"].item() == SWITCH_STEP for s in inner.state.values())
    before = copy.deepcopy(m)

    # Step 4, the first next-token step: the hook clears the state, then AdamW steps as a fresh one.
    seen = []
    opts.register_step_pre_hook(lambda *a: seen.append(len(inner.state)))  # runs after ours
    train(m, opts, data, SWITCH_STEP + 1, start=SWITCH_STEP + 1)
    assert seen == [0], "the state must be empty when the first phase-2 step starts"
    assert run.optimizer_resets == [SWITCH_STEP + 1]

    fresh_model = before
    fresh = torch.optim.AdamW(fresh_model.parameters(), **ADAMW)
    grads(fresh_model, SWITCH_STEP + 1)
    fresh.step()
    for (p, q) in zip(m.parameters(), fresh_model.parameters()):
        assert torch.equal(p, q)
        ours, theirs = inner.state[p], fresh.state[q]
        assert ours["step"].item() == theirs["step"].item() == 1
        assert torch.equal(ours["exp_avg"], theirs["exp_avg"])
        assert torch.equal(ours["exp_avg_sq"], theirs["exp_avg_sq"])
    assert inner.param_groups[0]["lr"] == ADAMW["lr"]  # param groups (the scheduled LR) are kept

    # Later steps never reset again.
    train(m, opts, data, SWITCH_STEP + 4, start=SWITCH_STEP + 2)
    assert run.optimizer_resets == [SWITCH_STEP + 1]
    assert all(s["step"].item() == 4 for s in inner.state.values())


@pytest.mark.parametrize("resume_at, resets", [(SWITCH_STEP - 1, True), (SWITCH_STEP, True),
                                               (SWITCH_STEP + 1, False), (SWITCH_STEP + 3, False)])
def test_resume_resets_only_when_the_first_phase2_step_is_still_to_come(resume_at, resets):
    # A run resumed from the checkpoint of step `resume_at`: the data position says where it stands.
    m = model()
    uninterrupted = OptimizersContainer([m], torch.optim.AdamW, ADAMW)
    train(m, uninterrupted, FakeData(), resume_at)
    resumed = OptimizersContainer([m], torch.optim.AdamW, ADAMW)
    resumed.load_state_dict(uninterrupted.state_dict())
    data = FakeData(sample_index=resume_at * PER_STEP)
    run = run_with(data)
    install_reset_at_switch(resumed, run)
    train(m, resumed, data, SWITCH_STEP + 5, start=resume_at + 1)
    assert run.optimizer_resets == ([SWITCH_STEP + 1] if resets else [])
    steps_since_reset = SWITCH_STEP + 5 - SWITCH_STEP if resets else SWITCH_STEP + 5
    assert all(s["step"].item() == steps_since_reset for s in resumed.optimizers[0].state.values())


def test_builder_installs_the_hook_only_for_reset():
    def build(model_parts, optimizer_config, parallel_dims, ft_manager=None):
        return OptimizersContainer(model_parts, torch.optim.AdamW, ADAMW)

    wrapped = switch_aware_optimizers(build)
    for setting, enable, hooked in [("keep", True, False), ("reset_moments", True, True), ("reset_rewarm", True, True), ("reset_moments", False, False)]:
        # the run the TST dataloader builder starts; the optimizers belong to it by their config
        job_config = SimpleNamespace(optimizer=SimpleNamespace(name="AdamW"))
        run = begin_training_run(job_config, {"optimizer_at_switch": setting, "enable": enable})
        run.datasets.append(FakeData())
        opts = wrapped([model()], job_config.optimizer, None)
        assert bool(opts._optimizer_step_pre_hooks) == hooked, (setting, enable)


def test_reset_optimizer_state_on_a_plain_optimizer():
    m = model()
    opt = torch.optim.AdamW(m.parameters(), **ADAMW)
    grads(m, 1)
    opt.step()
    assert reset_optimizer_state(opt) == 4 and not opt.state
