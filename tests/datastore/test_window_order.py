"""Shuffled windows against a plain walk through each epoch's lists of windows: the closed-form
position of every sample equals the walk's, no text is read twice in an epoch (not even across the
switch), every epoch after phase 1 reads every window once, and seeds change the order."""

import numpy as np
import pytest

from tst_titan.datastore.window_order import ShuffledWindows, permutation


def walk(n_tokens, w1, w2, switch_sample, world, seed, samples):
    """Window starts ``[rank][i]`` the slow obvious way: per epoch, a list of the windows still to
    read, taken one round (a window per rank) at a time; at the switch, the list becomes the
    unread phase-1 windows cut into phase-2 windows."""
    starts = [[] for _ in range(world)]
    epoch, index = 0, 0
    todo = None  # the current epoch's windows, in reading order
    phase = 1 if switch_sample else 2
    while index < samples:
        if phase == 1 and index == switch_sample:
            phase = 2
            if todo is not None and len(todo) < (n_tokens // w1):  # phase 1 read part of this epoch
                unread = todo
                pieces = [b + p * w2 for b in unread for p in range(w1 // w2)]
                todo = [pieces[k] for k in permutation(len(pieces), seed, epoch, 3)]
            else:  # phase 1 ended with its epoch (or never ran): a fresh epoch of phase-2 windows
                if todo is not None:
                    epoch += 1
                todo = None
        if todo is None:
            w, kind = (w1, 1) if phase == 1 else (w2, 2)
            todo = [int(k) * w for k in permutation(n_tokens // w, seed, epoch, kind)]
        if len(todo) < world:
            epoch += 1
            todo = None
            continue
        for rank in range(world):
            starts[rank].append((int(todo[rank]), epoch))
        todo = todo[world:]
        index += 1
        if phase == 1 and not todo:
            pass  # the next round opens a new epoch (len 0 < world)
    return starts


CASES = [  # n_tokens, w1, w2, switch_sample, world
    (1000, 36, 9, 6, 1),  # full mode s = 4: phase 1 ends mid-epoch
    (1000, 36, 9, 40, 1),  # phase 1 wraps its epoch (27 windows) and ends in the second
    (1000, 36, 9, 27, 1),  # phase 1 ends exactly with its epoch
    (1000, 36, 9, 10, 2),
    (1003, 25, 9, 7, 3),  # input_only-like: the phase-1 window is no multiple of L + 1
    (500, 9, 9, 0, 2),  # the baseline: no phase 1
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("seed", [0, 5])
def test_every_sample_starts_where_the_walk_says(case, seed):
    n_tokens, w1, w2, switch, world = case
    order = ShuffledWindows(n_tokens, w1, w2, switch, world, seed)
    samples = 3 * n_tokens // (w2 * world)  # into the third epoch of phase 2
    reference = walk(n_tokens, w1, w2, switch, world, seed, samples)
    for rank in range(world):
        assert [order.start(i, rank) for i in range(samples)] == reference[rank]
    # out of order too (a resume asks for any index first)
    fresh = ShuffledWindows(n_tokens, w1, w2, switch, world, seed)
    for i in np.random.default_rng(seed).permutation(samples)[:50]:
        assert fresh.start(int(i), world - 1) == reference[world - 1][int(i)]


def _read(order, samples, switch, w1, w2, world):
    """(epoch, token) for every token every rank reads."""
    out = []
    for i in range(samples):
        for rank in range(world):
            start, epoch = order.start(i, rank)
            width = w1 if i < switch else w2
            out.extend((epoch, t) for t in range(start, start + width))
    return out


@pytest.mark.parametrize("case", CASES)
def test_no_token_is_read_twice_in_an_epoch_across_ranks_and_the_switch(case):
    n_tokens, w1, w2, switch, world = case
    order = ShuffledWindows(n_tokens, w1, w2, switch, world, seed=1)
    read = _read(order, 3 * n_tokens // (w2 * world), switch, w1, w2, world)
    assert len(read) == len(set(read))
    assert all(0 <= t < n_tokens for _, t in read)


def test_an_epoch_after_phase_1_reads_every_window_once():
    n_tokens, w1, w2, switch, world = 1000, 36, 9, 6, 2
    order = ShuffledWindows(n_tokens, w1, w2, switch, world, seed=2)
    by_epoch = {}
    for i in range(switch, switch + 400):
        for rank in range(world):
            start, epoch = order.start(i, rank)
            by_epoch.setdefault(epoch, []).append(start)
    # epoch 0 holds phase 1's first 12 windows; epochs 1 and 2 are whole phase-2 epochs: 111
    # windows of 9 tokens, 55 rounds of 2, so every window but the permutation's last one, once
    windows = set(range(0, 111 * w2, w2))
    for epoch in (1, 2):
        assert len(by_epoch[epoch]) == len(set(by_epoch[epoch])) == 110
        assert set(by_epoch[epoch]) <= windows


def test_the_order_is_shuffled_seeded_and_shared_by_runs_after_phase_1():
    n_tokens = 9000
    base = {seed: [ShuffledWindows(n_tokens, 9, 9, 0, 1, seed).start(i, 0)[0] for i in range(100)]
            for seed in (0, 1, 2)}
    assert len({tuple(v) for v in base.values()}) == 3
    assert base[1] == [ShuffledWindows(n_tokens, 9, 9, 0, 1, 1).start(i, 0)[0] for i in range(100)]
    # not the stream: consecutive samples are far apart (mean gap ~ a third of the split)
    gaps = np.abs(np.diff(base[1]))
    assert np.median(gaps) > n_tokens / 10
    # a TST run (s = 4) and its baseline read the same windows in every whole epoch after phase 1
    tst = ShuffledWindows(n_tokens, 36, 9, 250, 1, 1)  # phase 1 = the whole 250-window epoch 0
    per_epoch = n_tokens // 9
    assert [tst.start(250 + i, 0) for i in range(per_epoch)] == \
        [(s, 1) for s in (ShuffledWindows(n_tokens, 9, 9, 0, 1, 1).start(per_epoch + i, 0)[0]
                          for i in range(per_epoch))]


def test_a_split_too_small_for_one_round_is_refused():
    with pytest.raises(ValueError, match="2 windows of 36 tokens do not fit 50 tokens"):
        ShuffledWindows(50, 36, 9, 4, 2, 0)
    with pytest.raises(ValueError, match="3 windows of 9 tokens do not fit 20 tokens"):
        ShuffledWindows(20, 9, 9, 0, 3, 0)
