"""The token store: building (deterministic, resumable), serving slices, the CLI."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from tst_titan import corpus, prepare, store
from tst_titan.store import StoreMismatchError, TokenStore, build_store

REPO = Path(__file__).resolve().parents[1]
VOCAB = 512
SHARD_DOCS = 64


@pytest.fixture(scope="module")
def docs():
    """~500 real stdlib chunks (about 3 MB, 1.4 M tokens at vocab 512) plus two empty ones."""
    texts = list(itertools.islice(corpus.embedded_documents(), 500))
    return texts[:100] + [""] + texts[100:300] + [""] + texts[300:]


@pytest.fixture(scope="module")
def built(tmp_path_factory, docs):
    out = tmp_path_factory.mktemp("stores") / "main"
    manifest = build_store(
        out, docs, vocab_size=VOCAB, val_fraction=0.1, shard_documents=SHARD_DOCS, source="test"
    )
    return out, manifest


def _files(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _naive_stream(tok: Tokenizer, texts: list[str], bos: int, eos: int) -> np.ndarray:
    ids: list[int] = []
    for text in texts:
        ids += [bos] + tok.encode(text).ids + [eos]
    return np.array(ids, dtype=np.uint32)


# ---------------------------------------------------------------------------------------------
# building


def test_layout_and_manifest(built, docs):
    out, manifest = built
    assert (out / "manifest.json").is_file() and not (out / "progress.json").exists()
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["format"] == "tst_titan.token_store" and manifest["format_version"] == 1
    assert manifest["complete"] is True
    assert manifest["dtype"] == "uint32" and manifest["byteorder"] == "little"
    assert manifest["vocab_size"] <= VOCAB and manifest["requested_vocab_size"] == VOCAB
    assert (manifest["bos_id"], manifest["eos_id"]) == (0, 1)
    assert manifest["tokenizer_sha256"] == corpus.tokenizer_sha256(out)
    assert manifest["source"] == "test" and manifest["input"]["documents"] == len(docs)
    assert (out / "tokenizer_config.json").is_file()

    total_docs = total_skipped = 0
    for split in ("train", "val"):
        info = manifest["splits"][split]
        assert info["shards"], split
        assert info["tokens"] == sum(s["tokens"] for s in info["shards"])
        assert info["documents"] == sum(s["documents"] for s in info["shards"])
        for k, shard in enumerate(info["shards"]):
            assert shard["file"] == f"{split}/shard_{k:05d}.bin"
            assert (out / shard["file"]).stat().st_size == 4 * shard["tokens"]
            assert shard["documents"] <= SHARD_DOCS
        total_docs += info["documents"]
        total_skipped += info["skipped_documents"]
    assert len(manifest["splits"]["train"]["shards"]) >= 6  # several shards to cross
    assert total_skipped == 2 and total_docs + total_skipped == len(docs)


def test_token_stream_is_bos_encode_eos_of_each_document_in_store_order(built, docs):
    out, manifest = built
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))  # independent of the store code
    for split in ("train", "val"):
        ts = TokenStore(out, split)
        index = ts.documents()
        sources = index[:, 0].tolist()
        # every non-empty document of this split, each once, shuffled (not in input order)
        expected_sources = [
            i for i, d in enumerate(docs) if d and corpus.split_of(d, 0.1) == split
        ]
        assert sorted(sources) == expected_sources
        if len(sources) > 10:
            assert sources != expected_sources
        # the raw shards, read without TokenStore, equal the naive reconstruction
        raw = np.concatenate(
            [np.fromfile(out / s["file"], dtype="<u4") for s in manifest["splits"][split]["shards"]]
        )
        naive = _naive_stream(tok, [docs[i] for i in sources], 0, 1)
        np.testing.assert_array_equal(raw, naive)
        np.testing.assert_array_equal(ts.slice(0, len(ts)), naive)
        # the index's offsets point at each document's bos ... eos
        starts, counts = index[:, 1], index[:, 2]
        assert starts[0] == 0 and starts[-1] + counts[-1] == len(ts)
        assert (naive[starts] == 0).all() and (naive[starts + counts - 1] == 1).all()


def test_torchtitan_tokenizer_feeds_the_same_tokens(built, docs):
    from torchtitan.components.tokenizer import HuggingFaceTokenizer

    out, _ = built
    tt = HuggingFaceTokenizer(str(out))  # the store doubles as hf_assets_path
    ts = TokenStore(out, "val")
    assert (tt.bos_id, tt.eos_id) == (ts.bos_id, ts.eos_id)
    for src, start, count in ts.documents()[:5].tolist():
        assert tt.encode(docs[src], add_bos=True, add_eos=True) == ts.slice(start, start + count).tolist()


def test_splits_are_disjoint_and_the_tokenizer_saw_only_train(built, docs):
    out, manifest = built
    train_src = TokenStore(out, "train").documents()[:, 0]
    val_src = TokenStore(out, "val").documents()[:, 0]
    train_texts = {docs[i] for i in train_src}
    val_texts = {docs[i] for i in val_src}
    assert val_texts and not (train_texts & val_texts)
    # retraining on the training documents alone (input order) gives the very same tokenizer
    train_only = [d for d in docs if d and corpus.split_of(d, 0.1) == "train"]
    retrained = corpus.train_tokenizer(train_only, VOCAB)
    assert retrained.to_str() == (out / "tokenizer.json").read_text(encoding="utf-8")


def test_two_builds_are_byte_identical_and_a_rebuild_is_a_no_op(tmp_path, built, docs):
    out, manifest = built
    again = build_store(
        tmp_path / "again", docs, vocab_size=VOCAB, val_fraction=0.1,
        shard_documents=SHARD_DOCS, source="test",
    )
    assert again == manifest
    assert _files(tmp_path / "again") == _files(out)
    # same inputs into a complete store: returned as is, nothing rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert build_store(
        out, docs, vocab_size=VOCAB, val_fraction=0.1, shard_documents=SHARD_DOCS, source="test"
    ) == manifest
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == mtimes


class Interrupt(Exception):
    pass


def test_an_interrupted_build_resumes_where_it_stopped(tmp_path, built, docs):
    ref, manifest = built
    out = tmp_path / "resumed"
    kwargs = dict(vocab_size=VOCAB, val_fraction=0.1, shard_documents=SHARD_DOCS, source="test")

    seen = []

    def stop_after_three(info):
        seen.append(info)
        if len(seen) == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        build_store(out, docs, on_shard=stop_after_three, **kwargs)
    assert (out / "progress.json").is_file() and not (out / "manifest.json").exists()
    assert [i["reused"] for i in seen] == [False, False, False]
    with pytest.raises(FileNotFoundError, match="interrupted build"):
        TokenStore(out)
    # damage one finished shard (as a crash outside the atomic rename could not, but a disk could)
    bad = out / "train" / "shard_00001.bin"
    bad.write_bytes(bad.read_bytes()[:-4])
    (out / "train" / "shard_00002.bin.tmp").write_bytes(b"junk")

    events = []
    resumed = build_store(out, docs, on_shard=events.append, **kwargs)
    # shards 0..2 were finished: 0 and 2 kept, the damaged 1 rebuilt, the rest built
    assert [e["reused"] for e in events[:4]] == [True, False, True, False]
    assert sum(e["reused"] for e in events) == 2
    assert resumed == manifest
    assert _files(out) == _files(ref)


def test_other_inputs_are_refused_not_mixed(tmp_path, built, docs):
    out, _ = built
    kwargs = dict(val_fraction=0.1, shard_documents=SHARD_DOCS, source="test")
    with pytest.raises(StoreMismatchError, match="documents' content"):
        build_store(out, docs[:-1] + ["changed"], vocab_size=VOCAB, **kwargs)
    with pytest.raises(StoreMismatchError, match="requested_vocab_size"):
        build_store(out, docs, vocab_size=VOCAB + 64, **kwargs)
    # a store made with another tokenizer
    other_tok = tmp_path / "other_tok"
    corpus.save_tokenizer(corpus.train_tokenizer(docs[:20], 300), other_tok)
    with pytest.raises(StoreMismatchError, match="tokenizer"):
        build_store(out, docs, tokenizer_dir=other_tok, **kwargs)
    # a partial build of other inputs
    partial = tmp_path / "partial"

    def interrupt(info):
        raise Interrupt

    with pytest.raises(Interrupt):
        build_store(partial, docs[:80], vocab_size=300, on_shard=interrupt, **kwargs)
    with pytest.raises(StoreMismatchError, match="partial build"):
        build_store(partial, docs[:90], vocab_size=300, **kwargs)
    # a directory with unrelated files
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "notes.txt").write_text("mine")
    with pytest.raises(StoreMismatchError, match="not empty"):
        build_store(unrelated, docs[:10], vocab_size=300, **kwargs)
    assert (unrelated / "notes.txt").read_text() == "mine"


def test_a_given_tokenizer_is_used_as_is(tmp_path, built, docs):
    out, manifest = built
    # the first store's tokenizer, given: the same inputs give the same token streams
    given = build_store(
        tmp_path / "given", docs, tokenizer_dir=out, val_fraction=0.1,
        shard_documents=SHARD_DOCS, source="test",
    )
    assert given["tokenizer_sha256"] == manifest["tokenizer_sha256"]
    assert given["tokenizer_trained"] is False and given["requested_vocab_size"] is None
    for split in ("train", "val"):
        a, b = TokenStore(out, split), TokenStore(tmp_path / "given", split)
        np.testing.assert_array_equal(a.slice(0, len(a)), b.slice(0, len(b)))
    with pytest.raises(ValueError, match="more than vocab_size"):
        build_store(tmp_path / "small", docs, tokenizer_dir=out, vocab_size=300)
    with pytest.raises(ValueError, match="vocab_size"):
        build_store(tmp_path / "neither", docs)


def test_processes_and_threads_tokenize_identically(tmp_path, docs):
    small = [d for d in docs[:120] if d]
    kwargs = dict(vocab_size=300, val_fraction=0.1, shard_documents=25, source="t")
    build_store(tmp_path / "threads", small, **kwargs)
    build_store(tmp_path / "serial", small, num_workers=1, **kwargs)
    build_store(tmp_path / "procs", small, num_workers=2, **kwargs)
    assert _files(tmp_path / "threads") == _files(tmp_path / "serial") == _files(tmp_path / "procs")


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
    assert "missing" in str(e.value) and "python -m tst_titan.prepare" in str(e.value)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        TokenStore(tmp_path / "empty_dir")
    build_store(tmp_path / "no_val", docs[:30], vocab_size=300, val_fraction=0.0)
    assert len(TokenStore(tmp_path / "no_val", "train")) > 0
    with pytest.raises(ValueError, match="no 'val' tokens"):
        TokenStore(tmp_path / "no_val", "val")
    with pytest.raises(ValueError, match="split"):
        TokenStore(tmp_path / "no_val", "test")


# ---------------------------------------------------------------------------------------------
# built on first use


def test_ensure_embedded_store_builds_once_under_a_lock(tmp_path, monkeypatch, docs):
    # a small slice of the embedded corpus keeps this fast; the logic is the same
    monkeypatch.setattr(
        corpus, "embedded_documents",
        lambda include_site_packages=False, stats=None: iter(docs[:60]),
    )
    calls = []
    real_build = store.build_store

    def counting_build(*args, **kwargs):
        calls.append(1)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(store, "build_store", counting_build)
    out = tmp_path / "data" / "embedded_v300"
    results, errors = [], []

    def worker():
        try:
            results.append(store.ensure_embedded_store(out, vocab_size=300))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(calls) == 1
    assert len(results) == 3 and all(r == results[0] for r in results)
    assert results[0]["source"] == "embedded:stdlib"
    assert results[0]["source_info"]["python"] == sys.version.split()[0]
    # complete and matching: returned at once
    assert store.ensure_embedded_store(out, vocab_size=300) == results[0] and len(calls) == 1
    with pytest.raises(ValueError) as e:
        store.ensure_embedded_store(out, vocab_size=512)
    assert "training.dataset_path" in str(e.value) and "300" in str(e.value) and "512" in str(e.value)
    with pytest.raises(ValueError, match="site-packages"):
        store.ensure_embedded_store(out, vocab_size=300, include_site_packages=True)


def test_ensure_folder_store(tmp_path):
    folder = tmp_path / "docs"
    for f in corpus.embedded_source_files()[:40]:
        (folder / f.name).parent.mkdir(parents=True, exist_ok=True)
        (folder / (f.stem + ".py")).write_bytes(f.read_bytes())
    out = folder / ".tst_store"  # inside the folder, hidden: not a document
    first = store.ensure_folder_store(out, folder, vocab_size=300)
    assert first["source"].startswith("folder:")
    assert store.ensure_folder_store(out, folder, vocab_size=300) == first
    (folder / "new.txt").write_text("a new document\n")
    with pytest.raises(ValueError, match="changed"):
        store.ensure_folder_store(out, folder, vocab_size=300)
    with pytest.raises(FileNotFoundError):
        store.ensure_folder_store(tmp_path / "s2", tmp_path / "nope", vocab_size=300)


# ---------------------------------------------------------------------------------------------
# the command


def test_prepare_command_end_to_end(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for f in corpus.embedded_source_files()[:30]:
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "extra.jsonl").write_text(
        json.dumps({"text": "a json document"}) + "\n" + json.dumps({"x": 1}) + "\n"
    )
    out = tmp_path / "store"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "tst_titan.prepare", "--out", str(out), "--folder", str(folder),
         "--vocab-size", "300", "--val-fraction", "0.2", "--shard-documents", "8"],
        capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    manifest = json.loads((out / "manifest.json").read_text())
    for split in ("train", "val"):
        assert summary["tokens"][split] == manifest["splits"][split]["tokens"] > 0
        assert summary["documents"][split] == manifest["splits"][split]["documents"]
    assert summary["source_stats"]["skipped_records"] == 1
    assert summary["tokens_per_second"] > 0 and summary["vocab_size"] <= 300
    assert "shard_00000" in proc.stderr  # per-shard progress lines
    assert len(TokenStore(out, "train")) == summary["tokens"]["train"]


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--folder", "x", "--site-packages"], "--site-packages"),
        (["--embedded", "--folder", "x"], "--folder"),
        (["--vocab-size", "100", "--embedded"], "--vocab-size"),
        (["--embedded", "--max-documents", "5"], "--max-documents"),
        (["--embedded", "--val-fraction", "1.5"], "--val-fraction"),
        (["--embedded", "--workers", "0"], "--workers"),
        ([], "--embedded"),
    ],
)
def test_prepare_argument_errors_name_the_option(tmp_path, capsys, argv, option):
    with pytest.raises(SystemExit) as e:
        prepare.main(["--out", str(tmp_path / "o")] + argv)
    assert e.value.code == 2
    assert option in capsys.readouterr().err


def test_prepare_reports_a_missing_folder(tmp_path, capsys):
    code = prepare.main(["--out", str(tmp_path / "o"), "--folder", str(tmp_path / "nope")])
    assert code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nope") in err and ".jsonl" in err
    assert not (tmp_path / "o").exists()
