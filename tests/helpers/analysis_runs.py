"""One tiny TST/baseline pair for the analysis and notebook tests, made once per test session.

``tiny_pair(tmp_path_factory)`` trains it with :func:`tst_titan.experiments.pairs.make_demo_runs` (the
tiny flavor, 20 TST steps with s = 4, r = 0.3, a 30-step baseline, both at once) into the
session's base temporary folder, and reuses it when another test module asks again.
"""

from __future__ import annotations

import os

from tests.helpers.trainer import EMBEDDED_STORE
from tst_titan.experiments.pairs import make_demo_runs
from tst_titan.datastore.build import ensure_store

TINY = dict(steps=20, bag_size=4, fraction=0.3, k=1.5, lr=6e-3, seq_len=32, batch=4, val_every=2,
            val_steps=2, log_freq=1, parallel=True)


def tiny_pair(tmp_path_factory) -> dict:
    out = tmp_path_factory.getbasetemp() / "analysis_tiny_pair"
    if (out / "demo.json").exists():
        return {"dir": str(out), "tst": str(out / "tst"), "baseline": str(out / "baseline")}
    ensure_store(EMBEDDED_STORE, vocab_size=2048)
    made = make_demo_runs(str(out), **TINY)
    assert os.path.samefile(made["store_dir"], EMBEDDED_STORE)
    return {"dir": str(out), "tst": made["tst"], "baseline": made["baseline"]}
