import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def embedded_store():
    """The embedded corpus store the debug configs train on (built once, ~10 s, then cached)."""
    from tests.training import EMBEDDED_STORE
    from tst_titan.store import ensure_embedded_store

    ensure_embedded_store(EMBEDDED_STORE, vocab_size=2048)
    return EMBEDDED_STORE
