"""The frontier study (``python -m tst_titan.tools.bench``) end to end on a tiny setup.

Two kinds of runs: a stand-in trainer whose final losses follow a known law (so that every figure
of frontier.json has an exact expected value), and real torchtitan training of the whole protocol
(in one process, then one run again through ``run_training``'s subprocess: the same losses bit
for bit, every other run reused)."""

import glob
import json
import math
import os
import shutil
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torchtitan.config import ConfigManager
from torchtitan.train import Trainer

import tst_titan.config  # noqa: F401  (activates the extension here: tst_* specs, CPU mode)
from tests.helpers.distributed import run_on_processes
from tests.helpers.trainer import EMBEDDED_STORE
from tst_titan.analysis.frontier import aa_control, interval_coverage, summary_row
from tst_titan.components.dataloader import build_validation_dataset
from tst_titan.datastore.build import ensure_store
from tst_titan.datastore.store import CorpusMismatchError, TokenStore
from tst_titan.experiments import bench, frontier, pairs, steptime
from tst_titan.experiments.runner import (BASE_CONFIG, RUN_RECORD, finished_run, run_settings, run_training,
                                         training_command)
from tst_titan.run_files import read_metrics
from tst_titan.train_spec import flavors_of
from tst_titan.tools import bench as bench_tool

# The tiny llama3 (dim 64, 2 layers, 4 heads, FFN 192, vocab 2048) at 4 x 32 positions a step.
SEQ, BATCH = 32, 4
TINY = frontier.FrontierSetup(
    flavors=("tiny",), tokens_per_param=0.0139, arms=("s6_r0.3", "s4_r0.3"), seeds=(1, 2, 3),
    factors=(0.5, 0.75, 1.0, 1.5), baseline_lr_grid=(6e-3, 1.2e-2), tst_lr_grid=(6e-3, 1.2e-2),
    seq_len=SEQ, batch=BATCH, evals_per_run=4, val_steps=2, steptime_steps=4, dataset="embedded",
)


def tiny_parameters_and_flops_per_position():
    """By hand from the shape: embedding and output 2048 x 64 each; per layer wq, wk, wv, wo
    (64 x 64), w1, w2, w3 (64 x 192), two norms (64); a final norm. torchtitan's FLOPs per position:
    6 x the non-embedding parameters + 6 x layers x heads x (q and v head dims, 2 x 16) x seq_len."""
    per_layer = 4 * 64 * 64 + 3 * 64 * 192 + 2 * 64
    params = 2 * 2048 * 64 + 2 * per_layer + 64
    return params, 6 * (params - 2048 * 64) + 6 * 2 * 4 * (2 * 16) * SEQ


def test_n_and_flops_follow_the_formula():
    params, per_position = tiny_parameters_and_flops_per_position()
    assert params == 368_960
    plan = frontier.plan_flavor(TINY, "tiny")
    assert (plan.parameters, plan.flops_per_position) == (params, per_position)
    assert plan.flops_per_step == per_position * SEQ * BATCH
    # N = 0.0139 x 368,960 / 128 = 40.07 -> validation every 10 (about N / 4), N = 40
    assert (plan.steps, plan.val_every, plan.warmup_steps) == (40, 10, 2)
    assert plan.lengths == (20, 30, 40, 60)
    assert plan.tokens_per_param == 40 * 128 / params


# -- a stand-in trainer with a known law ----------------------------------------------------------
def _arg(overrides, key, default=None):
    """The value of the last ``key`` in ``overrides`` (later overrides win, as in torchtitan)."""
    at = [i for i, a in enumerate(overrides) if a == key]
    return overrides[at[-1] + 1] if at else default


def effective_steps(overrides, steps):
    """How many baseline steps a run is worth: TST s6 1.2 + 0.05·seed x N, s4 1.1 + 0.02·seed x N,
    the A/A replicate 1 ± 0.01; a learning rate off its arm's best (baseline 1.2e-2, TST 6e-3)
    x 0.9."""
    seed, init = int(_arg(overrides, "--tst.data_seed")), int(_arg(overrides, "--debug.seed"))
    lr = float(_arg(overrides, "--optimizer.lr"))
    if "--tst.enable" in overrides:
        s = int(_arg(overrides, "--tst.bag_size"))
        factor = (1.2 + 0.05 * seed) if s == 6 else (1.1 + 0.02 * seed)
        best = 6e-3
    else:
        factor = 1 + 0.01 * (-1) ** seed if init >= frontier.AA_SEED_OFFSET else 1.0
        best = 1.2e-2
    return steps * factor * (1.0 if lr == best else 0.9)


def law(t, seed):
    """Final val loss of a fully decayed run worth t baseline steps: linear in log t, so that the
    frontier's log-FLOPs interpolation is exact."""
    return 10.0 - math.log(t) + 0.01 * seed


def undecayed(t, seed):
    """Val loss at step t of a run that has not decayed its rate (every evaluation but a decayed
    run's last)."""
    return 10.5 - 1.2 * math.log(t) + 0.01 * seed


