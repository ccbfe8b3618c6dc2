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


# The reliability run families (tests/reliability_runs.py) are trained once per session and shared
# by test_resume.py and test_data_faults.py.
@pytest.fixture(scope="session")
def one(tmp_path_factory, embedded_store):
    from tests.reliability_runs import one_process_family

    return one_process_family(tmp_path_factory)


@pytest.fixture(scope="session")
def fsdp(tmp_path_factory, embedded_store):
    from tests.reliability_runs import fsdp_family

    return fsdp_family(tmp_path_factory)


@pytest.fixture(scope="session")
def twins(tmp_path_factory, embedded_store):
    from tests.reliability_runs import twin_family

    return twin_family(tmp_path_factory)
