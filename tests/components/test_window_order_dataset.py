"""``tst.window_order = "shuffled"`` in the training dataset: every sample is the naive sample of the
window ``ShuffledWindows`` names (in the data_seed's document order), resumes are exact with and
without the dataloader state, and another order is refused on resume and in the config."""

import numpy as np
import pytest
import torch

from tests.components.test_data_seed import _samples, _store, reordered_stream
from tests.helpers.data import NAIVE_WINDOW, job, naive_sample
from tests.helpers.trainer import parse
from tst_titan.components.checks import check_tst_section
from tst_titan.components.dataloader import TokenWindowDataset, phase_schedule
from tst_titan.components.run_context import TrainingRun
from tst_titan.datastore.window_order import ShuffledWindows
from tst_titan.job_config import TST, ConfigError


def _dataset(store, sched, rank=0, seed=3, **kwargs):
    return TokenWindowDataset(store, sched, rank, data_seed=seed, window_order="shuffled", **kwargs)


@pytest.mark.parametrize("mode", ["full", "input_only", "output_only"])
@pytest.mark.parametrize("world", [1, 2])
def test_samples_are_the_naive_samples_of_the_shuffled_windows(mode, world):
    store, seed, n = _store(n_docs=40), 3, 80  # ~2,000 tokens: phase 2 wraps its epoch
    sched = phase_schedule(job(steps=10, r=0.3, s=3, local_batch=2, seq_len=6, mode=mode), world)
    stream = reordered_stream(store, seed)
    order = ShuffledWindows(len(stream), sched.window(1), sched.window(2), sched.switch_sample, world, seed)
    for rank in range(world):
        got = _samples(_dataset(store, sched, rank, seed), n)
        for i, (x, y) in enumerate(got):
            bag = i < sched.switch_sample
            width = NAIVE_WINDOW[mode if bag else "full"](3 if bag else 1, 6)
            start = order.start(i, rank)[0]
            ref_x, ref_y = naive_sample(stream[start:start + width], mode, 3 if bag else 1, 6, bag)
            assert x["input"].reshape(-1).tolist() == np.asarray(ref_x).reshape(-1).tolist(), i
            assert y.reshape(-1).tolist() == np.asarray(ref_y).reshape(-1).tolist(), i


def test_consecutive_samples_come_from_all_over_the_stream():
    store = _store(n_docs=120)
    sched = phase_schedule(job(enable=False, local_batch=4, seq_len=16), 1)
    stream = reordered_stream(store, 3).tolist()
    starts = []
    for x, y in _samples(_dataset(store, sched), 40):
        window = x["input"].tolist() + y[-1:].tolist()
        starts.append(next(k for k in range(0, len(stream), 17) if stream[k:k + 17] == window))
    assert sorted(starts) != starts and len(set(starts)) == 40
    assert np.median(np.abs(np.diff(starts))) > len(stream) / 10


@pytest.mark.parametrize("cut", [0, 5, 6, 7, 45])
def test_resume_from_the_state_is_exact(cut):
    store = _store(n_docs=12)  # ~550 tokens: the epochs wrap
    sched = phase_schedule(job(steps=10, r=0.3, s=2, local_batch=2, seq_len=8), 1)
    reference = _samples(_dataset(store, sched), 70)
    first = _dataset(store, sched)
    _samples(first, cut)
    state = first.state_dict()
    assert state["window_order"] == "shuffled"
    resumed = _dataset(store, sched)
    resumed.load_state_dict(state)
    got = _samples(resumed, 70 - cut)
    assert resumed.epoch == _dataset(store, sched).shuffled.start(69, 0)[1] > 0
    for (x, y), (rx, ry) in zip(got, reference[cut:]):
        assert torch.equal(x["input"], rx["input"]) and torch.equal(y, ry)


@pytest.mark.parametrize("step", [1, 3, 4, 20])
def test_following_the_resumed_step_without_state_is_exact(step):
    store = _store(n_docs=12)
    cfg = job(steps=10, r=0.3, s=2, local_batch=2, seq_len=8)
    sched = phase_schedule(cfg, 1)
    reference = _samples(_dataset(store, sched), 60)
    run = TrainingRun(cfg, {})
    run.set_resume_step(step)
    resumed = _dataset(store, sched, run=run)
    got = _samples(resumed, 60 - 2 * step)
    for (x, y), (rx, ry) in zip(got, reference[2 * step:]):
        assert torch.equal(x["input"], rx["input"]) and torch.equal(y, ry)


def test_resume_with_another_window_order_is_refused():
    store = _store()
    sched = phase_schedule(job(enable=False), 1)
    state = _dataset(store, sched).state_dict()
    with pytest.raises(ValueError, match=r"tst.window_order = 'shuffled', this run has 'stream'"):
        TokenWindowDataset(store, sched, 0, data_seed=3).load_state_dict(state)
    del state["window_order"]  # a checkpoint from before the key: stream order
    with pytest.raises(ValueError, match=r"tst.window_order = 'stream', this run has 'shuffled'"):
        _dataset(store, sched).load_state_dict(state)


def test_a_dataset_built_in_code_refuses_an_unknown_order(tmp_path):
    sched = phase_schedule(job(enable=False), 1)
    with pytest.raises(ValueError, match=r"tst.window_order must be one of 'stream', 'shuffled', got 'random'"):
        TokenWindowDataset(_store(), sched, 0, window_order="random")


def test_the_key_is_checked_and_parses():
    with pytest.raises(ConfigError, match=r"tst.window_order must be one of 'stream', 'shuffled', got 'random'"):
        check_tst_section(TST(window_order="random"))
    assert parse().tst.window_order == "stream"
    assert parse("--tst.window_order", "shuffled").tst.window_order == "shuffled"
    with pytest.raises(ConfigError, match="tst.window_order"):
        parse("--tst.window_order", "sorted")