class FakeTrainer:
    """Writes what run_training would (rows, run record, checkpoints), reuses finished runs as it
    does, and counts the runs it trains."""

    def __init__(self):
        self.trained = []

    def __call__(self, name, overrides, out_dir, steps, progress=None, config=BASE_CONFIG, reuse=False):
        dump = os.path.join(out_dir, name)
        record_path = os.path.join(dump, RUN_RECORD)
        if reuse and (done := finished_run(record_path, overrides, config, steps)) is not None:
            return done
        self.trained.append(name)
        shutil.rmtree(dump, ignore_errors=True)
        interval = int(_arg(overrides, "--checkpoint.interval"))
        first = {1} if "--checkpoint.enable_first_step_checkpoint" in overrides else set()
        for k in {steps, *range(interval, steps, interval)} | first:
            os.makedirs(os.path.join(dump, "checkpoint", f"step-{k}"))
            open(os.path.join(dump, "checkpoint", f"step-{k}", ".metadata"), "w").close()
        resume = _arg(overrides, "--checkpoint.initial_load_path")
        start = int(resume.rsplit("-", 1)[1]) if resume else 0
        stable = "--lr_scheduler.total_steps" in overrides
        seed, v = int(_arg(overrides, "--tst.data_seed")), int(_arg(overrides, "--validation.freq"))
        rows = []
        for t in range(start + 1, steps + 1):
            row = {"step": t, "loss": 1.0}
            if t % v == 0:
                decayed = t == steps and not stable
                row["val_loss"] = law(effective_steps(overrides, t), seed) if decayed else undecayed(t, seed)
            rows.append(row)
        with open(os.path.join(dump, "metrics.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        with open(record_path, "w") as f:
            json.dump({**run_settings(overrides, config, steps), "process_wall_s": 0.25 * steps}, f)
        return {"rows": read_metrics(dump)}


STEP_S = {"phase1": 0.011, "phase2": 0.010, "baseline": 0.010}


def fake_steptime(config, overrides, steps, out_path):
    result = {"overrides": overrides, "kernel_gain": 1.25, "tst_step_ratio": 1.05, "phase1_vs_baseline": 1.1,
              "control_phase2_vs_baseline": 1.0, "tst_memory_ratio": 0.9, "phase1_vs_baseline_memory": 0.8,
              "kernel_memory_gain": 1.2, "peak_memory_bytes": {k: 1000 for k in STEP_S},
              "step_s": {k: {"median": v, "q1": 0.9 * v, "q3": 1.2 * v, "iqr": 0.3 * v, "n": steps}
                         for k, v in STEP_S.items()}}
    steptime.write(result, out_path)
    return result


SUMMARY_KEYS = {"flavor", "tokens_per_param", "arm", "parameters", "equal_flops_delta", "iso_loss_speedup",
                "iso_loss_speedup_fit", "wall_clock_speedup", "frontiers", "treatment"}


@pytest.mark.usefixtures("embedded_store")
def test_frontier_json_holds_every_run_and_figure_and_a_second_call_trains_nothing(tmp_path):
    out = str(tmp_path / "study")
    train = FakeTrainer()
    result = frontier.frontier(TINY, out, quiet=True, train=train, steptime=fake_steptime)
    on_disk = json.loads(open(os.path.join(out, frontier.FRONTIER_FILE)).read())
    assert set(on_disk) >= {"corpus_sha256", "corpus", "versions", "setup", "runs", "tuning", "summary",
                            "aa_control", "old_metric", "step_times", "total_wall_s", "targets"}
    assert on_disk["corpus_sha256"] == on_disk["corpus"]["corpus_sha256"] and "torchtitan" in on_disk["versions"]
    # the tokens trained on: what the split's shard files hold (4-byte ids)
    shards = {split: sorted(glob.glob(os.path.join(on_disk["corpus"]["store"], split, "shard_*.bin")))
              for split in ("train", "val")}
    assert on_disk["corpus"]["tokens"] == {split: sum(os.path.getsize(f) for f in files) // 4
                                           for split, files in shards.items()}
    assert all(shards.values())
    assert os.path.getsize(os.path.join(out, "frontier.png")) > 10_000
    params, per_position = tiny_parameters_and_flops_per_position()
    flops_per_step = per_position * SEQ * BATCH

    # every run: 2 x 3 tuning runs; per seed 4 branches, the stable run, 2 arms, the A/A replicate
    runs = on_disk["runs"]
    assert len(runs) == 6 + 3 * 8 and len(train.trained) == 6 + 3 * 8
    for r in runs:
        assert set(r) >= {"name", "flavor", "seed", "arm", "steps", "lr", "flops", "final_val_loss", "path"}
        assert r["flops"] == r["steps"] * flops_per_step and os.path.isdir(r["path"])
    # learning rates: each arm on its own grid (the law's best: 1.2e-2 baseline, 6e-3 TST)
    tuning = on_disk["tuning"]["tiny"]
    assert {k: v["chosen"] for k, v in tuning.items()} == {"baseline": 1.2e-2, "s6_r0.3": 6e-3, "s4_r0.3": 6e-3}
    assert [t["lr"] for t in tuning["baseline"]["runs"]] == [6e-3, 1.2e-2]
    assert all(r["lr"] == 1.2e-2 for r in runs if r["arm"] in ("baseline", "aa") and r["role"] != "tuning")
    frontier_lengths = sorted(r["steps"] for r in runs if r["seed"] == 2 and r["role"] == "frontier")
    assert frontier_lengths == [20, 30, 40, 60]

    # the figures: per seed, TST s6 is worth (1.2 + 0.05·seed) x N baseline steps, exactly
    rows = on_disk["summary"]
    assert [(r["flavor"], r["arm"]) for r in rows] == [("tiny", "s6_r0.3"), ("tiny", "s4_r0.3")]
    for r in rows:
        assert set(r) == SUMMARY_KEYS
        assert r["parameters"] == params and r["tokens_per_param"] == 40 * 128 / params
        factor = {1: 1.25, 2: 1.30, 3: 1.35} if r["arm"] == "s6_r0.3" else {1: 1.12, 2: 1.14, 3: 1.16}
        iso = r["iso_loss_speedup"]
        assert set(iso) >= {"median", "ci95", "ci95_t", "bound", "per_seed"} and iso["bound"] is None
        for p in iso["per_seed"]:
            assert p["speedup"] == pytest.approx(factor[p["seed"]], rel=1e-12)
        geo = math.exp(np.mean(np.log(list(factor.values()))))
        assert iso["geometric_mean"] == pytest.approx(geo, rel=1e-12)
        # 3 seeds: both bootstrap intervals are the range of the per-seed values
        assert iso["ci95"] == iso["ci95_percentile"] == pytest.approx([min(factor.values()), max(factor.values())],
                                                                      rel=1e-12)
        delta = r["equal_flops_delta"]
        assert delta["mean"] == pytest.approx(-np.mean(np.log(list(factor.values()))), rel=1e-12)
        assert len(delta["ci95"]) == 2
        # wall-clock: x baseline step / (0.3 phase 1 + 0.7 phase 2)
        ratio = 0.010 / (0.3 * 0.011 + 0.7 * 0.010)
        assert r["wall_clock_speedup"]["median"] == pytest.approx(iso["median"] * ratio, rel=1e-12)
    times = on_disk["step_times"]["tiny"]["s6_r0.3"]
    assert times["kernel_gain"] == 1.25 and times["baseline_step_s"] == 0.010
    # the frontier's shape: the law falls 1 nat per e-fold of steps (and FLOPs) on every segment
    shape = on_disk["frontier_shape"]["tiny"]
    assert shape["segments"] == [[20, 30], [30, 40], [40, 60]] and shape["n_seeds"] == 3
    assert shape["mean_slope"] == pytest.approx([-1.0] * 3, rel=1e-12) and shape["sd_slope"] == pytest.approx([0] * 3, abs=1e-12)
    # the measurement is kept whole: quartiles and IQR of every variant, memory and its ratios
    measured = json.loads(open(os.path.join(out, "tiny", "steptime_s6_r0.3.json")).read())
    assert times["step_s"] == measured["step_s"] and times["step_s"]["phase1"]["iqr"] == pytest.approx(0.0033)
    assert times["peak_memory_bytes"] == measured["peak_memory_bytes"]
    assert (times["tst_memory_ratio"], times["phase1_vs_baseline_memory"], times["kernel_memory_gain"]) == (0.9, 0.8, 1.2)

    # the A/A control: a baseline replicate worth 1 ± 1% of N, read against the same frontiers
    aa = on_disk["aa_control"]["tiny"]
    assert set(aa) == SUMMARY_KEYS and aa["arm"] == "aa"
    want = {1: 0.99, 2: 1.01, 3: 0.99}
    assert [p["speedup"] for p in aa["iso_loss_speedup"]["per_seed"]] == pytest.approx(list(want.values()), rel=1e-12)
    assert aa["iso_loss_speedup"]["ci95_t_contains_1"] is True
    # how many seeds the control's target needs at this spread: (1.96 sd / ln 1.05)^2 of the log speedups
    sd = float(np.std(np.log(list(want.values())), ddof=1))
    assert on_disk["targets"]["aa"]["tiny"]["log_speedup_sd"] == pytest.approx(sd, rel=1e-9)
    assert math.ceil((1.96 * sd / math.log(1.05)) ** 2) == 1  # a spread this small: the 2 seeds an interval needs
    assert on_disk["targets"]["aa"]["tiny"]["seeds_for_median_within"] == 2
    frontiers = {f["seed"]: f["runs"] for f in aa["frontiers"]}
    replicates = {r["seed"]: (r["flops"], r["final_val_loss"]) for r in runs if r["arm"] == "aa"}
    assert aa["iso_loss_speedup"] == json.loads(json.dumps(aa_control(frontiers, replicates)))

    # the old metric: seed 1's undecayed stable run reaches TST s6's loss (law(50, 1)) between its
    # evaluations at steps 30 and 40, read linearly between them, over N = 40
    old = on_disk["old_metric"]["tiny"]
    assert old["arm"] == "s6_r0.3" and old["seed"] == 1 and old["first_crossing_speedup"]["bound"] is None
    target, l30, l40 = law(50, 1), undecayed(30, 1), undecayed(40, 1)
    assert l30 > target > l40
    assert old["first_crossing_speedup"]["value"] == pytest.approx((30 + 10 * (l30 - target) / (l30 - l40)) / 40,
                                                                   rel=1e-12)
    assert old["iso_loss_speedup_same_seed"]["value"] == pytest.approx(1.25, rel=1e-12)
    assert json.loads(json.dumps(result["summary"])) == rows

    # the notebooks' pair: seed 1's primary-arm run kept its checkpoints around the switch (N = 40,
    # r = 0.3: switch after step 12, saved every step, pruned to start, switch, switch + 1, end) and
    # its A/A replicate (an N-step baseline, same data order) is the baseline beside it
    assert json.load(open(os.path.join(out, pairs.PAIR_FILE)))["tst"] == os.path.join("tiny", "seed1", "s6_r0.3")
    assert pairs._pair(out) == {"tst": os.path.join(out, "tiny", "seed1", "s6_r0.3"),
                                "baseline": os.path.join(out, "tiny", "seed1", "aa")}
    assert sorted(os.listdir(os.path.join(out, "tiny", "seed1", "s6_r0.3", "checkpoint"))) == \
        ["step-1", "step-12", "step-13", "step-40"]
    assert os.listdir(os.path.join(out, "tiny", "seed2", "s6_r0.3", "checkpoint")) == ["step-40"]

    # resumable: a second call reuses every run and every step-time measurement
    train.trained.clear()

    def no_steptime(*args):
        raise AssertionError("measured again")

    again = frontier.frontier(TINY, out, quiet=True, train=train, steptime=no_steptime)
    assert train.trained == []
    # what the study cost is every run's recorded wall time (0.25 s a step here), whichever call ran
    # it; the second call's own wall time is its own
    # (tuning 6 x 40 steps; per seed the stable run to 54, branches of 20, 30, 40, 60, arms and A/A 3 x 40)
    assert on_disk["runs_wall_s"] == again["runs_wall_s"] == pytest.approx(0.25 * (6 * 40 + 3 * (54 + 150 + 120)))
    assert json.loads(json.dumps(again["summary"])) == rows


@pytest.mark.usefixtures("embedded_store")
def test_a_flavor_can_have_its_own_grids(tmp_path):
    # TST at tiny tuned on (3e-3, 6e-3), the baseline on the setup-wide (6e-3, 1.2e-2)
    setup = replace(TINY, arms=("s6_r0.3",), seeds=(1, 2), flavor_lr_grids={"tiny": {"tst": (3e-3, 6e-3)}})
    assert setup.lr_grid("tiny", "s6_r0.3") == (3e-3, 6e-3) and setup.lr_grid("tiny", "baseline") == (6e-3, 1.2e-2)
    train = FakeTrainer()
    result = frontier.frontier(setup, str(tmp_path), quiet=True, train=train, steptime=fake_steptime)
    tuning = result["tuning"]["tiny"]
    assert [t["lr"] for t in tuning["s6_r0.3"]["runs"]] == [3e-3, 6e-3]
    assert [t["lr"] for t in tuning["baseline"]["runs"]] == [6e-3, 1.2e-2]
    # the law's best TST rate, 6e-3, is now the grid's top: flagged
    assert tuning["s6_r0.3"]["chosen"] == 6e-3 and tuning["s6_r0.3"]["at_grid_edge"] is True
    assert sum(t.startswith("tiny/tune/s6_r0.3_lr") for t in train.trained) == 2
    on_disk = json.loads(open(os.path.join(tmp_path, frontier.FRONTIER_FILE)).read())
    assert on_disk["setup"]["flavor_lr_grids"] == {"tiny": {"tst": [3e-3, 6e-3]}}
    # the ETA's total counts exactly the steps trained: 4 tuning runs of N, per seed the frontier, TST, A/A
    plan = frontier.plan_flavor(setup, "tiny")
    assert frontier.total_steps([plan], setup) == 4 * plan.steps + 2 * (plan.frontier_steps() + 2 * plan.steps)


def test_a_frontier_that_cannot_bracket_tst_reports_a_bound(tmp_path, capsys):
    # a grid up to 1.0 x N: TST s6 (worth 1.25-1.35 N) beats the longest baseline of every seed
    setup = replace(TINY, factors=(0.5, 0.625, 0.75, 1.0), arms=("s6_r0.3",), tokens_per_param=2 * 0.0139,
                    evals_per_run=8)  # N = 80, lengths 40, 50, 60, 80
    result = frontier.frontier(setup, str(tmp_path), quiet=True, train=FakeTrainer(), steptime=fake_steptime)
    iso = result["summary"][0]["iso_loss_speedup"]
    assert iso["bound"] == ">" and iso["median"] is None and iso["value"] == pytest.approx(1.0)
    assert frontier.format_speedup(iso) == "> 1.00x"
    # the printed table says what the bound means, and gives the step times with their quartiles
    frontier.print_table(result)
    out = capsys.readouterr().out
    assert "> 1.00x" in out and "'> x': TST ended below the longest baseline" in out
    assert "step, median [IQR]: baseline 10.0 [9.0-12.0] ms, phase 1 11.0 [9.9-13.2] ms" in out
    assert "same kernel) 1.050x" in out and "(mean of 3 seeds): -1.000 -1.000 -1.000" in out
    # a wall-clock figure with seeds off both ends of the grid is printed as such
    both = json.loads(json.dumps(result))
    both["summary"][0]["wall_clock_speedup"] = {"median": None, "bound": "<>", "value": None}
    frontier.print_table(both)
    assert "grid too narrow both ways" in capsys.readouterr().out


@pytest.mark.usefixtures("embedded_store")
def test_reanalyse_recomputes_a_studys_figures_from_its_runs(tmp_path, capsys):
    out = str(tmp_path / "study")
    frontier.frontier(TINY, out, quiet=True, train=FakeTrainer(), steptime=fake_steptime)
    path = os.path.join(out, frontier.FRONTIER_FILE)
    study = json.loads(open(path).read())
    figures = ("summary", "aa_control", "targets", "old_metric", "frontier_checks", "frontier_shape")
    # fed its own study (whose figures the same function computed), the figures survive the JSON
    # round trip; the recomputation itself is checked below against edited runs
    again = json.loads(json.dumps(frontier.reanalyse(study, source=path)))
    assert {k: again[k] for k in figures} == {k: study[k] for k in figures}
    assert again["runs"] == study["runs"] and again["reanalysis"]["source"] == path
    # figures lost or stale are computed again from the runs: TST s6 of seed 2 recorded as worth
    # 1.5 N instead of 1.3 N moves that seed's speedup, the mean and the old metric's same-seed
    # figure only where seed 2 enters
    edited = json.loads(json.dumps(study))
    edited["summary"] = []
    run = next(r for r in edited["runs"] if r["arm"] == "s6_r0.3" and r["seed"] == 2 and r["role"] == "treatment")
    run["final_val_loss"] = law(1.5 * 40, 2)
    redone = frontier.reanalyse(edited)
    per_seed = {p["seed"]: p["speedup"] for p in redone["summary"][0]["iso_loss_speedup"]["per_seed"]}
    assert per_seed == pytest.approx({1: 1.25, 2: 1.5, 3: 1.35}, rel=1e-12)
    assert redone["summary"][1] == again["summary"][1] and redone["aa_control"] == again["aa_control"]
    assert redone["old_metric"]["tiny"]["iso_loss_speedup_same_seed"]["value"] == pytest.approx(1.25, rel=1e-12)
    # the command: written where --out says, the source untouched; in place without --out
    other = str(tmp_path / "other")
    assert bench_tool.main(["reanalyse", path, "--out", other]) == 0
    written = json.loads(open(os.path.join(other, frontier.FRONTIER_FILE)).read())
    assert {k: written[k] for k in figures} == {k: study[k] for k in figures}
    assert os.path.getsize(os.path.join(other, "frontier.png")) > 10_000
    assert json.loads(open(path).read()) == study
    assert bench_tool.main(["reanalyse", out]) == 0
    assert json.loads(open(path).read())["reanalysis"]["source"] == path
    # a study under another name is rewritten in place, its figure beside it, nothing else touched
    named = tmp_path / "other" / "frontier_quick.json"
    shutil.copy(path, named)
    before = open(os.path.join(other, frontier.FRONTIER_FILE)).read()
    assert bench_tool.main(["reanalyse", str(named)]) == 0
    assert json.loads(named.read_text())["reanalysis"]["source"] == str(named)
    assert os.path.getsize(tmp_path / "other" / "frontier_quick.png") > 10_000
    assert open(os.path.join(other, frontier.FRONTIER_FILE)).read() == before
    # --out holding another study's figures: refused, nothing written
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        bench_tool.main(["reanalyse", str(named), "--out", other])
    assert e.value.code == 2 and "holds another study's figures" in capsys.readouterr().err
    assert open(os.path.join(other, frontier.FRONTIER_FILE)).read() == before
    # not a study: a clear error naming what is missing
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"runs": []}))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        bench_tool.main(["reanalyse", str(bad)])
    assert e.value.code == 2 and "not a frontier.json: no 'plans'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        bench_tool.main(["reanalyse", str(tmp_path / "missing.json")])
    assert e.value.code == 2 and "cannot read a study" in capsys.readouterr().err


