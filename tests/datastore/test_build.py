"""Building a token store (deterministic, resumable, refusing other inputs) and on first use."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer
from torchtitan.components.tokenizer import HuggingFaceTokenizer

from tests.datastore.conftest import SHARD_DOCS, VOCAB
from tst_titan.datastore import build
from tst_titan.datastore.build import build_store, ensure_store
from tst_titan.datastore.sources import embedded_source_files, split_of
from tst_titan.datastore.store import StoreMismatchError, TokenStore
from tst_titan.datastore.tokenizer import save_tokenizer, tokenizer_sha256, train_tokenizer


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
    assert manifest["tokenizer_sha256"] == tokenizer_sha256(out)
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
            i for i, d in enumerate(docs) if d and split_of(d, 0.1) == split
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
    train_only = [d for d in docs if d and split_of(d, 0.1) == "train"]
    retrained = train_tokenizer(train_only, VOCAB)
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
    save_tokenizer(train_tokenizer(docs[:20], 300), other_tok)
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
# built on first use


def test_ensure_store_builds_the_embedded_corpus_once_under_a_lock(tmp_path, monkeypatch, docs):
    # a small slice of the embedded corpus keeps this fast; the logic is the same
    monkeypatch.setattr(
        build, "embedded_documents",
        lambda include_site_packages=False, stats=None: iter(docs[:60]),
    )
    calls = []
    real_build = build.build_store

    def counting_build(*args, **kwargs):
        calls.append(1)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(build, "build_store", counting_build)
    out = tmp_path / "data" / "embedded_v300"
    results, errors = [], []

    def worker():
        try:
            results.append(ensure_store(out, vocab_size=300))
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
    assert ensure_store(out, vocab_size=300) == results[0] and len(calls) == 1
    with pytest.raises(ValueError) as e:
        ensure_store(out, vocab_size=512)
    assert "training.dataset_path" in str(e.value) and "300" in str(e.value) and "512" in str(e.value)
    with pytest.raises(ValueError, match="pinned-packages"):
        ensure_store(out, vocab_size=300, include_site_packages=True)


def test_ensure_store_of_a_folder(tmp_path):
    folder = tmp_path / "docs"
    for f in embedded_source_files()[:40]:
        (folder / f.name).parent.mkdir(parents=True, exist_ok=True)
        (folder / (f.stem + ".py")).write_bytes(f.read_bytes())
    out = folder / ".tst_store"  # inside the folder, hidden: not a document
    first = ensure_store(out, vocab_size=300, folder=folder)
    assert first["source"].startswith("folder:")
    assert ensure_store(out, vocab_size=300, folder=folder) == first
    (folder / "new.txt").write_text("a new document\n")
    with pytest.raises(ValueError, match="changed"):
        ensure_store(out, vocab_size=300, folder=folder)
    with pytest.raises(FileNotFoundError):
        ensure_store(tmp_path / "s2", vocab_size=300, folder=tmp_path / "nope")
