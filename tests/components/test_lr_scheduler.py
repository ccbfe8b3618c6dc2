"""tst_titan.components.lr_scheduler: the re-warm after the switch, as a factor on the schedule.
(The resumed-step report is tested in test_run_context.py; a real run in
tests/integration/test_ablations.py.)"""

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from tst_titan.components.lr_scheduler import rewarm_after_switch, rewarm_factor


def test_rewarm_factor_is_one_in_phase_one_then_rises_linearly():
    # switch after step 4 (LambdaLR's last_epoch 0..3 are steps 1..4), 3 re-warm steps
    assert [rewarm_factor(e, 4, 3) for e in range(9)] == [1, 1, 1, 1, 1 / 3, 2 / 3, 1, 1, 1]
    assert [rewarm_factor(e, 2, 1) for e in range(4)] == [1, 1, 1, 1]  # one step: no dip at all


def test_rewarm_multiplies_every_schedulers_rate_and_survives_a_state_dict_round_trip():
    params = [torch.nn.Parameter(torch.zeros(1))]
    schedule = lambda e: 0.5 + 0.1 * e  # noqa: E731  (any schedule)
    opt = torch.optim.SGD(params, lr=2.0)
    scheduler = LambdaLR(opt, schedule)
    rewarm_after_switch([scheduler], switch_step=2, rewarm_steps=4)
    rates = []
    for _ in range(8):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    expected = [2.0 * schedule(e) * rewarm_factor(e, 2, 4) for e in range(8)]
    assert rates == pytest.approx(expected, rel=1e-12)
    assert rates[2] == pytest.approx(2.0 * schedule(2) / 4)  # the first phase-2 step

    # a scheduler rebuilt and loaded from the state continues at the same rates
    state = scheduler.state_dict()
    opt2 = torch.optim.SGD(params, lr=2.0)
    resumed = LambdaLR(opt2, schedule)
    rewarm_after_switch([resumed], switch_step=2, rewarm_steps=4)
    resumed.load_state_dict(state)
    resumed.step()
    scheduler.step()
    assert resumed.get_last_lr() == scheduler.get_last_lr()
