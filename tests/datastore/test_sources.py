"""The embedded corpus, local folders, streamed datasets and the split."""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import sysconfig
from pathlib import Path

import pytest

from tst_titan.datastore.sources import (
    CORPUS_DISTRIBUTIONS,
    pinned_distribution_files,
    HF_SHORT_NAMES,
    MAX_CHARS,
    CorpusStats,
    chunk_text,
    embedded_documents,
    embedded_source_files,
    folder_documents,
    hf_documents,
    is_test_path,
    split_documents,
    split_of,
)

STDLIB = Path(sysconfig.get_paths()["stdlib"])


# ---------------------------------------------------------------------------------------------
# chunking


@pytest.mark.parametrize("max_chars", [1, 7, 50, 8000])
def test_chunk_text_joins_exactly_and_respects_the_bound(max_chars):
    texts = [
        "",
        "short",
        "a\nb\nc\n" * 40,
        "x" * 123 + "\n" + "y" * 20 + "\n\n\nz",
        "no newline at all " * 30,
        "crlf\r\nlines\r\n" * 30,
        (STDLIB / "os.py").read_text(encoding="utf-8"),
    ]
    for text in texts:
        chunks = chunk_text(text, max_chars)
        assert "".join(chunks) == text
        assert all(0 < len(c) <= max_chars for c in chunks)
        if not text:
            assert chunks == []


def test_chunk_text_cuts_at_line_boundaries():
    text = "".join(f"line {i:04d} {'.' * (i % 50)}\n" for i in range(2000))
    chunks = chunk_text(text, 1000)
    assert len(chunks) > 10
    # every chunk but possibly the last ends with a newline: no line was cut
    assert all(c.endswith("\n") for c in chunks)
    # greedy: a chunk plus the next line would not have fit
    for a, b in zip(chunks, chunks[1:]):
        first_line_of_b = b.split("\n", 1)[0] + "\n"
        assert len(a) + len(first_line_of_b) > 1000


# ---------------------------------------------------------------------------------------------
# embedded corpus


def test_is_test_path():
    for path in [
        "test/test_os.py",
        "test/support/__init__.py",
        "idlelib/idle_test/test_config.py",
        "lib2to3/tests/data/bom.py",
        "unittest/test/test_case.py",
        "tkinter/test/support.py",
        "site-packages/pkg/mod.py",
        "pkg/tests/helpers.py",
        "pkg/test_something.py",
        "pkg/thing_test.py",
        "conftest.py",
    ]:
        assert is_test_path(path), path
    for path in ["os.py", "json/decoder.py", "unittest/case.py", "doctest.py", "numpy/testing/x.py"]:
        assert not is_test_path(path), path


def test_embedded_source_files_are_stdlib_sources_without_tests():
    files = embedded_source_files()
    assert len(files) > 300
    rel = [f.relative_to(STDLIB).as_posix() for f in files]
    # real library modules are there
    for expected in ["os.py", "json/decoder.py", "collections/__init__.py", "unittest/case.py"]:
        assert expected in rel
    # tests, and anything in site-packages, are not
    for excluded in [
        "test/test_os.py",
        "idlelib/idle_test/test_config.py",
        "lib2to3/tests/test_parser.py",
        "unittest/test/test_case.py",
    ]:
        if (STDLIB / excluded).exists():  # present on this Python: must be excluded
            assert excluded not in rel
    for r in rel:
        parts = r.split("/")
        assert not ({"test", "tests", "idle_test", "site-packages", "__pycache__"} & set(parts)), r
        assert r.endswith(".py")
    # deterministic order: sorted by relative path components
    assert rel == sorted(rel, key=lambda r: r.split("/"))
    assert files == embedded_source_files()


def test_embedded_source_files_with_site_packages_adds_the_pinned_distributions():
    stdlib_files = embedded_source_files()
    files = embedded_source_files(include_site_packages=True)
    assert files[: len(stdlib_files)] == stdlib_files
    extra = files[len(stdlib_files) :]
    assert extra == [path for path, _ in pinned_distribution_files()]
    # every file is one a pinned distribution installed; each distribution contributes, in the
    # listed order, its files sorted by path, without tests
    owner_of, root_of = {}, {}
    for name, _ in CORPUS_DISTRIBUTIONS:
        dist = importlib.metadata.distribution(name)
        for f in dist.files:
            owner_of[Path(dist.locate_file(f))] = name
            root_of[name] = Path(dist.locate_file(""))
    owners = [owner_of[f] for f in extra]
    assert [n for i, n in enumerate(owners) if i == 0 or owners[i - 1] != n] == [n for n, _ in CORPUS_DISTRIBUTIONS]
    for name, _ in CORPUS_DISTRIBUTIONS:
        rel = [f.relative_to(root_of[name]).parts for f, o in zip(extra, owners) if o == name]
        assert rel == sorted(rel) and all(r[-1].endswith(".py") for r in rel)
        assert not any(is_test_path(Path(*r)) for r in rel)


def test_embedded_documents_are_the_chunked_stdlib_sources():
    stats = CorpusStats()
    docs = list(embedded_documents(stats=stats))
    files = embedded_source_files()
    assert stats.documents == len(docs) > len(files) / 2
    assert stats.files + stats.skipped_files == len(files)
    assert all(0 < len(d) <= MAX_CHARS for d in docs)
    # the chunks of a file are its text exactly, in order, right where the file's turn comes
    expected = []
    for f in files:
        try:
            expected.extend(chunk_text(f.read_bytes().decode("utf-8")))
        except UnicodeDecodeError:
            pass
    assert docs == expected
    # real text nobody here wrote: e.g. os.py's docstring is there, whole
    os_text = (STDLIB / "os.py").read_text(encoding="utf-8")
    assert any(os_text.startswith(d) for d in docs if d.startswith(os_text[:200]))
    # a huge generated file is cut into many chunks rather than being one document
    topics = STDLIB / "pydoc_data" / "topics.py"
    if topics.exists():
        assert len(chunk_text(topics.read_text(encoding="utf-8"))) > 50
    # smaller chunks on request
    small = list(itertools.islice(embedded_documents(max_chars=500), 200))
    assert max(map(len, small)) <= 500


