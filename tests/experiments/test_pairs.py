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


def test_a_frontier_study_points_the_notebooks_at_its_pair(tmp_path, monkeypatch):
    monkeypatch.delenv(pairs.RUNS_ENV, raising=False)
    study = tmp_path / "frontier"
    for run in ("micro/seed1/s6_r0.3", "micro/seed1/aa"):
        os.makedirs(study / run)
        (study / run / "metrics.jsonl").write_text("")
    pairs.write_pair_record(str(study), str(study / "micro/seed1/s6_r0.3"), str(study / "micro/seed1/aa"), seed=1)
    assert json.loads((study / pairs.PAIR_FILE).read_text()) == {
        "tst": os.path.join("micro", "seed1", "s6_r0.3"), "baseline": os.path.join("micro", "seed1", "aa"), "seed": 1}
    moved = tmp_path / "moved"
    os.rename(study, moved)  # relative paths: the folder can move
    monkeypatch.setattr(pairs, "BENCH_DIRS", (str(tmp_path / "missing"), str(moved)))
    got = pairs.find_runs(make_demo=False, demo_dir=str(tmp_path / "demo"))
    assert (got["tst"], got["baseline"]) == (str(moved / "micro/seed1/s6_r0.3"), str(moved / "micro/seed1/aa"))


def test_find_frontier_order(tmp_path, monkeypatch):
    monkeypatch.delenv(pairs.FRONTIER_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="python -m tst_titan.tools.bench --quick"):
        pairs.find_frontier()
    os.makedirs("results")
    for name in ("frontier_quick.json", "frontier.json"):
        (tmp_path / "results" / name).write_text("{}")
        assert pairs.find_frontier() == {"path": str(tmp_path / "results" / name), "source": f"committed results/{name}"}
    for d, age in (("frontier", 100), ("frontier_quick", 50)):  # the newer study wins
        os.makedirs(tmp_path / "outputs" / d)
        (tmp_path / "outputs" / d / "frontier.json").write_text("{}")
        os.utime(tmp_path / "outputs" / d / "frontier.json", (1e9 + age, 1e9 + age))
    assert pairs.find_frontier()["path"] == str(tmp_path / "outputs" / "frontier" / "frontier.json")
    monkeypatch.setenv(pairs.FRONTIER_ENV, "results/frontier_quick.json")
    assert pairs.find_frontier()["source"] == "$TST_FRONTIER"
    monkeypatch.setenv(pairs.FRONTIER_ENV, "nope.json")
    with pytest.raises(FileNotFoundError, match="TST_FRONTIER"):
        pairs.find_frontier()
    assert pairs.find_frontier("x.json")["source"] == "given"
