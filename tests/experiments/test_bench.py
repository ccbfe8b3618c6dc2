"""The benchmark's other commands (``bench pair``, ``regime``, ``loss``) end to end, shrunk to a few
steps (figures are not asserted: speed is measured by the benchmark, not by tests). The main
command, the frontier study: tests/experiments/test_frontier_bench.py."""

import json
import os
from dataclasses import replace

import pytest

from tests.helpers.trainer import EMBEDDED_STORE
from tst_titan.datastore.store import read_manifest
from tst_titan.experiments import bench
from tst_titan.method.schedule import switch_step
from tst_titan.tools import bench as bench_tool


def _keys(obj):
    """Every key of a nested JSON object."""
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in _keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in _keys(v)}
    return set()


@pytest.mark.slow
@pytest.mark.usefixtures("embedded_store")
def test_tiny_bench_writes_json_and_png(tmp_path, capsys):
    out = tmp_path / "bench"
    assert bench_tool.main(["pair", "--quick", "--steps", "20", "--k", "1.5", "--lr-grid", "3e-3,1e-2",
                            "--flavor", "tiny", "--small-corpus", "--out", str(out)]) == 0
    result = json.loads((out / "bench.json").read_text())
    assert (out / "bench.png").stat().st_size > 10_000
    assert [g["lr"] for g in result["learning_rate"]["grid"]] == [3e-3, 1e-2]
    chosen = min(result["learning_rate"]["grid"], key=lambda g: g["final_val_loss"])["lr"]
    assert result["learning_rate"]["chosen"] == chosen
    # TST reads s times the text of the baseline during its r*N bag steps
    n, s, r = 20, result["setup"]["bag_size"], result["setup"]["superposition_fraction"]
    per_step = result["setup"]["batch"] * result["setup"]["seq_len"]
    bag_steps = switch_step(r, n)
    assert result["raw_tokens_read"]["tst"] == per_step * (s * bag_steps + n - bag_steps)
    # the baseline runs k*N = 30 steps, rounded up to whole evaluation intervals (20): 40
    assert result["setup"]["val_every"] == 20
    assert result["positions"]["baseline"] == per_step * 40
    # the long baseline has not decayed at step N: its first crossing is no speedup, and no figure
    # of the pair is called one
    assert result["first_crossing_ratio_undecayed"]["steps_str"].endswith("x")
    assert "biased" in result["first_crossing_ratio_undecayed"]["note"].lower()
    assert not [k for k in _keys(result) if "speedup" in k]
    assert result["step_time"]["step_time_ratio"] > 0 and result["loader"]["tokens_per_s"] > 0
    assert "tst_titan" in result["versions"]
    # the corpus it trained on, recorded (and the folder claimed for it)
    store = bench.default_store(2048, large=False)  # the tiny flavor's vocab, the stdlib corpus
    assert result["corpus_sha256"] == result["corpus"]["corpus_sha256"] == read_manifest(store)["corpus_sha256"]
    assert json.loads((out / bench.CORPUS_FILE).read_text())["corpus_sha256"] == result["corpus_sha256"]
    printed = capsys.readouterr().out
    assert "step / N (biased)" in printed and "speedup to" not in printed and "ETA" in printed


def test_loss_bench_writes_json(tmp_path):
    assert bench_tool.main(["loss", "--vocabs", "512", "--bag-sizes", "1,4", "--positions", "32",
                            "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench_loss.json").read_text())
    rows = result["rows"]
    assert [(r["vocab"], r["bag_size"]) for r in rows] == [(512, 1), (512, 4)]
    assert all(r["time_vs_one_ce"] > 0 and r["bag_cross_entropy_peak_bytes"] >= 0 for r in rows)
    # the projection + loss rows: fused kernel, Linear + bag loss, Linear + reference
    assert result["hidden_dim"] == 256
    for r in rows:
        for name in ("fused_projection_bag_loss", "linear_bag_cross_entropy", "linear_reference"):
            assert r[f"{name}_s"] > 0 and r[f"{name}_peak_bytes"] > 0
        assert r["fused_time_vs_linear_bag"] == r["fused_projection_bag_loss_s"] / r["linear_bag_cross_entropy_s"]
        assert r["fused_loss_rel_diff"] < 1e-5  # the same loss, fused or not (fp32)


@pytest.mark.slow
def test_regime_pairs_on_a_small_store(tmp_path):
    setup = bench.RegimeSetup(tokens_per_param=(0.5, 1.5), include_site_packages=False,
                              dataset_path=str(tmp_path / "store"))
    result = bench.regime(setup, str(tmp_path / "regime"), quiet=True)
    # 0.5 and 1.5 tokens/param of a 59,552-parameter model at 2,048 positions a step, in tens
    assert result["parameters"] == 59552
    assert [p["steps"] for p in result["pairs"]] == [20, 40]
    for p in result["pairs"]:
        assert p["val_loss_difference"] == pytest.approx(p["tst_val_loss"] - p["baseline_val_loss"])
    assert os.path.exists(tmp_path / "regime" / "regime.png")


def test_bad_arguments_name_the_option(capsys):
    with pytest.raises(SystemExit) as e:
        bench_tool.main(["pair", "--lr-grid", "fast"])
    assert e.value.code == 2 and "--lr-grid must be comma-separated numbers" in capsys.readouterr().err
    for command in (["pair"], []):
        with pytest.raises(SystemExit):
            bench_tool.main([*command, "--corpus", "/no/such/folder"])
        assert "--corpus '/no/such/folder' is not a folder" in capsys.readouterr().err


def test_iso_loss_speedup_and_crossover_arithmetic():
    pairs = [
        {"tokens_per_param": 1, "flops": 100.0, "baseline_val_loss": 6.0, "tst_val_loss": 6.5},
        {"tokens_per_param": 10, "flops": 1000.0, "baseline_val_loss": 5.0, "tst_val_loss": 5.0},
        {"tokens_per_param": 100, "flops": 10000.0, "baseline_val_loss": 4.0, "tst_val_loss": 3.5},
    ]
    for p in pairs:
        p["val_loss_difference"] = p["tst_val_loss"] - p["baseline_val_loss"]
    bench._iso_loss_speedups(pairs)
    assert pairs[0]["speedup"] is None and "above" in pairs[0]["speedup_note"]
    assert pairs[1]["speedup"] == pytest.approx(1.0)
    assert pairs[2]["speedup"] is None and "below" in pairs[2]["speedup_note"]
    pairs[2]["tst_val_loss"] = 4.5  # halfway between the 1e3 and 1e4 baselines in log-FLOPs
    bench._iso_loss_speedups(pairs)
    assert pairs[2]["speedup"] == pytest.approx(10 ** 3.5 / 10000.0)
    assert bench._crossover(pairs) == pytest.approx(10.0)


@pytest.mark.usefixtures("embedded_store")
def test_a_given_store_is_checked_for_its_evaluation_too(tmp_path):
    setup = bench.BenchSetup(flavor="tiny", seq_len=32, batch=4, dataset="store", dataset_path=EMBEDDED_STORE)
    assert bench.prepare_data(setup) == EMBEDDED_STORE
    with pytest.raises(ValueError, match=r"val_steps = 100000 x batch = 4 needs 400000 held-out samples"):
        bench.prepare_data(replace(setup, val_steps=100_000))
    with pytest.raises(ValueError, match=r"dataset 'store': dataset_path .* holds no complete token store"):
        bench.prepare_data(replace(setup, dataset_path=str(tmp_path)))
