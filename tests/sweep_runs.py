"""One tiny sweep (``tst_titan.sweep.TINY``: the tiny model, 8 steps, a baseline and 10 cells
covering the heat map and every ablation) for the sweep and notebook tests, made once per session."""

from __future__ import annotations

import json
import os


def tiny_sweep(tmp_path_factory) -> str:
    from tests.training import EMBEDDED_STORE
    from tst_titan import sweep
    from tst_titan.store import ensure_embedded_store

    out = tmp_path_factory.getbasetemp() / "tiny_sweep"
    done = out / "sweep.json"
    if done.exists() and json.loads(done.read_text()).get("complete"):
        return str(out)
    ensure_embedded_store(EMBEDDED_STORE, vocab_size=2048)
    sweep.sweep(sweep.TINY, str(out), quiet=True)
    assert os.path.exists(done)
    return str(out)