# ---------------------------------------------------------------------------------------------
# folders


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_folder_documents_reads_every_accepted_kind(tmp_path):
    _write(tmp_path / "b.txt", "plain text\nwith two lines\n")
    _write(tmp_path / "a.md", "# Title\n\nmarkdown body\n")
    _write(tmp_path / "sub" / "c.py", "print('hello')\n" * 1000)  # 15000 chars -> 2 chunks
    _write(tmp_path / "sub" / "d.rst", "Heading\n=======\n")
    _write(tmp_path / "ignored.csv", "x,y\n1,2\n")
    _write(tmp_path / ".hidden" / "e.txt", "hidden folder: not a document\n")
    _write(tmp_path / ".hidden.txt", "hidden file: not a document\n")
    _write(tmp_path / "empty.txt", "")
    lines = [
        json.dumps({"text": "first json document"}),
        json.dumps({"content": "no text field"}),
        "",
        json.dumps({"text": 42}),
        "{not json",
        json.dumps({"text": "second json document", "meta": 1}),
        json.dumps(["a list"]),
    ]
    _write(tmp_path / "z.jsonl", "\n".join(lines) + "\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 latin-1\n".encode("latin-1"))

    stats = CorpusStats()
    docs = list(folder_documents(tmp_path, stats=stats))
    code = "print('hello')\n" * 1000
    assert docs == [
        "# Title\n\nmarkdown body\n",
        "plain text\nwith two lines\n",
        *chunk_text(code),
        "Heading\n=======\n",
        "first json document",
        "second json document",
    ]
    assert len(chunk_text(code)) == 2
    assert stats.documents == len(docs)
    assert stats.skipped_records == 4  # no text, non-string text, invalid JSON, not an object
    assert stats.invalid_json_lines == 1
    assert stats.skipped_files == 1  # latin-1
    assert stats.empty_files == 1
    assert any("latin1.txt" in e for e in stats.skipped_examples)
    assert any("z.jsonl:2" in e for e in stats.skipped_examples)
    # a single file works too
    assert list(folder_documents(tmp_path / "a.md")) == ["# Title\n\nmarkdown body\n"]


def test_folder_documents_errors_are_clear(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError) as e:
        folder_documents(missing)  # raised at the call, not at first next()
    assert str(missing) in str(e.value) and ".jsonl" in str(e.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError) as e:
        folder_documents(empty)
    assert str(empty) in str(e.value) and ".txt" in str(e.value) and ".jsonl" in str(e.value)

    other = tmp_path / "other"
    _write(other / "data.csv", "a,b\n")
    with pytest.raises(ValueError, match="no usable file"):
        folder_documents(other)

    no_text = tmp_path / "no_text"
    _write(no_text / "x.jsonl", json.dumps({"body": "x"}) + "\n" + json.dumps({"body": "y"}) + "\n")
    stats = CorpusStats()
    docs = folder_documents(no_text, stats=stats)
    with pytest.raises(ValueError) as e:
        list(docs)
    assert str(no_text) in str(e.value) and "'text'" in str(e.value)
    assert stats.skipped_records == 2

    # another field name can be asked for
    assert list(folder_documents(no_text, text_field="body")) == ["x", "y"]


# ---------------------------------------------------------------------------------------------
# streamed datasets (the same code path as the hub, on a local JSONL)


def test_hf_documents_streams_a_local_jsonl(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = [{"text": f"document number {i}\nwith a second line", "id": i} for i in range(10)]
    rows[3] = {"text": None, "id": 3}
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    stats = CorpusStats()
    docs = list(
        hf_documents("json", data_files=str(path), cache_dir=str(tmp_path / "cache"), stats=stats)
    )
    assert docs == [r["text"] for r in rows if r["text"] is not None]
    assert stats.skipped_records == 1 and stats.documents == 9

    limited = list(hf_documents("json", data_files=str(path), max_documents=4))
    assert limited == [rows[i]["text"] for i in (0, 1, 2, 4)]
    assert list(hf_documents("json", data_files=str(path), max_documents=0)) == []
    # short names resolve to the hub datasets (not contacted here)
    assert HF_SHORT_NAMES["c4"] == ("allenai/c4", "en")
    assert HF_SHORT_NAMES["fineweb-edu"][0] == "HuggingFaceFW/fineweb-edu"


# ---------------------------------------------------------------------------------------------
# split


def test_split_is_a_stable_function_of_the_text():
    texts = [f"document {i} " * (i % 7 + 1) for i in range(20000)]
    splits = [split_of(t) for t in texts]
    share = splits.count("val") / len(texts)
    assert 0.015 < share < 0.025
    assert splits == [split_of(t) for t in texts]  # deterministic
    assert split_of(texts[0], 0.0) == "train"
    assert all(split_of(t, 0.0) == "train" for t in texts[:500])
    assert 0.45 < [split_of(t, 0.5) for t in texts].count("val") / len(texts) < 0.55
    # independent of order: the same documents shuffled split the same way
    train, val = split_documents(texts[:3000], 0.1)
    train_r, val_r = split_documents(list(reversed(texts[:3000])), 0.1)
    assert set(train) == set(train_r) and set(val) == set(val_r)
    assert not set(train) & set(val)
    with pytest.raises(ValueError):
        split_of("x", 1.0)
