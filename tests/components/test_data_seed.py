"""``tst.data_seed``: the training documents in a seeded order. Seed 0 is the store's own stream; any
seed serves whole documents, the same stream to every window size (so TST and its baseline read the
same tokens in the same order), and resumes exactly."""

import numpy as np
import pytest
import torch

from tests.components.test_dataloader import naive_samples
from tests.helpers.data import ArrayStore, job
from tests.helpers.trainer import parse
from tst_titan.components.checks import check_tst_section
from tst_titan.components.dataloader import TokenWindowDataset, phase_schedule
from tst_titan.datastore.store import DocumentOrderView, document_order
from tst_titan.job_config import TST, ConfigError

BOS, EOS = 0, 1


class DocStore(ArrayStore):
    """A token store stand-in with document boundaries: document d is ``[bos] + ids + [eos]``
    with ids ``1000 d + 2, 1000 d + 3, ...`` (so every token says which document it is from)."""

    def __init__(self, lengths):
        docs = [np.concatenate([[BOS], 1000 * d + 2 + np.arange(n), [EOS]]) for d, n in enumerate(lengths)]
        super().__init__(np.concatenate(docs))
        self.docs = docs

    def documents(self):
        counts = np.array([len(d) for d in self.docs])
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return np.stack([np.arange(len(counts)), starts, counts], axis=1)


def _store(n_docs=60, seed=0):
    return DocStore(np.random.default_rng(seed).integers(1, 90, size=n_docs).tolist())


def reordered_stream(store, seed):
    """The reference: the store's documents, each whole, concatenated in ``document_order``."""
    return np.concatenate([store.docs[d] for d in document_order(len(store.docs), seed)])


def _samples(ds, n):
    it = iter(ds)
    return [next(it) for _ in range(n)]


def window_tokens(x, y):
    """The stream tokens a full-mode sample was cut from: its inputs, then the last label bag
    (phase 1: [L, s] bags and the next bag; phase 2: [L] tokens and the token after)."""
    inputs, labels = x["input"], y
    if inputs.dim() == 2:
        return torch.cat([inputs.reshape(-1), labels[-1]]).tolist()
    return torch.cat([inputs, labels[-1:]]).tolist()


# -- the order ---------------------------------------------------------------------------------
def test_document_order_is_the_store_order_at_seed_0_and_a_permutation_otherwise():
    assert document_order(50, 0) == list(range(50))
    orders = [document_order(50, seed) for seed in (1, 2, 3)]
    for order in orders:
        assert sorted(order) == list(range(50)) and order != list(range(50))
    assert len({tuple(o) for o in orders}) == 3
    assert document_order(50, 2) == orders[1]  # a pure function of the seed
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="seed must be an integer >= 0"):
            document_order(5, bad)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_view_serves_the_documents_whole_in_the_seeded_order(seed):
    store = _store()
    view = DocumentOrderView(store, seed)
    reference = reordered_stream(store, seed)
    assert len(view) == len(store) == len(reference)
    np.testing.assert_array_equal(view.slice(0, len(view)), reference)
    rng = np.random.default_rng(seed)
    for _ in range(200):  # slices inside one document and across many
        a, b = sorted(rng.integers(0, len(view) + 1, size=2))
        got = view.slice(a, b)
        assert got.dtype == np.uint32
        np.testing.assert_array_equal(got, reference[a:b])
    if seed == 0:
        np.testing.assert_array_equal(view.slice(0, len(view)), store.tokens)
    else:
        assert not np.array_equal(reference, store.tokens)
    with pytest.raises(IndexError):
        view.slice(0, len(view) + 1)


def test_view_needs_document_boundaries():
    with pytest.raises(ValueError, match="no document boundaries"):
        DocumentOrderView(ArrayStore(np.arange(100)), 1)


def test_view_of_a_real_token_store(tmp_path):
    from tst_titan.datastore.build import build_store
    from tst_titan.datastore.store import TokenStore

    docs = [f"document {i}: " + "word " * (i % 17 + 1) + "\n" for i in range(80)]
    build_store(tmp_path / "s", docs, vocab_size=300, val_fraction=0.0, shard_documents=16, source="t")
    store = TokenStore(tmp_path / "s", "train")
    assert store.num_shards == 5
    pieces = {int(i): store.slice(s, s + n) for i, s, n in store.documents()}
    view = DocumentOrderView(store, 3)
    order = [int(store.documents()[k, 0]) for k in document_order(len(pieces), 3)]
    np.testing.assert_array_equal(view.slice(0, len(view)), np.concatenate([pieces[i] for i in order]))


