"""The phase-carrying dataset against a naive construction from the raw token stream; its
position is a pure function of the sample index (so the phase can follow the training step); its
checkpointed state carries the [tst] settings."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torchtitan.components.dataloader import ParallelAwareDataloader

from tests.helpers.data import NAIVE_WINDOW, ArrayStore, job, naive_sample
from tst_titan.components.dataloader import TokenWindowDataset, phase_schedule, tst_settings
from tst_titan.components.run_context import TrainingRun


def naive_samples(stream, schedule, rank, n):
    """Samples 0..n-1 of rank `rank`, cut the slow obvious way (tests/helpers/data.py)."""
    out, pos = [], 0
    mode = schedule.mode
    for i in range(n):
        bag = i < schedule.switch_sample
        s = schedule.bag_size if bag else 1
        L = schedule.seq_len
        window = NAIVE_WINDOW[mode if bag else "full"](s, L)
        chunk = stream[pos + rank * window : pos + (rank + 1) * window]
        pos += window * schedule.dp_world_size
        out.append(naive_sample(chunk, mode, s, L, bag))
    return out


def _samples(ds, n):
    it = iter(ds)
    return [next(it) for _ in range(n)]


# -- the schedule of a job config ---------------------------------------------------------------
def test_switch_step_is_round_r_times_steps():
    for steps, r, expected in [(10, 0.3, 3), (200, 0.3, 60), (7, 0.5, 4), (100, 0.0, 0), (3, 0.25, 1)]:
        sched = phase_schedule(job(steps=steps, r=r), dp_world_size=1)
        assert sched.switch_step == round(r * steps) == expected
        assert [sched.phase_of_step(t) for t in range(1, steps + 1)] == [1] * expected + [2] * (steps - expected)


def test_switch_sample_counts_gradient_accumulation_and_ranks():
    # global batch 12 = local 2 x 2 ranks x 3 accumulation steps
    sched = phase_schedule(job(steps=10, r=0.3, local_batch=2, global_batch=12), 2)
    assert sched.samples_per_step == 6
    assert sched.switch_sample == 3 * 6


def test_mode_is_ignored_without_tst():
    sched = phase_schedule(job(enable=False, mode="output_only"), 1)
    assert sched.mode == "full" and sched.switch_step == 0


# -- samples ------------------------------------------------------------------------------------
#: (input shape, label shape) of a phase-1 sample per tst.mode, at L = 8 and bag size s.
PHASE1_SHAPES = {
    "full": lambda s: ((8, s), (8, s)),
    "input_only": lambda s: ((8, s), (8,)),
    "output_only": lambda s: ((8,), (8, s)),
}


@pytest.mark.parametrize("mode", ["full", "input_only", "output_only"])
@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("s", [1, 3])
def test_samples_match_naive_construction(world, s, mode):
    stream = np.random.default_rng(0).integers(0, 1000, size=5000)
    sched = phase_schedule(job(steps=10, r=0.3, s=s, local_batch=2, mode=mode), world)
    assert sched.mode == mode
    n = 12  # crosses the switch at sample 6
    for rank in range(world):
        ds = TokenWindowDataset(ArrayStore(stream), sched, rank)
        got = [next(it) for it in [iter(ds)] for _ in range(n)]
        for i, ((inp, lab), (ref_in, ref_lab)) in enumerate(zip(got, naive_samples(stream, sched, rank, n))):
            x = inp["input"]
            assert x.dtype == lab.dtype == torch.int64
            # bag size 1 is served as [L, 1] where a bag would be: same tokens as the baseline's [L]
            assert x.reshape(-1).tolist() == np.asarray(ref_in).reshape(-1).tolist()
            assert lab.reshape(-1).tolist() == np.asarray(ref_lab).reshape(-1).tolist()
            shapes = PHASE1_SHAPES[mode](s) if i < 6 else ((8,), (8,))
            assert (tuple(x.shape), tuple(lab.shape)) == shapes
        # the position is a pure function of the sample index, in every mode
        assert (ds.cursor, ds.epoch) == sched.position_after(n, len(stream))


def test_mode_targets_on_a_counting_stream():
    """Token t of the stream is the number t: the targets can be read off directly."""
    stream = np.arange(1000)
    L, s = 4, 3

    def first(mode):
        sched = phase_schedule(job(steps=10, r=0.5, s=s, seq_len=L, mode=mode), 1)
        it = iter(TokenWindowDataset(ArrayStore(stream), sched, 0))
        return next(it), next(it)

    (x, y), (x2, _) = first("input_only")
    assert x["input"].tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert y.tolist() == [3, 6, 9, 12]  # the first token of the next bag
    assert x2["input"][0].tolist() == [13, 14, 15]  # window s*L + 1 = 13 tokens
    (x, y), (x2, _) = first("output_only")
    assert x["input"].tolist() == [0, 1, 2, 3]
    assert y.tolist() == [[1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 6]]  # the next s tokens
    assert x2["input"][0].item() == 7  # window L + s = 7 tokens


def test_bag_labels_are_the_next_bag():
    stream = np.arange(1000)
    sched = phase_schedule(job(steps=10, r=0.5, s=3, seq_len=4), 1)
    x, y = next(iter(TokenWindowDataset(ArrayStore(stream), sched, 0)))
    assert x["input"].tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert y.tolist() == [[3, 4, 5], [6, 7, 8], [9, 10, 11], [12, 13, 14]]


def test_phase_shapes_and_no_batch_mixes_phases():
    stream = np.arange(20000) % 997
    sched = phase_schedule(job(steps=10, r=0.3, s=4, local_batch=2, global_batch=4), 1)
    assert sched.switch_sample == 3 * 4
    loader = ParallelAwareDataloader(TokenWindowDataset(ArrayStore(stream), sched, 0), 0, 1, batch_size=2)
    shapes = []
    it = iter(loader)
    for i in range(10):
        x, y = next(it)
        shapes.append((tuple(x["input"].shape), tuple(y.shape)))
    # 12 phase-1 samples = 6 batches of 2, then plain batches
    assert shapes[:6] == [((2, 8, 4), (2, 8, 4))] * 6
    assert shapes[6:] == [((2, 8), (2, 8))] * 4


def test_exhaustion_starts_new_epoch_and_counts_it():
    stream = np.arange(100)
    sched = phase_schedule(job(enable=False, seq_len=9), 1)  # 10 tokens a sample
    ds = TokenWindowDataset(ArrayStore(stream), sched, 0)
    it = iter(ds)
    first = [next(it)[0]["input"][0].item() for _ in range(12)]
    assert first == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 0, 10]
    assert ds.epoch == 1


def test_corpus_too_small_for_one_sample_is_a_clear_error():
    sched = phase_schedule(job(s=4, seq_len=8), 2)
    with pytest.raises(ValueError, match="fewer than one sample"):
        TokenWindowDataset(ArrayStore(np.arange(40)), sched, 0)


# -- the position is a function of the sample index -----------------------------------------------
@pytest.mark.parametrize("mode", ["full", "input_only", "output_only"])
def test_position_after_matches_serving_across_epochs_per_mode(mode):
    stream = np.arange(700)
    sched = phase_schedule(job(steps=20, r=0.5, s=4, seq_len=8, mode=mode), 2)
    ds = TokenWindowDataset(ArrayStore(stream), sched, 0)
    it = iter(ds)
    for n in range(1, 40):  # 20 phase-1 samples, then plain ones; the 700 tokens wrap
        next(it)
        assert (ds.cursor, ds.epoch) == sched.position_after(n, len(stream)), n
    assert ds.epoch >= 1


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("n_tokens, s, r", [
    (3000, 4, 0.5),   # no wrap in phase 1, wraps in phase 2
    (700, 4, 0.5),    # wraps several times in phase 1
    (250, 3, 0.9),    # one phase-1 stride per epoch
    (1000, 1, 0.0),   # TST off: plain samples
    (999, 2, 0.3),
])
def test_position_after_matches_serving_sample_by_sample(world, n_tokens, s, r):
    sched = phase_schedule(job(steps=10, r=r, s=s, local_batch=2, seq_len=8), world)
    ds = TokenWindowDataset(ArrayStore(np.arange(n_tokens)), sched, 0)
    for i in range(200):
        assert sched.position_after(i, n_tokens) == (ds.cursor, ds.epoch), f"after {i} samples"
        ds._next_window()


@pytest.mark.parametrize("step", [0, 1, 3, 4, 7])
def test_fast_forward_to_the_resumed_step_serves_the_same_samples(step):
    # 10 steps, r = 0.3: bag samples 0..5 (2 per step); a small store so epochs wrap.
    stream = np.random.default_rng(3).integers(0, 100, size=400)
    cfg = job(steps=10, r=0.3, s=4, local_batch=2, seq_len=8)
    sched = phase_schedule(cfg, 1)
    reference = _samples(TokenWindowDataset(ArrayStore(stream), sched, 0), 20)
    run = TrainingRun(cfg, {})
    run.set_resume_step(step)
    resumed = TokenWindowDataset(ArrayStore(stream), sched, 0, run=run)
    got = _samples(resumed, 20 - 2 * step)
    for (x, y), (rx, ry) in zip(got, reference[2 * step:]):
        assert torch.equal(x["input"], rx["input"]) and torch.equal(y, ry)


def test_loaded_state_that_disagrees_with_the_step_is_an_error():
    stream = np.arange(3000)
    cfg = job(steps=10, r=0.3, s=2)
    sched = phase_schedule(cfg, 1)
    first = TokenWindowDataset(ArrayStore(stream), sched, 0)
    _samples(first, 5)
    run = TrainingRun(cfg, {})
    run.set_resume_step(4)  # 8 samples, but the state says 5
    resumed = TokenWindowDataset(ArrayStore(stream), sched, 0, run=run)
    resumed.load_state_dict(first.state_dict())
    with pytest.raises(ValueError, match=r"dataloader state of rank 0 is at sample 5.*step 4.*sample 8"):
        next(iter(resumed))


# -- the checkpointed state ---------------------------------------------------------------------
def test_state_dict_resume_is_exact():
    stream = np.random.default_rng(1).integers(0, 50, size=3000)
    sched = phase_schedule(job(steps=10, r=0.3, s=2), 1)
    full = TokenWindowDataset(ArrayStore(stream), sched, 0)
    it = iter(full)
    reference = [next(it) for _ in range(14)]
    for cut in (0, 3, 6, 9):  # before, at and after the switch (sample 6)
        first = TokenWindowDataset(ArrayStore(stream), sched, 0)
        it = iter(first)
        for _ in range(cut):
            next(it)
        resumed = TokenWindowDataset(ArrayStore(stream), sched, 0)
        resumed.load_state_dict(first.state_dict())
        it = iter(resumed)
        for i in range(cut, 14):
            x, y = next(it)
            assert torch.equal(x["input"], reference[i][0]["input"]) and torch.equal(y, reference[i][1])


def test_resume_with_other_tst_settings_is_refused():
    stream = np.arange(3000)
    ds = TokenWindowDataset(ArrayStore(stream), phase_schedule(job(s=2), 1), 0)
    other = TokenWindowDataset(ArrayStore(stream), phase_schedule(job(s=4), 1), 0)
    with pytest.raises(ValueError, match="tst.bag_size"):
        other.load_state_dict(ds.state_dict())


def test_resume_with_another_mode_is_refused():
    stream = np.arange(3000)

    def dataset(mode):
        cfg = job(s=2, mode=mode)
        cfg.tst.loss_weighting = "uniform"
        sched = phase_schedule(cfg, 1)
        return TokenWindowDataset(ArrayStore(stream), sched, 0, settings=tst_settings(cfg, sched))

    with pytest.raises(ValueError, match="tst.mode = 'input_only'.*this run has 'full'"):
        dataset("full").load_state_dict(dataset("input_only").state_dict())


def test_dataset_state_carries_the_tst_settings():
    cfg = job(steps=10, r=0.3, s=4, local_batch=2, global_batch=4)
    cfg.tst.loss_weighting = "power"
    sched = phase_schedule(cfg, 1)
    ds = TokenWindowDataset(ArrayStore(np.arange(3000)), sched, 0, settings=tst_settings(cfg, sched))
    assert ds.state_dict()["tst"] == {
        "enable": True, "bag_size": 4, "superposition_fraction": 0.3, "loss_weighting": "power",
        "mode": "full", "optimizer_at_switch": "keep", "rewarm_steps": 0, "window_order": "stream", "steps": 10,
        "seq_len": 8, "samples_per_step": 4, "switch_step": 3, "switch_sample": 12}
    other_cfg = SimpleNamespace(tst=SimpleNamespace(**{**vars(cfg.tst), "loss_weighting": "uniform"}),
                                training=cfg.training)
    other = TokenWindowDataset(ArrayStore(np.arange(3000)), sched, 0, settings=tst_settings(other_cfg, sched))
    with pytest.raises(ValueError, match=r"tst\.loss_weighting = 'power'.*this run has 'uniform'"):
        other.load_state_dict(ds.state_dict())
