"""Serving a token store: slices across shards, properties, pickling, clear errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from tst_titan.datastore.build import build_store
from tst_titan.datastore.store import TokenStore


# ---------------------------------------------------------------------------------------------
# serving


def test_slices_cross_shard_boundaries_like_the_naive_concatenation(built):
    out, manifest = built
    ts = TokenStore(out, "train")
    naive = np.concatenate(
        [np.fromfile(out / s["file"], dtype="<u4") for s in manifest["splits"]["train"]["shards"]]
    )
    n = len(ts)
    assert n == len(naive) == manifest["splits"]["train"]["tokens"]
    offsets = ts.shard_offsets
    assert offsets[0] == 0 and offsets[-1] == n and len(offsets) == ts.num_shards + 1
    cases = [(0, 0), (0, 1), (n - 1, n), (0, n), (n, n)]
    for b in offsets[1:-1]:
        cases += [(b - 1, b), (b, b + 1), (b - 1, b + 1), (b - 5, b + 7), (b, b)]
    cases.append((int(offsets[1]) - 3, int(offsets[4]) + 3))  # spans several shards
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = sorted(rng.integers(0, n + 1, size=2).tolist())
        cases.append((a, b))
    for a, b in cases:
        got = ts.slice(a, b)
        assert type(got) is np.ndarray and got.dtype == np.uint32
        np.testing.assert_array_equal(got, naive[a:b])
    np.testing.assert_array_equal(ts[10:2000], naive[10:2000])
    np.testing.assert_array_equal(ts[-50:], naive[-50:])
    assert ts[5] == int(naive[5]) and ts[-1] == int(naive[-1])
    got = ts.slice(0, 100)
    got[0] = 7  # a copy, writable, not the store
    assert ts.slice(0, 1)[0] == naive[0]
    for a, b in [(-1, 5), (5, 4), (0, n + 1)]:
        with pytest.raises(IndexError):
            ts.slice(a, b)


def test_a_million_token_slice_comes_back_correct(built):
    out, manifest = built
    ts = TokenStore(out, "train")
    assert len(ts) > 1_100_000
    naive = np.concatenate(
        [np.fromfile(out / s["file"], dtype="<u4") for s in manifest["splits"]["train"]["shards"]]
    )
    start = 54_321
    got = ts.slice(start, start + 1_000_000)
    assert got.shape == (1_000_000,)
    np.testing.assert_array_equal(got, naive[start : start + 1_000_000])
    assert int(got.max()) < ts.vocab_size


def test_store_properties_and_pickling(built):
    out, manifest = built
    ts = TokenStore(out, "val")
    assert ts.vocab_size == manifest["vocab_size"] and ts.manifest == manifest
    assert (ts.bos_id, ts.eos_id) == (0, 1)
    assert ts.path == out and ts.num_documents == manifest["splits"]["val"]["documents"]
    assert "val" in repr(ts)
    ts.slice(0, 10)  # opens the memory maps
    clone = pickle.loads(pickle.dumps(ts))
    np.testing.assert_array_equal(clone.slice(0, len(clone)), ts.slice(0, len(ts)))


def test_store_errors_are_clear(tmp_path, docs):
    with pytest.raises(FileNotFoundError) as e:
        TokenStore(tmp_path / "missing")
    assert "missing" in str(e.value) and "python -m tst_titan.tools.prepare" in str(e.value)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        TokenStore(tmp_path / "empty_dir")
    build_store(tmp_path / "no_val", docs[:30], vocab_size=300, val_fraction=0.0)
    assert len(TokenStore(tmp_path / "no_val", "train")) > 0
    with pytest.raises(ValueError, match="no 'val' tokens"):
        TokenStore(tmp_path / "no_val", "val")
    with pytest.raises(ValueError, match="split"):
        TokenStore(tmp_path / "no_val", "test")