@pytest.mark.usefixtures("embedded_store")
def test_studies_of_disjoint_seeds_pool_into_the_study_of_all_seeds(tmp_path, capsys):
    paths = {}
    for name, seeds in (("a", (1, 2)), ("b", (3, 4)), ("all", (1, 2, 3, 4))):
        frontier.frontier(replace(TINY, seeds=seeds), str(tmp_path / name), quiet=True, train=FakeTrainer(),
                          steptime=fake_steptime)
        paths[name] = str(tmp_path / name / frontier.FRONTIER_FILE)
    study = {k: json.loads(open(p).read()) for k, p in paths.items()}
    merged = json.loads(json.dumps(frontier.merge_studies([study["a"], study["b"]], [paths["a"], paths["b"]])))
    for key in ("summary", "aa_control", "targets", "old_metric", "plans", "frontier_checks", "frontier_shape"):
        assert merged[key] == study["all"][key], key

    def without_paths(times):
        return {f: {arm: {k: v for k, v in t.items() if k != "path"} for arm, t in arms.items()}
                for f, arms in times.items()}

    assert without_paths(merged["step_times"]) == without_paths(study["all"]["step_times"])
    assert merged["step_times"]["tiny"]["s6_r0.3"]["path"].startswith(str(tmp_path / "a"))  # the first study's
    assert merged["seeds_by_flavor"] == {"tiny": [1, 2, 3, 4]} and merged["setup"]["seeds"] == [1, 2, 3, 4]
    assert sorted(r["name"] for r in merged["runs"]) == sorted(r["name"] for r in study["all"]["runs"])
    assert merged["runs_wall_s"] == study["a"]["runs_wall_s"] + study["b"]["runs_wall_s"]
    assert [m["seeds"] for m in merged["merged_from"]] == [[1, 2], [3, 4]]
    # the command: pooled into --out, never in place
    out = str(tmp_path / "pooled")
    assert bench_tool.main(["reanalyse", paths["a"], paths["b"], "--out", out]) == 0
    written = json.loads(open(os.path.join(out, frontier.FRONTIER_FILE)).read())
    assert written["summary"] == study["all"]["summary"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        bench_tool.main(["reanalyse", paths["a"], paths["b"]])
    assert e.value.code == 2 and "give --out" in capsys.readouterr().err

    # what cannot be pooled, refused with the reason
    def edited(change):
        other = json.loads(json.dumps(study["b"]))
        change(other)
        return other

    def lr(s):
        for r in s["runs"]:
            if r["arm"] == "s6_r0.3":
                r["lr"] = 3e-3

    def corpus(s):
        s["corpus_sha256"] = "0" * 64

    def plan(s):
        s["plans"]["tiny"]["steps"] += 10

    def code(s):
        s["training_source_sha256"] = "f" * 64

    def torch_version(s):
        s["versions"]["torch"] = "0.0"

    for change, message in ((lr, "tiny s6_r0.3: learning rate 0.003"), (corpus, "different corpora"),
                            (plan, "plan tiny differently"), (code, "different training code"),
                            (torch_version, "other software")):
        with pytest.raises(ValueError, match=message):
            frontier.merge_studies([study["a"], edited(change)], ["a", "b"])
    with pytest.raises(CorpusMismatchError):
        frontier.merge_studies([study["a"], edited(corpus)], ["a", "b"])
    with pytest.raises(ValueError, match="tiny seed 1 is in both a and all"):
        frontier.merge_studies([study["a"], study["all"]], ["a", "all"])


@pytest.mark.usefixtures("embedded_store")
def test_a_flavor_only_a_later_study_has_is_pooled_with_its_own_figures_and_step_times(tmp_path):
    # a: tiny seeds 1-2; b: tiny seeds 3-4 and debug (only b has it) seeds 3-4. Pooled, tiny's
    # figures are those of a study of tiny seeds 1-4, and debug's are b's own, step times included
    # (taken from b: the first study has none for debug)
    setups = {"a": replace(TINY, seeds=(1, 2)), "b": replace(TINY, flavors=("tiny", "debug"), seeds=(3, 4)),
              "tiny_all": replace(TINY, seeds=(1, 2, 3, 4))}
    study = {}
    for name, setup in setups.items():
        frontier.frontier(setup, str(tmp_path / name), quiet=True, train=FakeTrainer(), steptime=fake_steptime)
        study[name] = json.loads(open(tmp_path / name / frontier.FRONTIER_FILE).read())
    merged = json.loads(json.dumps(frontier.merge_studies([study["a"], study["b"]], ["a", "b"])))

    def rows(s, flavor):
        return [r for r in s["summary"] if r["flavor"] == flavor]

    assert merged["seeds_by_flavor"] == {"tiny": [1, 2, 3, 4], "debug": [3, 4]}
    assert rows(merged, "tiny") == rows(study["tiny_all"], "tiny")
    assert rows(merged, "debug") == rows(study["b"], "debug") and len(rows(merged, "debug")) == 2
    for key in ("aa_control", "old_metric", "plans"):
        assert merged[key]["tiny"] == study["tiny_all"][key]["tiny"], key
        assert merged[key]["debug"] == study["b"][key]["debug"], key
    assert merged["step_times"]["debug"] == study["b"]["step_times"]["debug"]
    assert merged["step_times"]["debug"]["s6_r0.3"]["path"].startswith(str(tmp_path / "b"))
    assert merged["step_times"]["tiny"]["s6_r0.3"]["path"].startswith(str(tmp_path / "a"))
    assert merged["targets"]["largest_flavor"] == "debug"
    assert merged["targets"] == study["b"]["targets"] | {"aa": merged["targets"]["aa"]}
    assert merged["targets"]["aa"]["debug"] == study["b"]["targets"]["aa"]["debug"]


def test_the_coverage_command_writes_the_simulation(tmp_path, capsys):
    assert bench_tool.main(["coverage", "--n-seeds", "3,5", "--reps", "100", "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / bench_tool.COVERAGE_FILE).read_text())
    assert written == json.loads(json.dumps(interval_coverage((3, 5), reps=100)))
    assert "bootstrap, expanded" in capsys.readouterr().out
    for argv, message in ((["--n-seeds", "1,5"], "n_seeds"), (["--n-seeds", "a"], "--n-seeds"),
                          (["--reps", "10"], "reps")):
        with pytest.raises(SystemExit) as e:
            bench_tool.main(["coverage", *argv, "--out", str(tmp_path)])
        assert e.value.code == 2 and message in capsys.readouterr().err, argv


def _refuse_training(*args, **kwargs):
    raise AssertionError("trained despite bad input")


@pytest.mark.parametrize("change, message", [
    ({"flavors": ("tiny", "nope")}, r"flavors: unknown flavor 'nope'.*allowed: \[.*'micro'"),
    ({"arms": ("s6_r0.3", "s8")}, r"arms: unknown arm 's8'; allowed: \['s4_r0.3', 's6_r0.3'\]"),
    ({"seeds": (1,)}, r"seeds: at least 2 are needed for a confidence interval, got \(1,\)"),
    ({"factors": (0.5, 1.0, 2.0)}, r"factors must be a list of at least 4 positive numbers"),
    ({"factors": (0.5, 2.0, 1.0, 4.0)}, r"factors must be sorted, strictly increasing"),
    ({"factors": (1.5, 2.0, 3.0, 4.0)}, r"factors must bracket 1"),
    ({"flavors": ("tiny", "micro")}, r"flavors must share a vocabulary size.*'tiny': 2048, 'micro': 512"),
    ({"flavor_lr_grids": {"mini": {"tst": (1e-3,)}}}, r"flavor_lr_grids: 'mini' is not one of the study's flavors"),
    ({"flavor_lr_grids": {"tiny": {"arm": (1e-3,)}}}, r"flavor_lr_grids\['tiny'\] must map 'baseline' and/or 'tst'"),
    ({"flavor_lr_grids": {"tiny": {"tst": (1e-3, -1.0)}}}, r"flavor_lr_grids\['tiny'\]\['tst'\] must hold positive"),
])
def test_bad_setups_are_refused_before_any_training(tmp_path, change, message):
    setup = replace(TINY, **change)
    with pytest.raises(ValueError, match=message):
        frontier.frontier(setup, str(tmp_path / "out"), train=_refuse_training, steptime=_refuse_training)
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("embedded_store")
def test_an_evaluation_larger_than_the_val_split_is_refused_before_any_training(tmp_path):
    # the most validation steps the held-out split holds, counted from the store itself: plain
    # samples of seq_len + 1 tokens, batch of them a step
    val_tokens = len(TokenStore(EMBEDDED_STORE, "val"))
    most = val_tokens // (SEQ + 1) // BATCH
    with pytest.raises(ValueError, match=rf"val_steps = {most + 1} x batch = {BATCH} needs {(most + 1) * BATCH} "
                                         rf"held-out samples of seq_len \+ 1 = {SEQ + 1} tokens.*"
                                         rf"lower val_steps to at most {most}$"):
        frontier.frontier(replace(TINY, val_steps=most + 1), str(tmp_path / "out"), train=_refuse_training,
                          steptime=_refuse_training)
    assert not (tmp_path / "out").exists()
    # at the limit the check passes, and the study goes on to train
    with pytest.raises(AssertionError, match="trained despite bad input"):
        frontier.frontier(replace(TINY, val_steps=most), str(tmp_path / "out"), train=_refuse_training,
                          steptime=_refuse_training)
    # where torchtitan's validator (the dataset our spec gives it) draws the line too
    def validation(steps):
        config = SimpleNamespace(validation=SimpleNamespace(dataset_path=EMBEDDED_STORE, seq_len=SEQ,
                                                            local_batch_size=BATCH, steps=steps))
        return build_validation_dataset(config, dp_world_size=1, dp_rank=0, vocab_size=2048)

    assert len(list(validation(most))) == most * BATCH
    with pytest.raises(ValueError, match=f"needs {(most + 1) * BATCH} samples per rank"):
        validation(most + 1)


def test_the_gpu_preset_evaluates_within_its_corpus(tmp_path):
    # the preset's first run would otherwise stop at its validator, on a GPU nobody here can test
    # on: its store (the pinned large corpus at the small flavor's vocab) built afresh (~15 s)
    plan = frontier.plan_flavor(frontier.CUDA, "small")
    store = tmp_path / "pinned_v2048"
    manifest = ensure_store(store, vocab_size=flavors_of(frontier.CUDA.model_name)["small"].vocab_size,
                            include_site_packages=True)
    val_tokens = manifest["splits"]["val"]["tokens"]
    bench.check_validation_split(val_tokens, plan.bench, str(store))
    assert frontier.CUDA.val_steps * frontier.CUDA.batch * (frontier.CUDA.seq_len + 1) <= val_tokens
    with pytest.raises(ValueError, match="lower val_steps"):  # what the preset asked for before
        bench.check_validation_split(val_tokens, replace(plan.bench, val_steps=32), str(store))


@pytest.mark.usefixtures("embedded_store")
def test_the_plan_counts_what_the_study_then_trains(tmp_path, monkeypatch):
    # the plan, without a CUDA device for a CUDA setup (it trains nothing) ...
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plan = frontier.study_plan(replace(TINY, device="cuda"), str(tmp_path / "study"))
    assert json.loads((tmp_path / "study" / frontier.PLAN_FILE).read_text()) == json.loads(json.dumps(plan))
    # ... against the study itself (same folder, same corpus), counting its processes and steps
    trainer, timed, steps = FakeTrainer(), [], []

    def train(*args, **kwargs):
        result = trainer(*args, **kwargs)
        steps.append(len(result["rows"]))  # steps this process trained (a branch resumes mid-run)
        return result

    def time_steps(*args, **kwargs):
        timed.append(args)
        return fake_steptime(*args, **kwargs)

    frontier.frontier(TINY, str(tmp_path / "study"), quiet=True, train=train, steptime=time_steps)
    assert plan["processes"] == plan["flavors"]["tiny"]["processes"] == len(trainer.trained) + len(timed)
    assert plan["optimizer_steps"] == plan["flavors"]["tiny"]["optimizer_steps"] == sum(steps)
    assert plan["flavors"]["tiny"]["train_epochs"] == frontier.train_epochs(
        frontier.plan_flavor(TINY, "tiny"), TINY, len(TokenStore(EMBEDDED_STORE, "train")))


def test_the_plan_command_trains_nothing_and_needs_no_gpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(frontier, "frontier", _refuse_training)
    monkeypatch.setattr(frontier, "study_plan", lambda setup, out: (seen.append((setup, out)), {
        "flavors": {}, "optimizer_steps": 7, "processes": 3})[1])
    seen = []
    assert bench_tool.main(["--device", "cuda", "--plan", "--out", str(tmp_path)]) == 0
    assert seen == [(frontier.CUDA, str(tmp_path))]
    assert "7 optimizer steps in 3 processes (trained nothing)" in capsys.readouterr().out


def test_train_epochs_count_what_each_run_reads():
    plan = frontier.plan_flavor(frontier.QUICK, "micro")
    assert (plan.steps, max(plan.lengths)) == (680, 2720)
    # 16 x 128 positions a step; r = 0.3 of 680 steps: 204 bag steps, then 476 token steps
    epochs = frontier.train_epochs(plan, frontier.QUICK, train_tokens=1_000_000)
    assert epochs == {"longest_baseline": 2720 * 2048 / 1e6, "s6_r0.3": (204 * 6 + 476) * 2048 / 1e6,
                      "s4_r0.3": (204 * 4 + 476) * 2048 / 1e6}


def test_cuda_without_a_gpu_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device 'cuda': torch finds no CUDA device.*allowed here: 'cpu'"):
        frontier.frontier(frontier.CUDA, str(tmp_path), train=_refuse_training, steptime=_refuse_training)


@pytest.mark.usefixtures("embedded_store")
def test_a_folder_of_another_corpus_is_refused_before_any_training(tmp_path):
    out = tmp_path / "study"
    bench.claim_output_folder(str(out), {"corpus_sha256": "b" * 64, "tokenizer_sha256": "t" * 64,
                                         "val_fraction": 0.02, "shuffle_seed": 0, "source": "folder:/x", "store": "/x"})
    with pytest.raises(CorpusMismatchError, match="holds results of another corpus"):
        frontier.frontier(TINY, str(out), train=_refuse_training, steptime=_refuse_training)


def test_the_command_runs_the_frontier_by_default_and_the_pair_on_request(tmp_path, monkeypatch, capsys):
    seen = []

    def fake_frontier(setup, out, quiet=False):
        seen.append(("frontier", setup, out))
        raise SystemExit(0)

    def fake_pair(setup, out, quiet=False):
        seen.append(("pair", setup, out))
        raise SystemExit(0)

    monkeypatch.setattr(frontier, "frontier", fake_frontier)
    monkeypatch.setattr(bench, "bench", fake_pair)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    corpus = tmp_path / "texts"
    corpus.mkdir()
    for argv in (["frontier"], ["--quick"], ["--quick", "--corpus", str(corpus)], ["pair", "--quick"],
                 ["--seeds", "4,5", "--arms", "s4_r0.3", "--factors", "0.5,1,2,4"],
                 ["--flavors", "mini", "--baseline-lr-grid", "1e-2"]):
        with pytest.raises(SystemExit):
            bench_tool.main(argv)
    assert [(kind, out) for kind, _, out in seen] == [
        ("frontier", os.path.join("outputs", "frontier")), ("frontier", os.path.join("outputs", "frontier_quick")),
        ("frontier", os.path.join("outputs", "frontier_quick-texts")), ("pair", os.path.join("outputs", "bench_quick")),
        ("frontier", os.path.join("outputs", "frontier")), ("frontier", os.path.join("outputs", "frontier"))]
    # every folder the command writes by default is one the notebooks look in
    assert all(out in pairs.BENCH_DIRS for kind, _, out in seen if not out.endswith("-texts"))
    assert os.path.join("outputs", "frontier") in pairs.FRONTIER_DIRS
    # the preset's per-flavor grids: kept for the flavors still studied, replaced by a grid given here
    default, narrowed = frontier.DEFAULT, seen[5][1]
    assert default.lr_grid("micro", "baseline") != default.lr_grid("mini", "baseline")
    assert default.lr_grid("mini", "s6_r0.3") != default.lr_grid("micro", "s6_r0.3")
    assert narrowed.flavor_lr_grids == {"mini": {"tst": default.lr_grid("mini", "s6_r0.3")}}
    assert narrowed.lr_grid("mini", "baseline") == (1e-2,)
    assert narrowed.lr_grid("mini", "s4_r0.3") == default.lr_grid("mini", "s4_r0.3")
    assert seen[0][1] == frontier.DEFAULT and seen[1][1] == frontier.QUICK and seen[3][1] == bench.QUICK
    assert seen[2][1].dataset == "folder" and seen[2][1].dataset_path == str(corpus)
    assert (seen[4][1].seeds, seen[4][1].arms, seen[4][1].factors) == ((4, 5), ("s4_r0.3",), (0.5, 1.0, 2.0, 4.0))
    for argv, option in ((["--flavors", "nope"], "flavors"), (["--arms", "s8"], "arms"), (["--seeds", "1"], "seeds"),
                         (["--seeds", "a,b"], "--seeds"), (["--factors", "0.5,1,2"], "factors"),
                         (["--device", "cuda"], "device 'cuda'"), (["--device", "tpu"], "--device")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            bench_tool.main(argv)
        assert e.value.code == 2 and option in capsys.readouterr().err, argv
    assert len(seen) == 6  # nothing started


# -- real training --------------------------------------------------------------------------------
def in_process_train(name, overrides, out_dir, steps, progress=None, config=BASE_CONFIG, reuse=False):
    """run_training without the process start: the same Trainer on the same command line, the same
    run record."""
    dump = os.path.join(out_dir, name)
    record_path = os.path.join(dump, RUN_RECORD)
    if reuse and (done := finished_run(record_path, overrides, config, steps)) is not None:
        return done
    shutil.rmtree(dump, ignore_errors=True)
    os.makedirs(dump)
    job = ConfigManager().parse_args(["--job.config_file", config, "--job.dump_folder", dump, *overrides])
    trainer = Trainer(job)
    try:
        trainer.train()
    finally:
        trainer.close()
    record = {"name": name, "dump": dump, "process_wall_s": None, "peak_memory_gib": None,
              "command": training_command(config, dump, overrides), **run_settings(overrides, config, steps)}
    with open(record_path, "w") as f:
        json.dump(record, f)
    return dict(record, rows=read_metrics(dump))


def in_process_steptime(config, overrides, steps, out_path):
    result = steptime.measure(config, overrides, steps=steps, warmup=1)
    steptime.write(result, out_path)
    return result


REAL = replace(TINY, arms=("s6_r0.3",), seeds=(1, 2), baseline_lr_grid=(1e-2,), tst_lr_grid=(1e-2,))


def _real_study(rank, world_size, out):
    frontier.frontier(REAL, out, quiet=True, train=in_process_train, steptime=in_process_steptime)


@pytest.mark.slow
@pytest.mark.usefixtures("embedded_store")
def test_the_protocol_trains_for_real_and_resumes_through_run_training(tmp_path, monkeypatch):
    out = str(tmp_path / "study")
    run_on_processes(_real_study, 1, out)  # one process: torchtitan imported once
    first = json.loads(open(os.path.join(out, frontier.FRONTIER_FILE)).read())
    runs = first["runs"]
    # 1-rate grids: no tuning runs; per seed 4 branches, the stable run, TST, the A/A replicate
    assert first["tuning"]["tiny"]["baseline"]["runs"] == [] and len(runs) == 2 * 7
    _, per_position = tiny_parameters_and_flops_per_position()
    for r in runs:
        last = read_metrics(r["path"])[-1]
        # the stable run (54 steps) logs and evaluates every 10: its loss is its last evaluation's
        assert last["step"] == r.get("last_eval_step", r["steps"]) and r["final_val_loss"] == last["val_loss"]
        # torchtitan's own FLOPs count agrees with parameters x positions
        assert last["flops_seen"] == last["step"] * per_position * SEQ * BATCH
        args = json.load(open(os.path.join(r["path"], RUN_RECORD)))["overrides"]
        # the seeds reached the runs: init seed (A/A: 1000 + seed) and data order
        init = frontier.AA_SEED_OFFSET + r["seed"] if r["arm"] == "aa" else r["seed"]
        assert (_arg(args, "--debug.seed"), _arg(args, "--tst.data_seed")) == (str(init), str(r["seed"]))
    finals = {(r["seed"], r["arm"], r["steps"]): r["final_val_loss"] for r in runs}
    assert len(set(finals.values())) == len(finals)  # every run its own result
    # the stable run kept only the checkpoints its branches start from (lengths 20 30 40 60)
    stable = os.path.join(out, "tiny", "seed1", "baseline", "stable_to_54", "checkpoint")
    assert sorted(os.listdir(stable)) == ["step-18", "step-27", "step-36", "step-54"]
    times = first["step_times"]["tiny"]["s6_r0.3"]
    assert times["steps_timed_each"] == 4 and times["baseline_step_s"] > 0
    for variant in ("phase1", "phase2", "baseline", "next_token_chunked"):
        q = times["step_s"][variant]
        assert q["q1"] <= q["median"] <= q["q3"] and q["iqr"] == pytest.approx(q["q3"] - q["q1"], rel=1e-12)
    assert times["tst_memory_ratio"] == pytest.approx(
        times["peak_memory_bytes"]["phase1"] / times["peak_memory_bytes"]["next_token_chunked"], rel=1e-12)
    # the rows are summary_row's reading of these runs -- or, where a seed's longer baseline ended
    # higher than a shorter one (runs of 20-60 steps of 128 positions are that noisy), its reason
    frontiers = {s: sorted((r["flops"], r["final_val_loss"]) for r in runs if r["seed"] == s and r["role"] == "frontier")
                 for s in (1, 2)}
    for arm, row, step_s in (("s6_r0.3", first["summary"][0], times), ("aa", first["aa_control"]["tiny"], None)):
        assert row["arm"] == arm
        treatment = {r["seed"]: (r["flops"], r["final_val_loss"]) for r in runs if r["arm"] == arm}
        step = {} if step_s is None else {"baseline_step_s": step_s["baseline_step_s"],
                                          "tst_mean_step_s": step_s["tst_mean_step_s"]}
        try:
            want = json.loads(json.dumps(summary_row("tiny", row["tokens_per_param"], arm, frontiers, treatment,
                                                     parameters=368_960, **step)))
        except ValueError as e:
            assert row["error"] == str(e) and row["iso_loss_speedup"] is None
        else:
            assert row == want and set(row) == SUMMARY_KEYS

    # One run lost: the study again, through run_training's subprocess. Only that run trains, and
    # it ends where the in-process run ended, bit for bit.
    lost = os.path.join(out, "tiny", "seed2", "s6_r0.3")
    shutil.rmtree(lost)
    started = []

    def counted(name, overrides, out_dir, steps, progress=None, config=BASE_CONFIG, reuse=False):
        if finished_run(os.path.join(out_dir, name, RUN_RECORD), overrides, config, steps) is None:
            started.append(name)
        return run_training(name, overrides, out_dir, steps, progress, config=config, reuse=reuse)

    def no_steptime(*args):
        raise AssertionError("measured again")

    again = frontier.frontier(REAL, out, quiet=True, train=counted, steptime=no_steptime)
    assert started == ["tiny/seed2/s6_r0.3"]
    assert os.path.exists(os.path.join(lost, "train.log"))  # written by the subprocess
    assert json.loads(json.dumps(again["summary"])) == first["summary"]
    assert json.loads(json.dumps(again["runs"])) == runs


def test_the_control_reports_how_many_seeds_its_target_needs_at_its_spread():
    speedups = [0.8, 1.0, 1.25, 1.1, 0.95]
    aa = {"mini": {"iso_loss_speedup": {"median": 1.01, "ci95_contains_1": True, "ci95_t_contains_1": True,
                                        "per_seed": [{"seed": i, "speedup": v} for i, v in enumerate(speedups)]}}}
    got = frontier._targets([], aa, "mini")["aa"]["mini"]
    logs = [math.log(v) for v in speedups]
    mean = sum(logs) / len(logs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (len(logs) - 1))
    assert got["log_speedup_sd"] == pytest.approx(sd, rel=1e-12) and got["median_within"] is True
    # (1.96 x 0.1665 / ln 1.05)^2 = 44.7: 45 seeds for the geometric mean to fall within 1.05 of 1
    assert got["seeds_for_median_within"] == math.ceil((1.96 * sd / math.log(1.05)) ** 2) == 45
