"""The token store every building and serving test reads: built once for the package."""

from __future__ import annotations

import itertools

import pytest

from tst_titan.datastore.build import build_store
from tst_titan.datastore.sources import embedded_documents

VOCAB = 512
SHARD_DOCS = 64


@pytest.fixture(scope="package")
def docs():
    """~500 real stdlib chunks (about 3 MB, 1.4 M tokens at vocab 512) plus two empty ones."""
    texts = list(itertools.islice(embedded_documents(), 500))
    return texts[:100] + [""] + texts[100:300] + [""] + texts[300:]


@pytest.fixture(scope="package")
def built(tmp_path_factory, docs):
    out = tmp_path_factory.mktemp("stores") / "main"
    manifest = build_store(
        out, docs, vocab_size=VOCAB, val_fraction=0.1, shard_documents=SHARD_DOCS, source="test"
    )
    return out, manifest
