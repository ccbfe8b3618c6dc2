"""``python -m tst_titan.tools.sweep``: a tiny real sweep (tests/helpers/sweep_runs.py) writes its
JSON and heat map, a rerun skips finished cells, and bad grids stop before any training naming the
option."""

import json
import os
import shutil
from dataclasses import replace

import pytest

from tst_titan.experiments import sweep as S
from tst_titan.job_config import ConfigError
from tst_titan.tools import sweep as sweep_tool


@pytest.fixture
def tiny(tiny_sweep):
    return tiny_sweep


@pytest.mark.slow  # two training processes at a time
def test_tiny_sweep_writes_json_and_heat_map(tiny):
    result = S.load_sweep(tiny)
    assert result["complete"] and not result["failed"]
    base = result["baseline"]
    cells = {c["name"]: c for c in result["cells"]}
    assert list(cells) == [c.name for c in S.plan_cells(S.TINY)] and len(cells) == 10
    assert [c["kind"] for c in result["cells"]].count("grid") == 2  # r 0.5 x s 4, 16
    for c in result["cells"]:
        assert c["difference"] == pytest.approx(c["final_val_loss"] - base["final_val_loss"])
        assert c["val_curve"][-1] == [8, c["final_val_loss"]] and c["switch_step"] == 4
        assert c["flops_seen"] == base["flops_seen"]  # equal FLOPs
        assert os.path.exists(os.path.join(c["run"], "metrics.jsonl"))  # relative to the cwd or absolute
    # raw text read: s per position in the 4 bag steps with bag inputs, 1 with output_only
    per_step = 4 * 32
    for s in (4, 16):
        assert cells[f"r0.5_s{s}_full_uniform_keep"]["raw_tokens_seen"] == (4 * s + 4) * per_step
        assert cells[f"r0.5_s{s}_input_only_uniform_keep"]["raw_tokens_seen"] == (4 * s + 4) * per_step
        assert cells[f"r0.5_s{s}_output_only_uniform_keep"]["raw_tokens_seen"] == base["raw_tokens_seen"]
    grid = [c for c in result["cells"] if c["kind"] == "grid"]
    assert result["best"]["name"] == min(grid, key=lambda c: c["difference"])["name"]
    rs, ss, diff = S.heatmap(result)
    assert (rs, ss) == ([0.5], [4, 16]) and diff[0][1] == cells["r0.5_s16_full_uniform_keep"]["difference"]
    assert [r["value"] for r in S.ablation(result, "mode")] == ["full", "input_only", "output_only"] * 2
    assert [r["value"] for r in S.ablation(result, "optimizer")] == ["keep", "reset_moments"] * 2
    assert all(r["vs_reference"] is not None for r in S.ablation(result, "weighting"))
    assert os.path.getsize(os.path.join(tiny, "sweep.png")) > 5_000


@pytest.mark.slow
def test_rerun_skips_finished_cells_and_trains_only_new_ones(tiny, tmp_path, capsys):
    out = tmp_path / "sweep"
    shutil.copytree(tiny, out)
    records = sorted(str(p) for p in out.glob("*/bench_run.json"))
    mtimes = [os.path.getmtime(p) for p in records]
    # the same grid from the command line: nothing is trained
    assert sweep_tool.main(["--tiny", "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "sweep.json").read_text())
    assert result["baseline"]["reused"] and all(c["reused"] for c in result["cells"])
    assert result["corpus_sha256"] == json.loads((out / "corpus.json").read_text())["corpus_sha256"]
    assert [os.path.getmtime(p) for p in records] == mtimes
    printed = capsys.readouterr().out
    assert "0 runs trained, 11 reused" in printed and "best heat-map cell" in printed
    # a grown grid trains only its new cell
    grown = S.sweep(replace(S.TINY, bag_sizes=(4, 16, 2)), str(out), quiet=True)
    trained = [c["name"] for c in grown["cells"] if not c["reused"]]
    assert trained == ["r0.5_s2_full_uniform_keep"] and grown["baseline"]["reused"]
    assert [os.path.getmtime(p) for p in records] == mtimes
    assert S.heatmap(grown)[1] == [4, 16, 2]


@pytest.mark.parametrize("args, option", [
    (["--modes", "full,both"], "--modes"),
    (["--optimizer-at-switch", "keep,zero"], "--optimizer-at-switch"),
    (["--weightings", "cubic"], "--weightings"),
    (["--fractions", ""], "--fractions"),
    (["--bag-sizes", ","], "--bag-sizes"),
    (["--fractions", "0.3,fast"], "--fractions"),
    (["--fractions", "1.5"], "--fractions"),
    (["--fractions", "0.0001", "--steps", "100"], "--fractions"),
    (["--bag-sizes", "0,4"], "--bag-sizes"),
    (["--bag-sizes", "1,4", "--modes", "full,input_only"], "--bag-sizes"),
    (["--bag-sizes", "1,4", "--modes", "output_only"], "--bag-sizes"),
    (["--modes", "full,input_only", "--ablation-bag-sizes", "1"], "--ablation-bag-sizes"),
    (["--ablation-fraction", "1.0"], "--ablation-fraction"),
    (["--jobs", "0"], "--jobs"),
    (["--quick", "--tiny"], "--tiny"),
])
def test_bad_grids_stop_before_training_naming_the_option(args, option, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        sweep_tool.main([*args, "--out", str(tmp_path / "never")])
    assert e.value.code == 2
    assert option in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_library_checks_and_the_plan():
    with pytest.raises(ConfigError, match="--bag-sizes: a bag size of 1 with --modes input_only"):
        S.check_setup(replace(S.TINY, bag_sizes=(1, 4), modes=("input_only",)))
    with pytest.raises(ConfigError, match="--modes: empty grid"):
        S.check_setup(replace(S.TINY, modes=()))
    # s = 1 in full mode only is allowed: a control cell that is the baseline itself
    S.check_setup(replace(S.TINY, bag_sizes=(1, 4), modes=("full",)))
    # ablations at an r outside the heat map get their reference cell
    setup = replace(S.TINY, fractions=(0.25, 0.75), ablation_fraction=0.5, ablation_bag_sizes=(4,),
                    weightings=("uniform",), optimizer_at_switch=("keep",), modes=("full", "output_only"))
    assert [(c.name, c.kind) for c in S.plan_cells(setup)] == [
        ("r0.25_s4_full_uniform_keep", "grid"), ("r0.25_s16_full_uniform_keep", "grid"),
        ("r0.75_s4_full_uniform_keep", "grid"), ("r0.75_s16_full_uniform_keep", "grid"),
        ("r0.5_s4_full_uniform_keep", "reference"), ("r0.5_s4_output_only_uniform_keep", "mode")]
    assert S.DEFAULT.ablation_r() == 0.3 and replace(S.DEFAULT, fractions=(0.2, 0.4)).ablation_r() == 0.2
    # the presets' sizes (their docstrings quote them): the heat map, plus per ablation bag size one
    # cell per further mode, weighting and optimizer option (the reference cell lies in the heat map)
    for setup, cells in ((S.QUICK, 32), (S.DEFAULT, 84)):
        extra = len(setup.modes) + len(setup.weightings) + len(setup.optimizer_at_switch) - 3
        assert len(S.plan_cells(setup)) == len(setup.fractions) * len(setup.bag_sizes) + len(setup.ablation_s()) * extra \
            == cells