# -- the dataset -------------------------------------------------------------------------------
def test_seed_0_is_todays_stream():
    store = _store()
    sched = phase_schedule(job(steps=10, r=0.3, s=3, local_batch=2, seq_len=6), 1)
    got = _samples(TokenWindowDataset(store, sched, 0, data_seed=0), 14)  # crosses the switch at 6
    for (x, y), (ref_x, ref_y) in zip(got, naive_samples(store.tokens, sched, 0, 14)):
        assert x["input"].reshape(-1).tolist() == np.asarray(ref_x).reshape(-1).tolist()
        assert y.reshape(-1).tolist() == np.asarray(ref_y).reshape(-1).tolist()


@pytest.mark.parametrize("world", [1, 2])
def test_a_seed_serves_the_naive_samples_of_the_reordered_stream(world):
    store = _store(n_docs=80)
    sched = phase_schedule(job(steps=10, r=0.3, s=3, local_batch=2, seq_len=6), world)
    stream = reordered_stream(store, 5)
    for rank in range(world):
        got = _samples(TokenWindowDataset(store, sched, rank, data_seed=5), 14)
        for (x, y), (ref_x, ref_y) in zip(got, naive_samples(stream, sched, rank, 14)):
            assert x["input"].reshape(-1).tolist() == np.asarray(ref_x).reshape(-1).tolist()
            assert y.reshape(-1).tolist() == np.asarray(ref_y).reshape(-1).tolist()


def test_two_seeds_give_different_first_batches():
    store = _store()
    sched = phase_schedule(job(enable=False, local_batch=4, seq_len=16), 1)
    first = {seed: torch.stack([x["input"] for x, _ in _samples(TokenWindowDataset(store, sched, 0, data_seed=seed), 4)])
             for seed in (0, 1, 2)}
    assert not torch.equal(first[0], first[1])
    assert not torch.equal(first[1], first[2])
    assert not torch.equal(first[0], first[2])


def test_tst_and_baseline_read_the_same_tokens_in_the_same_order():
    store = _store(n_docs=120)
    seed, n_tst, n_base = 4, 30, 60
    tst = phase_schedule(job(steps=10, r=0.3, s=4, local_batch=2, seq_len=8), 1)  # 6 bag samples
    base = phase_schedule(job(enable=False, steps=10, local_batch=2, seq_len=8), 1)
    read = {}
    for name, sched, n in (("tst", tst, n_tst), ("baseline", base, n_base)):
        samples = _samples(TokenWindowDataset(store, sched, 0, data_seed=seed), n)
        read[name] = [t for x, y in samples for t in window_tokens(x, y)]
    stream = reordered_stream(store, seed).tolist()
    # TST: 6 windows of s(L+1) = 36 tokens, then windows of L+1 = 9; the baseline: windows of 9.
    assert len(read["tst"]) == 6 * 36 + 24 * 9 and len(read["baseline"]) == 60 * 9
    assert read["tst"] == stream[: len(read["tst"])]
    assert read["baseline"] == stream[: len(read["baseline"])]


def test_resume_with_a_seed_is_exact():
    store = _store(n_docs=30)  # small: the epochs wrap
    sched = phase_schedule(job(steps=10, r=0.3, s=2, local_batch=2, seq_len=8), 1)
    reference = _samples(TokenWindowDataset(store, sched, 0, data_seed=3), 60)
    for cut in (0, 5, 6, 7, 40):  # before, at and after the switch (sample 6), after a wrap
        first = TokenWindowDataset(store, sched, 0, data_seed=3)
        _samples(first, cut)
        state = first.state_dict()
        assert state["data_seed"] == 3
        resumed = TokenWindowDataset(store, sched, 0, data_seed=3)
        resumed.load_state_dict(state)
        for (x, y), (rx, ry) in zip(_samples(resumed, 60 - cut), reference[cut:]):
            assert torch.equal(x["input"], rx["input"]) and torch.equal(y, ry)


def test_resume_with_another_seed_is_refused():
    store = _store()
    sched = phase_schedule(job(enable=False), 1)
    state = TokenWindowDataset(store, sched, 0, data_seed=2).state_dict()
    with pytest.raises(ValueError, match=r"tst.data_seed = 2.*this run has tst.data_seed = 0"):
        TokenWindowDataset(store, sched, 0).load_state_dict(state)
    # a checkpoint from before the key existed read the store's order: seed 0
    del state["data_seed"]
    TokenWindowDataset(store, sched, 0).load_state_dict(state)
    with pytest.raises(ValueError, match=r"tst.data_seed = 0.*this run has tst.data_seed = 2"):
        TokenWindowDataset(store, sched, 0, data_seed=2).load_state_dict(state)


# -- the key -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [-1, 1.0, True, "3"])
def test_a_bad_data_seed_is_refused_naming_the_key(bad):
    with pytest.raises(ConfigError, match=r"tst.data_seed must be an integer >= 0"):
        check_tst_section(TST(data_seed=bad))


def test_data_seed_parses_from_the_command_line():
    assert parse().tst.data_seed == 0
    assert parse("--tst.data_seed", "3").tst.data_seed == 3
    with pytest.raises(ConfigError, match="tst.data_seed"):
        parse("--tst.data_seed", "-2")
