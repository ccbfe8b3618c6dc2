import os

import pytest

from tests.helpers import plans
from tests.helpers.analysis_runs import tiny_pair
from tests.helpers.sweep_runs import make_tiny_sweep
from tests.helpers.trainer import EMBEDDED_STORE, family
from tst_titan.datastore.build import ensure_store

os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: without it they are reported as skipped, with the reason."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (bash scripts/gpu_check.sh runs the gpu tests first)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def embedded_store():
    """The embedded corpus store the debug configs train on (built once, ~10 s, then cached)."""
    ensure_store(EMBEDDED_STORE, vocab_size=2048)
    return EMBEDDED_STORE


# The shared run families (tests/helpers/plans.py), trained once per session and read by the
# resume, data-fault, bad-input, ablation and export tests.
@pytest.fixture(scope="session")
def one(tmp_path_factory, embedded_store):
    return family("one_process", tmp_path_factory, plans.one_process_plans)


@pytest.fixture(scope="session")
def fsdp(tmp_path_factory, embedded_store):
    return family("fsdp", tmp_path_factory, plans.fsdp_plans)


@pytest.fixture(scope="session")
def twins(tmp_path_factory, embedded_store):
    return family("twins", tmp_path_factory, plans.twin_plans)


@pytest.fixture(scope="session")
def ablations(tmp_path_factory, embedded_store):
    return family("ablations", tmp_path_factory, plans.ablation_plans)


@pytest.fixture(scope="session")
def pair(tmp_path_factory, embedded_store):
    """The tiny TST/baseline pair the analysis, pair-finding and notebook helpers read
    (tests/helpers/analysis_runs.py), trained once per session."""
    return tiny_pair(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, embedded_store):
    """The tiny sweep the sweep and notebook tests read (tests/helpers/sweep_runs.py), made once
    per session; its folder."""
    return make_tiny_sweep(tmp_path_factory)
