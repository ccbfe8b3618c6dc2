"""What names a corpus: ``corpus_sha256`` (a hash of the documents' texts, wherever they lie), the
pinned sources of the large embedded corpus, and the refusal to compare runs of different corpora."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from tst_titan.datastore import build
from tst_titan.datastore.build import build_store, ensure_store
from tst_titan.datastore.sources import (
    CorpusSourceError,
    corpus_sha256,
    embedded_documents,
    folder_documents,
    pinned_distribution_files,
)
from tst_titan.datastore.store import (
    MANIFEST,
    CorpusMismatchError,
    check_same_corpus,
    corpus_record,
    read_manifest,
)


def _sha256_of(texts):
    """The definition, written out: sha256 over (8-byte little-endian length, UTF-8 bytes) of
    every non-empty text in order."""
    data = b"".join(len(t.encode()).to_bytes(8, "little") + t.encode() for t in texts if t)
    return hashlib.sha256(data).hexdigest()


def test_corpus_sha256_is_the_hash_of_the_texts_in_order():
    texts = ["alpha\n", "", "beta gamma\n", "δ\n"]
    assert corpus_sha256(texts) == _sha256_of(texts)
    assert corpus_sha256(texts) == corpus_sha256([t for t in texts if t])  # empty: no token
    assert corpus_sha256(texts) != corpus_sha256(texts[::-1])  # the order counts
    assert corpus_sha256(["ab", "c"]) != corpus_sha256(["a", "bc"])  # the boundaries count


def _write_corpus(folder, files):
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)


FILES = {f"part{i // 10}/doc{i:02d}.txt": f"document {i}\n" + "some words here\n" * (i % 7 + 1) for i in range(40)}


def test_two_builds_in_two_fresh_folders_give_the_same_hash(tmp_path):
    a, b = tmp_path / "one" / "corpus", tmp_path / "two" / "elsewhere"
    _write_corpus(a, FILES)
    _write_corpus(b, dict(reversed(FILES.items())))  # other creation order, times and path
    first = ensure_store(a / ".tst_store", vocab_size=300, folder=a)
    second = ensure_store(b / ".tst_store", vocab_size=300, folder=b)
    assert first["source"] != second["source"]  # the paths differ ...
    assert first["corpus_sha256"] == second["corpus_sha256"]  # ... the corpus does not
    assert first["corpus_sha256"] == _sha256_of(folder_documents(a))
    records = {"one": corpus_record(a / ".tst_store"), "two": corpus_record(b / ".tst_store")}
    assert check_same_corpus(records) == first["corpus_sha256"]
    # one changed document changes the hash, and the two stores are no longer comparable
    changed = tmp_path / "three"
    _write_corpus(changed, {**FILES, "part1/doc13.txt": FILES["part1/doc13.txt"].replace("some", "more")})
    third = ensure_store(changed / ".tst_store", vocab_size=300, folder=changed)
    assert third["corpus_sha256"] != first["corpus_sha256"]
    records["three"] = corpus_record(changed / ".tst_store")
    with pytest.raises(CorpusMismatchError, match=r"corpus_sha256 differs.*one: .*three: "):
        check_same_corpus(records)


def test_the_large_embedded_corpus_hashes_the_same_in_two_fresh_interpreters(tmp_path):
    # the benchmark's corpus (the stdlib and the pinned packages' sources) listed, read and hashed
    # from scratch by two interpreters in other folders with other hash seeds
    code = ("from tst_titan.datastore.sources import corpus_sha256, embedded_documents; "
            "print(corpus_sha256(embedded_documents(include_site_packages=True)))")
    hashes = []
    for folder, hash_seed in (("one", "0"), ("two", "4242")):
        (tmp_path / folder).mkdir()
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / folder, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONHASHSEED=hash_seed))
        assert done.returncode == 0, done.stderr  # e.g. the [corpus] extra missing: its message
        hashes.append(done.stdout.strip())
    assert hashes[0] == hashes[1] and len(hashes[0]) == 64
    # the committed studies were trained on this corpus: with their Python (the same version from
    # the same build: a distribution's patched stdlib of that version would differ), the same hash
    study = json.loads((Path(__file__).parents[2] / "results" / "frontier.json").read_text())
    if study["versions"]["python"] == platform.python_version():
        assert hashes[0] == study["corpus_sha256"]


def test_every_store_kind_records_it(tmp_path, monkeypatch):
    docs = [f"text number {i}\n" * 3 for i in range(30)]
    given = build_store(tmp_path / "given", docs, vocab_size=300, source="test")
    assert given["corpus_sha256"] == _sha256_of(docs)
    # the embedded kind (a few stdlib documents stand in for the whole, as in test_build)
    monkeypatch.setattr(build, "embedded_documents", lambda include_site_packages=False, stats=None: iter(docs))
    embedded = ensure_store(tmp_path / "embedded", vocab_size=300)
    assert embedded["source"] == "embedded:stdlib" and embedded["corpus_sha256"] == _sha256_of(docs)


def test_a_store_built_before_the_hash_gets_it_on_next_use(tmp_path):
    folder = tmp_path / "docs"
    _write_corpus(folder, FILES)
    out = folder / ".tst_store"
    manifest = ensure_store(out, vocab_size=300, folder=folder)
    old = {k: v for k, v in manifest.items() if k != "corpus_sha256"}
    (out / MANIFEST).write_text(json.dumps(old))
    with pytest.raises(ValueError, match="built before stores recorded their corpus_sha256"):
        corpus_record(out)
    again = ensure_store(out, vocab_size=300, folder=folder)
    assert again["corpus_sha256"] == manifest["corpus_sha256"] == read_manifest(out)["corpus_sha256"]
    assert again == manifest


def test_check_same_corpus_names_what_differs():
    base = {"corpus_sha256": "a" * 64, "tokenizer_sha256": "t" * 64, "val_fraction": 0.02,
            "shuffle_seed": 0, "source": "embedded:stdlib"}
    assert check_same_corpus({"x": base, "y": dict(base)}) == "a" * 64
    with pytest.raises(CorpusMismatchError, match=r"val_fraction differs -- x: 0.02 .*y: 0.1"):
        check_same_corpus({"x": base, "y": {**base, "val_fraction": 0.1}})
    with pytest.raises(CorpusMismatchError, match=r"tokenizer_sha256 differs"):
        check_same_corpus({"x": base, "y": {**base, "tokenizer_sha256": "u" * 64}})
    with pytest.raises(CorpusMismatchError, match=r"cannot tell which corpus 'old'"):
        check_same_corpus({"x": base, "old": {}})


# -- the pinned sources of the large embedded corpus ------------------------------------------
def _record_hash(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """An installed distribution ``fakecorpus 1.0`` in a folder put on sys.path: a package whose
    wheel RECORD lists two modules, a test, a data file and a script outside the package; one more
    module lies in the folder without being listed."""
    root = tmp_path / "site"
    files = {
        "fakecorpus/__init__.py": "A = 1\n",
        "fakecorpus/sub/b.py": "B = 2\n",
        "fakecorpus/tests/test_a.py": "def test(): pass\n",
        "fakecorpus/data.txt": "not python\n",
    }
    _write_corpus(root, files)
    (root / "fakecorpus" / "stray.py").write_text("NOT_INSTALLED = 1\n")
    info = root / "fakecorpus-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakecorpus\nVersion: 1.0\n")
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    record = [f"{rel},sha256={_record_hash(text.encode())},{len(text)}" for rel, text in files.items()]
    record += ["../../bin/fake.py,sha256=abc,3", "fakecorpus-1.0.dist-info/RECORD,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n")
    monkeypatch.setattr(sys, "path", [str(root), *sys.path])
    return root


def test_pinned_files_are_the_distributions_listed_sources(fake_distribution):
    files = pinned_distribution_files([("fakecorpus", "1.0")])
    assert [p for p, _ in files] == [fake_distribution / "fakecorpus/__init__.py",
                                     fake_distribution / "fakecorpus/sub/b.py"]
    docs = list(embedded_documents(True, distributions=[("fakecorpus", "1.0")]))
    assert docs[-2:] == ["A = 1\n", "B = 2\n"]
    assert docs[:-2] == list(embedded_documents())  # the stdlib first


def test_another_installed_version_is_refused_naming_both(fake_distribution):
    with pytest.raises(CorpusSourceError, match=r"fakecorpus==2.0, but fakecorpus 1.0 is installed.*pip install fakecorpus==2.0"):
        pinned_distribution_files([("fakecorpus", "2.0")])
    with pytest.raises(CorpusSourceError, match=r"nosuchdist==1.0, which is not installed"):
        embedded_documents(True, distributions=[("nosuchdist", "1.0")])  # at once, not at first next()


def test_a_modified_or_platform_installed_source_is_refused(fake_distribution):
    (fake_distribution / "fakecorpus/sub/b.py").write_text("B = 3\n")
    with pytest.raises(CorpusSourceError, match=r"b.py differs from the file its distribution installed"):
        list(embedded_documents(True, distributions=[("fakecorpus", "1.0")]))
    wheel = fake_distribution / "fakecorpus-1.0.dist-info" / "WHEEL"
    wheel.write_text(wheel.read_text().replace("py3-none-any", "cp311-cp311-manylinux_2_28_x86_64"))
    with pytest.raises(CorpusSourceError, match=r"not a pure-Python \(py3-none-any\) wheel"):
        pinned_distribution_files([("fakecorpus", "1.0")])


def test_the_pinned_sources_are_installed_here():
    # this environment is the project's: every pinned distribution at its version, untouched
    files = pinned_distribution_files()
    assert len(files) > 1500
    assert sum(p.stat().st_size for p, _ in files) > 25e6


def test_the_corpus_extra_pins_every_corpus_distribution():
    # `pip install -e ".[corpus]"` (scripts/setup.sh) must install exactly the pinned sources
    import tomllib

    from tests.helpers import ROOT
    from tst_titan.datastore.sources import CORPUS_DISTRIBUTIONS

    with open(f"{ROOT}/pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    pins = [*project["dependencies"], *project["optional-dependencies"]["corpus"]]
    pinned = {req.split("==")[0].replace("-", "_").lower(): req.split("==")[1] for req in pins if "==" in req}
    for name, version in CORPUS_DISTRIBUTIONS:
        assert pinned.get(name.lower()) == version, (name, version)
