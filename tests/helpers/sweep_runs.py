"""One tiny sweep (``tst_titan.experiments.sweep.TINY``: the tiny model, 8 steps, a baseline and 10
cells covering the heat map and every ablation) for the sweep and notebook tests, made once per
session."""

from __future__ import annotations

import json
import os

from tests.helpers.trainer import EMBEDDED_STORE
from tst_titan.datastore.build import ensure_store
from tst_titan.experiments import sweep


def make_tiny_sweep(tmp_path_factory) -> str:
    out = tmp_path_factory.getbasetemp() / "tiny_sweep"
    done = out / "sweep.json"
    if done.exists() and json.loads(done.read_text()).get("complete"):
        return str(out)
    ensure_store(EMBEDDED_STORE, vocab_size=2048)
    sweep.sweep(sweep.TINY, str(out), quiet=True)
    assert os.path.exists(done)
    return str(out)
