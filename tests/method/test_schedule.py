"""The phase schedule in plain numbers: the switch, gradient accumulation, sample windows, raw
tokens read, and the data position after any number of samples (against a naive cursor)."""

import pytest

from tests.helpers.data import NAIVE_WINDOW
from tst_titan.job_config import MODES
from tst_titan.method.schedule import (
    PhaseSchedule,
    gradient_accumulation_steps,
    switch_step,
    window_tokens,
)


def schedule(mode="full", s=4, switch=3, seq_len=8, per_step=2, world=1):
    return PhaseSchedule(bag_size=s, switch_step=switch, seq_len=seq_len, samples_per_step=per_step,
                         dp_world_size=world, mode=mode)


def test_switch_step_is_round_r_times_steps():
    for steps, r, expected in [(10, 0.3, 3), (200, 0.3, 60), (7, 0.5, 4), (100, 0.0, 0), (3, 0.25, 1),
                               (10, 0.25, 2), (10, 0.35, 4)]:  # Python's round: halves to even
        assert switch_step(r, steps) == round(r * steps) == expected
        sched = schedule(switch=switch_step(r, steps))
        assert [sched.phase_of_step(t) for t in range(1, steps + 1)] == [1] * expected + [2] * (steps - expected)


def test_gradient_accumulation_like_torchtitan():
    # global batch 12 = local 2 x 2 ranks x 3 accumulation steps
    assert gradient_accumulation_steps(12, 2, 2) == 3
    assert gradient_accumulation_steps(-1, 2, 2) == 1  # global < 0: one microbatch per rank
    assert gradient_accumulation_steps(2, 2, 2) == 1  # never fewer than one
    sched = schedule(switch=3, per_step=2 * gradient_accumulation_steps(12, 2, 2), world=2)
    assert sched.switch_sample == 3 * 6
    assert [sched.phase_of_sample(i) for i in (0, 17, 18)] == [1, 1, 2]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("s", [1, 2, 6])
def test_window_tokens_per_mode(mode, s):
    tokens, formula = window_tokens(mode, s, 32)
    assert tokens == NAIVE_WINDOW[mode](s, 32)
    assert "tst.bag_size" in formula and "training.seq_len" in formula
    if s == 1 and mode != "output_only":
        assert tokens == 33  # bags of one: the plain L + 1
    sched = schedule(mode, s=s, seq_len=32)
    assert (sched.window(1), sched.window(2)) == (tokens, 33)


def test_window_tokens_names_the_allowed_modes():
    with pytest.raises(ValueError, match=r"tst\.mode must be one of 'full', 'input_only', 'output_only'"):
        window_tokens("both", 4, 8)


def test_plain_schedule_has_no_phase_one():
    sched = PhaseSchedule.plain(seq_len=8, samples_per_step=2, dp_world_size=2)
    assert (sched.bag_size, sched.switch_step, sched.switch_sample, sched.mode) == (1, 0, 0, "full")
    assert sched.phase_of_step(1) == sched.phase_of_sample(0) == 2
    assert sched.window(1) == sched.window(2) == 9
    assert sched.raw_tokens_seen(5) == 5 * 2 * 2 * 8


@pytest.mark.parametrize("mode, per_position", [("full", 4), ("input_only", 4), ("output_only", 1)])
def test_raw_tokens_seen_counts_input_tokens_per_mode(mode, per_position):
    sched = schedule(mode, s=4, switch=switch_step(0.3, 10), seq_len=8, per_step=2)
    per_step = 2 * 8
    assert sched.raw_tokens_seen(3) == 3 * per_position * per_step
    assert sched.raw_tokens_seen(5) == (3 * per_position + 2) * per_step
    assert (sched.input_bag_size(1), sched.target_bag_size(1)) == {
        "full": (4, 4), "input_only": (4, 1), "output_only": (1, 4)}[mode]
    assert sched.input_bag_size(2) == sched.target_bag_size(2) == 1


def test_raw_tokens_seen_formula():
    sched = schedule(s=4, switch=switch_step(0.3, 10), seq_len=8, per_step=2)
    per_step = 2 * 8
    assert sched.global_positions_per_step() == per_step
    assert sched.raw_tokens_seen(2) == 2 * 4 * per_step
    assert sched.raw_tokens_seen(5) == (3 * 4 + 2) * per_step


def naive_position(sched, samples, n_tokens):
    """The dataset's cursor walk, one sample at a time: a stride of window x ranks, a new epoch
    (cursor 0) when the next stride does not fit."""
    cursor = epoch = 0
    for i in range(samples):
        stride = sched.window(sched.phase_of_sample(i)) * sched.dp_world_size
        if cursor + stride > n_tokens:
            cursor, epoch = 0, epoch + 1
        cursor += stride
    return cursor, epoch


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("n_tokens, s, switch", [(3000, 4, 5), (700, 4, 5), (250, 3, 9), (1000, 1, 0),
                                                 (999, 2, 3)])
def test_position_after_is_the_naive_cursor_walk(mode, world, n_tokens, s, switch):
    sched = schedule(mode, s=s, switch=switch, seq_len=8, per_step=2, world=world)
    for samples in range(200):
        assert sched.position_after(samples, n_tokens) == naive_position(sched, samples, n_tokens), samples


def test_position_after_refuses_a_stride_larger_than_the_split():
    with pytest.raises(ValueError, match="a stride of 36 tokens does not fit 30 tokens"):
        schedule(s=4, seq_len=8).position_after(1, 30)
