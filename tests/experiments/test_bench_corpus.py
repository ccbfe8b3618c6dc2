"""A benchmark's output folder belongs to one corpus: results of another corpus are never replaced
or mixed in, and the command's default folder differs per corpus."""

import json
import os

import pytest

from tst_titan.datastore.store import CorpusMismatchError
from tst_titan.experiments import bench
from tst_titan.tools import bench as bench_tool

CORPUS = {"corpus_sha256": "a" * 64, "tokenizer_sha256": "t" * 64, "val_fraction": 0.02, "shuffle_seed": 0,
          "source": "embedded:stdlib+pinned-packages", "store": "/data/x"}


def test_a_folder_is_claimed_by_its_first_corpus(tmp_path):
    out = str(tmp_path / "bench_quick")
    bench.claim_output_folder(out, CORPUS)
    with open(os.path.join(out, bench.CORPUS_FILE)) as f:
        assert json.load(f) == CORPUS
    (tmp_path / "bench_quick" / "bench.json").write_text("{}")
    bench.claim_output_folder(out, dict(CORPUS, store="/elsewhere/same/text"))  # the same corpus: fine
    other = dict(CORPUS, corpus_sha256="b" * 64, source="folder:/my/texts")
    with pytest.raises(CorpusMismatchError, match=r"holds results of another corpus.*aaaa.*bbbb.*--out"):
        bench.claim_output_folder(out, other)
    assert json.loads((tmp_path / "bench_quick" / bench.CORPUS_FILE).read_text()) == CORPUS  # untouched


def test_results_that_record_no_corpus_are_not_overwritten(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "bench.json").write_text("{}")
    with pytest.raises(CorpusMismatchError, match=r"do not record their corpus.*--out"):
        bench.claim_output_folder(str(tmp_path / "old"), CORPUS)
    assert not (tmp_path / "old" / bench.CORPUS_FILE).exists()


def test_the_default_output_folder_names_the_corpus(tmp_path, monkeypatch):
    seen = []

    def fake_bench(setup, out, quiet=False):
        seen.append((setup.dataset, out))
        raise SystemExit(0)

    monkeypatch.setattr(bench, "bench", fake_bench)
    corpus = tmp_path / "my_texts"
    corpus.mkdir()
    for argv in (["pair", "--quick"], ["pair", "--quick", "--corpus", str(corpus) + "/"],
                 ["pair", "--quick", "--small-corpus"], ["pair"]):
        with pytest.raises(SystemExit):
            bench_tool.main(argv)
    assert seen == [("embedded_large", os.path.join("outputs", "bench_quick")),
                    ("folder", os.path.join("outputs", "bench_quick-my_texts")),
                    ("embedded", os.path.join("outputs", "bench_quick-stdlib")),
                    ("embedded_large", os.path.join("outputs", "bench"))]
