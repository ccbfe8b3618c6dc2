"""tst_titan.experiments.pairs: the demo pair's checkpoint plan and the order in which the notebooks'
runs are found."""

import json
import os

import pytest

from tst_titan.analysis import runs
from tst_titan.experiments import pairs


def test_demo_checkpoint_plan_saves_the_switch():
    assert pairs.demo_checkpoint_plan(300, 0.3) == {"interval": 10, "start": 1, "end of phase 1": 90,
                                                "after switch": 100, "end": 300}
    plan = pairs.demo_checkpoint_plan(1000, 0.25)
    assert plan["end of phase 1"] % plan["interval"] == 0 and plan["interval"] <= 40
    with pytest.raises(ValueError):
        pairs.demo_checkpoint_plan(10, 0.0)

def test_find_runs_order(tmp_path, monkeypatch, pair):
    def fake(folder, checkpoints=()):
        for arm in ("tst", "baseline"):
            os.makedirs(folder / arm, exist_ok=True)
            (folder / arm / "metrics.jsonl").write_text("")
        for step in checkpoints:
            os.makedirs(folder / "tst" / "checkpoint" / f"step-{step}")
            (folder / "tst" / "checkpoint" / f"step-{step}" / ".metadata").write_text("")
        return folder

    monkeypatch.delenv(pairs.RUNS_ENV, raising=False)
    bench = fake(tmp_path / "bench", checkpoints=[20])
    monkeypatch.setattr(pairs, "BENCH_DIRS", (str(bench), str(tmp_path / "missing")))
    monkeypatch.setattr(runs, "switch_step", lambda run: 6)
    got = pairs.find_runs(demo_dir=str(tmp_path / "demo"), make_demo=False)
    assert got["tst"] == str(bench / "tst") and got["source"].startswith("benchmark")
    # the benchmark keeps only its last checkpoint: the embedding notebook needs the switch bracketed
    with pytest.raises(FileNotFoundError):
        pairs.find_runs(need_checkpoints=True, demo_dir=str(tmp_path / "demo"), make_demo=False)
    demo = fake(tmp_path / "demo")
    (demo / "demo.json").write_text(json.dumps({}))
    got = pairs.find_runs(need_checkpoints=True, demo_dir=str(demo), make_demo=False)
    assert got["tst"] == str(demo / "tst") and got["source"].startswith("demo")
    monkeypatch.setenv(pairs.RUNS_ENV, pair["dir"])
    assert pairs.find_runs()["tst"] == pair["tst"]
    assert pairs.find_runs("a/tst", "a/baseline")["source"] == "given"
    with pytest.raises(ValueError):
        pairs.find_runs("a/tst")
