"""The phase-carrying dataset against a naive construction from the raw token stream."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tst_titan.data import PhaseSchedule, TokenWindowDataset


class ArrayStore:
    """A token store stand-in over a numpy array (the real store is tested in test_store.py)."""

    def __init__(self, tokens, path="<array>"):
        self.tokens = np.asarray(tokens, dtype=np.uint32)
        self.path = path

    def __len__(self):
        return len(self.tokens)

    def slice(self, start, stop):
        assert 0 <= start <= stop <= len(self.tokens)
        return self.tokens[start:stop]


def job(steps=10, r=0.3, s=4, enable=True, local_batch=2, global_batch=-1, seq_len=8, mode="full"):
    return SimpleNamespace(
        tst=SimpleNamespace(enable=enable, bag_size=s, superposition_fraction=r, mode=mode),
        training=SimpleNamespace(
            steps=steps, local_batch_size=local_batch, global_batch_size=global_batch, seq_len=seq_len
        ),
    )


def naive_samples(stream, schedule, rank, n):
    """Sample n of rank `rank`, written out the slow obvious way, for every tst.mode: the window
    holds L positions and what their labels need; phase 1 of
    full:        input bag j = tokens j*s .. j*s+s-1, labels = the next bag;
    input_only:  input bag j as in full, label = token (j+1)*s (the one right after the bag);
    output_only: input token t, labels = tokens t+1 .. t+s."""
    out, pos = [], 0
    mode = schedule.mode
    for i in range(n):
        bag = i < schedule.switch_sample
        s = schedule.bag_size if bag else 1
        L = schedule.seq_len
        window = {"full": s * (L + 1), "input_only": s * L + 1, "output_only": L + s}[mode if bag else "full"]
        chunk = stream[pos + rank * window : pos + (rank + 1) * window]
        pos += window * schedule.dp_world_size
        if bag and mode == "full":
            inputs = [[chunk[j * s + k] for k in range(s)] for j in range(L)]
            labels = [[chunk[(j + 1) * s + k] for k in range(s)] for j in range(L)]
        elif bag and mode == "input_only":
            inputs = [[chunk[j * s + k] for k in range(s)] for j in range(L)]
            labels = [chunk[(j + 1) * s] for j in range(L)]
        elif bag and mode == "output_only":
            inputs = [chunk[t] for t in range(L)]
            labels = [[chunk[t + k] for k in range(1, s + 1)] for t in range(L)]
        else:
            inputs, labels = list(chunk[:L]), list(chunk[1 : L + 1])
        out.append((inputs, labels))
    return out


def test_switch_step_is_round_r_times_steps():
    for steps, r, expected in [(10, 0.3, 3), (200, 0.3, 60), (7, 0.5, 4), (100, 0.0, 0), (3, 0.25, 1)]:
        sched = PhaseSchedule.from_job_config(job(steps=steps, r=r), dp_world_size=1)
        assert sched.switch_step == round(r * steps) == expected
        assert [sched.phase_of_step(t) for t in range(1, steps + 1)] == [1] * expected + [2] * (steps - expected)


def test_switch_sample_counts_gradient_accumulation_and_ranks():
    # global batch 12 = local 2 x 2 ranks x 3 accumulation steps
    sched = PhaseSchedule.from_job_config(job(steps=10, r=0.3, local_batch=2, global_batch=12), 2)
    assert sched.samples_per_step == 6
    assert sched.switch_sample == 3 * 6


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
    sched = PhaseSchedule.from_job_config(job(steps=10, r=0.3, s=s, local_batch=2, mode=mode), world)
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
        sched = PhaseSchedule.from_job_config(job(steps=10, r=0.5, s=s, seq_len=L, mode=mode), 1)
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


@pytest.mark.parametrize("mode", ["full", "input_only", "output_only"])
def test_position_after_matches_serving_across_epochs_per_mode(mode):
    stream = np.arange(700)
    sched = PhaseSchedule.from_job_config(job(steps=20, r=0.5, s=4, seq_len=8, mode=mode), 2)
    ds = TokenWindowDataset(ArrayStore(stream), sched, 0)
    it = iter(ds)
    for n in range(1, 40):  # 20 phase-1 samples, then plain ones; the 700 tokens wrap
        next(it)
        assert (ds.cursor, ds.epoch) == sched.position_after(n, len(stream)), n
    assert ds.epoch >= 1


@pytest.mark.parametrize("mode, per_position", [("full", 4), ("input_only", 4), ("output_only", 1)])
def test_raw_tokens_seen_counts_input_tokens_per_mode(mode, per_position):
    sched = PhaseSchedule.from_job_config(job(steps=10, r=0.3, s=4, local_batch=2, seq_len=8, mode=mode), 1)
    per_step = 2 * 8
    assert sched.raw_tokens_seen(3) == 3 * per_position * per_step
    assert sched.raw_tokens_seen(5) == (3 * per_position + 2) * per_step
    assert (sched.input_bag_size(1), sched.target_bag_size(1)) == {
        "full": (4, 4), "input_only": (4, 1), "output_only": (1, 4)}[mode]
    assert sched.input_bag_size(2) == sched.target_bag_size(2) == 1


def test_mode_is_ignored_without_tst():
    sched = PhaseSchedule.from_job_config(job(enable=False, mode="output_only"), 1)
    assert sched.mode == "full" and sched.switch_step == 0


def test_resume_with_another_mode_is_refused():
    from tst_titan.data import tst_settings

    stream = np.arange(3000)

    def dataset(mode):
        cfg = job(s=2, mode=mode)
        cfg.tst.loss_weighting = "uniform"
        sched = PhaseSchedule.from_job_config(cfg, 1)
        return TokenWindowDataset(ArrayStore(stream), sched, 0, settings=tst_settings(cfg, sched))

    with pytest.raises(ValueError, match="tst.mode = 'input_only'.*this run has 'full'"):
        dataset("full").load_state_dict(dataset("input_only").state_dict())


def test_phase_shapes_and_no_batch_mixes_phases():
    from torchtitan.components.dataloader import ParallelAwareDataloader

    stream = np.arange(20000) % 997
    sched = PhaseSchedule.from_job_config(job(steps=10, r=0.3, s=4, local_batch=2, global_batch=4), 1)
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


def test_bag_labels_are_the_next_bag():
    stream = np.arange(1000)
    sched = PhaseSchedule.from_job_config(job(steps=10, r=0.5, s=3, seq_len=4), 1)
    x, y = next(iter(TokenWindowDataset(ArrayStore(stream), sched, 0)))
    assert x["input"].tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert y.tolist() == [[3, 4, 5], [6, 7, 8], [9, 10, 11], [12, 13, 14]]


def test_state_dict_resume_is_exact():
    stream = np.random.default_rng(1).integers(0, 50, size=3000)
    sched = PhaseSchedule.from_job_config(job(steps=10, r=0.3, s=2), 1)
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
    ds = TokenWindowDataset(ArrayStore(stream), PhaseSchedule.from_job_config(job(s=2), 1), 0)
    other = TokenWindowDataset(ArrayStore(stream), PhaseSchedule.from_job_config(job(s=4), 1), 0)
    with pytest.raises(ValueError, match="tst.bag_size"):
        other.load_state_dict(ds.state_dict())


def test_exhaustion_starts_new_epoch_and_counts_it():
    stream = np.arange(100)
    sched = PhaseSchedule.from_job_config(job(enable=False, seq_len=9), 1)  # 10 tokens a sample
    ds = TokenWindowDataset(ArrayStore(stream), sched, 0)
    it = iter(ds)
    first = [next(it)[0]["input"][0].item() for _ in range(12)]
    assert first == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 0, 10]
    assert ds.epoch == 1


def test_corpus_too_small_for_one_sample_is_a_clear_error():
    sched = PhaseSchedule.from_job_config(job(s=4, seq_len=8), 2)
    with pytest.raises(ValueError, match="fewer than one sample"):
        TokenWindowDataset(ArrayStore(np.arange(40)), sched, 0)


def test_raw_tokens_seen_formula():
    sched = PhaseSchedule.from_job_config(job(steps=10, r=0.3, s=4, local_batch=2, seq_len=8), 1)
    per_step = 2 * 8
    assert sched.raw_tokens_seen(2) == 2 * 4 * per_step
    assert sched.raw_tokens_seen(5) == (3 * 4 + 2) * per_step
