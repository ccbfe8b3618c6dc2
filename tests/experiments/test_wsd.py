"""WSD cool-down branches: the branch points against torchtitan's own learning-rate schedule, and a
branch against a from-scratch run of the same length (validation losses and weights bit for bit)."""

import json
import os
import pickle

import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from torchtitan.components.lr_scheduler import build_lr_schedulers
from torchtitan.config import LRScheduler

from tests.helpers.trainer import Plan, compared, metrics_rows, run_plans
from tst_titan.experiments import wsd
from tst_titan.experiments.runner import Progress, run_settings


def torchtitan_lrs(steps, warmup, decay_ratio, total_steps=None):
    """The learning rate (base 1) of trainer steps 1..steps, as torchtitan's trainer sees it: an
    optimizer with lr 1 under torchtitan's schedulers, stepped once per training step."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    config = LRScheduler(warmup_steps=warmup, decay_ratio=decay_ratio, decay_type="linear",
                         min_lr_factor=0.0, total_steps=total_steps)
    schedulers = build_lr_schedulers([opt], config, steps)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedulers.step()
    return lrs


@pytest.mark.parametrize("tst_steps, warmup", [(930, 47), (1860, 93), (40, 2)])
def test_branch_points_match_torchtitans_schedule(tst_steps, warmup):
    lengths = wsd.scaled_lengths(tst_steps)
    plan = wsd.plan_wsd(lengths, warmup)
    stable = torchtitan_lrs(max(lengths), warmup, 0.1, total_steps=plan.horizon)
    for b in plan.branches:
        run = torchtitan_lrs(b.steps, warmup, 0.1)
        k = b.branch_point
        # steps 1..k+1 (the checkpoint at k holds the rate of step k+1): the stable run's rates,
        # bit for bit; step k+2: the first decayed one
        assert run[: k + 1] == stable[: k + 1], b
        assert run[k] == 1.0 > run[k + 1], b
        # the decay: non-increasing over the run's last round(0.1 N) - 1 steps (+1 virtual one)
        assert run[k + 1:] == sorted(run[k + 1:], reverse=True) and len(run) - k - 1 == round(0.1 * b.steps) - 1
    # the stable run never decays before the step after its last segment ends
    end = max(plan.segment_ends) + 1
    assert stable[:end] == [min(1.0, (t + 1) / warmup) for t in range(end)]
    # the family costs the stable run plus each branch's last round(0.1 N) steps: about 1.2x the
    # longest run for this grid, under 0.4x training every length from scratch
    longest = max(lengths)
    assert plan.total_steps() == longest - round(0.1 * longest) + sum(round(0.1 * n) for n in lengths)
    assert plan.total_steps() < 1.25 * longest and plan.total_steps() < 0.4 * sum(lengths)


def test_lengths_that_cannot_decay_or_repeat_are_refused():
    with pytest.raises(ValueError, match=r"round\(12 x 0.1\) = 1 step"):
        wsd.branch_point(12, 2)
    assert wsd.branch_point(30, 27) == 27  # 27 warmup + 3 decay steps fit 30
    with pytest.raises(ValueError, match="warm up for 28 steps and decay for 3"):
        wsd.branch_point(30, 28)
    with pytest.raises(ValueError, match="distinct"):
        wsd.plan_wsd([20, 20], 2)
    assert wsd.scaled_lengths(930, multiple_of=31) == [465, 651, 930, 1302, 1860, 2635, 3720]


def test_run_wsd_needs_every_length_evaluated_at_its_end(tmp_path):
    with pytest.raises(ValueError, match=r"validation_freq = 4 does not divide the run length\(s\) \[30\]"):
        wsd.run_wsd([], [20, 30], 2, str(tmp_path), validation_freq=4, train=None)


def _found(obj, key):
    """Every value of ``key`` in a nested checkpoint state (pickled parts unpickled)."""
    if isinstance(obj, bytes):
        obj = pickle.loads(obj)
    if isinstance(obj, dict):
        return ([obj[key]] if key in obj else []) + [v for o in obj.values() for v in _found(o, key)]
    if isinstance(obj, (list, tuple)):
        return [v for o in obj for v in _found(o, key)]
    return []


def _weights(checkpoint_dir, tmp_path):
    out = tmp_path / (os.path.basename(os.path.dirname(os.path.dirname(checkpoint_dir))) + ".pt")
    dcp_to_torch_save(checkpoint_dir, out)
    return torch.load(out, weights_only=False)


@pytest.mark.slow
def test_a_branch_equals_the_run_trained_from_scratch(tmp_path, embedded_store):
    lengths, warmup = [20, 30, 40], 3
    plan = wsd.plan_wsd(lengths, warmup)
    one = wsd.plan_wsd(lengths, warmup, one_stable_run=True)
    assert [b.branch_point for b in plan.branches] == [18, 27, 36]
    assert one.segment_ends == (36,) and one.checkpoint_interval == 9  # gcd(18, 27, 36)
    base = str(tmp_path / "wsd")
    one_base = os.path.join(base, "one")  # the stable run as one process, its branches
    # another initialisation and data order than the defaults, windows shuffled as the benchmark
    # reads them: the seeds and the order travel through resumes
    seeds = ["--debug.seed", "3", "--tst.data_seed", "2", "--tst.window_order", "shuffled",
             "--validation.freq", "5", "--metrics.log_freq", "1"]
    runs = wsd.wsd_runs(plan, base, seeds)
    assert [r.name for r in runs] == ["stable_to_18", "stable_to_27", "stable_to_36", "wsd_20", "wsd_30", "wsd_40"]
    one_runs = wsd.wsd_runs(one, one_base, seeds)
    assert [r.name for r in one_runs] == ["stable_to_36", "wsd_20", "wsd_30", "wsd_40"]
    assert all(wsd.checkpoint_of(one_base, "stable_to_36", k) in r.overrides for r, k in zip(one_runs[1:], (18, 27, 36)))
    scratch = [Plan(f"scratch_{n}", [*seeds, *wsd.branch_overrides(plan, n, None)], config="debug_baseline.toml")
               for n in lengths]
    run_plans(base, [Plan(r.name, r.overrides, config="debug_baseline.toml") for r in runs] + scratch
              + [Plan(f"one/{r.name}", r.overrides, config="debug_baseline.toml") for r in one_runs])
    # the one stable run saved a checkpoint every 9 steps, all kept (run_wsd prunes the 9th later)
    saved = sorted(os.listdir(os.path.join(one_base, "stable_to_36", "checkpoint")))
    assert saved == ["step-18", "step-27", "step-36", "step-9"]

    for n in lengths:
        k = next(b.branch_point for b in plan.branches if b.steps == n)
        want = metrics_rows(os.path.join(base, f"scratch_{n}"))
        reference = _weights(wsd.checkpoint_of(base, f"scratch_{n}", n), tmp_path)
        for p, folder in ((plan, base), (one, one_base)):
            branch_rows = metrics_rows(os.path.join(folder, wsd.branch_name(n)))
            assert branch_rows[0]["step"] == k + 1  # it resumed at the branch point, it did not retrain
            got = wsd.wsd_rows(p, lambda name: metrics_rows(os.path.join(folder, name)), n)
            assert [r["step"] for r in got] == list(range(1, n + 1))
            assert compared(got) == compared(want)  # losses, lr, grad norms, val losses: exactly
            vals = [(r["step"], r["val_loss"]) for r in got if "val_loss" in r]
            assert [s for s, _ in vals] == [1, *range(5, n + 1, 5)]
            assert vals == [(r["step"], r["val_loss"]) for r in want if "val_loss" in r]
            converted = tmp_path / f"converted_{os.path.basename(folder)}"
            converted.mkdir(exist_ok=True)
            branch = _weights(wsd.checkpoint_of(folder, wsd.branch_name(n), n), converted)
            assert branch.keys() == reference.keys() and len(branch) > 5
            for key in reference:
                assert torch.equal(branch[key], reference[key]), (folder, key)
    # the stable run's checkpoint carries its data order (tst.data_seed reached the dataset)
    state = _weights(wsd.checkpoint_of(base, "stable_to_18", 18), tmp_path)
    assert _found(state, "data_seed") == [2] and _found(state, "sample_index") == [18 * 4]
    assert _found(state, "window_order") == ["shuffled"] * 2  # the dataset's state and its [tst] settings
    # the runs differ from each other (the comparison above could not pass by accident)
    finals = [metrics_rows(os.path.join(base, f"scratch_{n}"))[-1]["val_loss"] for n in lengths]
    assert len(set(finals)) == 3


def _fake_train(calls):
    """A stand-in for run_training that writes what it would: metrics rows (val every 5 steps),
    the run record, a checkpoint at the last step and every ``checkpoint.interval`` steps."""

    def fake_train(name, overrides, out_dir, steps, progress=None, config=None, reuse=False):
        calls.append((name, reuse))
        if progress:  # as run_training counts: the run's training.steps
            progress.done += steps
        dump = os.path.join(out_dir, name)
        interval = int(overrides[len(overrides) - 1 - overrides[::-1].index("--checkpoint.interval") + 1])
        for k in {steps, *range(interval, steps, interval)}:
            os.makedirs(os.path.join(dump, "checkpoint", f"step-{k}"), exist_ok=True)
            open(os.path.join(dump, "checkpoint", f"step-{k}", ".metadata"), "w").close()
        start = 0 if "--checkpoint.initial_load_path" not in overrides else int(
            overrides[overrides.index("--checkpoint.initial_load_path") + 1].rsplit("-", 1)[1])
        rows = [{"step": s, "loss": float(s), **({"val_loss": 10.0 - s / 10} if s % 5 == 0 else {})}
                for s in range(start + 1, steps + 1)]
        with open(os.path.join(dump, "metrics.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        with open(os.path.join(dump, "bench_run.json"), "w") as f:
            json.dump(run_settings(overrides, config, steps), f)
        return {"rows": rows}

    return fake_train


def test_run_wsd_reuses_finished_runs_and_retrains_after_a_new_segment(tmp_path):
    """The bookkeeping of run_wsd with a stand-in trainer that writes what run_training would."""
    calls = []
    fake_train = _fake_train(calls)
    out = str(tmp_path)
    result = wsd.run_wsd(["--x"], [20, 30], 2, out, validation_freq=5, train=fake_train, quiet=True)
    assert calls == [("stable_to_18", False), ("stable_to_27", False), ("wsd_20", False), ("wsd_30", False)]
    assert result["runs"]["20"]["branch_point"] == 18 and result["runs"]["20"]["final_val_loss"] == 8.0
    assert [r["step"] for r in result["runs"]["30"]["rows"]] == list(range(1, 31))
    calls.clear()
    wsd.run_wsd(["--x"], [20, 30], 2, out, validation_freq=5, train=fake_train, quiet=True)
    assert calls == [("wsd_20", True), ("wsd_30", True)]  # segments found finished; branches reusable
    calls.clear()
    os.remove(os.path.join(out, "stable_to_27", "checkpoint", "step-27", ".metadata"))
    wsd.run_wsd(["--x"], [20, 30], 2, out, validation_freq=5, train=fake_train, quiet=True)
    assert calls == [("stable_to_27", False), ("wsd_20", True), ("wsd_30", False)]


def test_one_stable_run_checkpoints_every_branch_point_and_is_reused(tmp_path):
    """The stable run as one process: interval = gcd of the branch points, the checkpoints no
    branch needs deleted, reused when complete, trained again when a branch point's is missing."""
    calls = []
    fake_train = _fake_train(calls)
    out = str(tmp_path)
    progress = Progress(0, quiet=True)
    result = wsd.run_wsd(["--x"], [20, 30, 40], 2, out, validation_freq=5, train=fake_train, quiet=True,
                         one_stable_run=True, progress=progress)
    # the study's progress counts the steps trained: the stable run's 36, each branch's decay
    assert progress.done == result["total_steps"] == 36 + 2 + 3 + 4
    assert calls == [("stable_to_36", False), ("wsd_20", False), ("wsd_30", False), ("wsd_40", False)]
    assert result["checkpoint_interval"] == 9 and result["stable_runs"] == ["stable_to_36"]
    assert sorted(os.listdir(os.path.join(out, "stable_to_36", "checkpoint"))) == ["step-18", "step-27", "step-36"]
    with open(os.path.join(out, "wsd_30", "bench_run.json")) as f:
        branch = json.load(f)["overrides"]
    assert branch[branch.index("--checkpoint.initial_load_path") + 1] == wsd.checkpoint_of(out, "stable_to_36", 27)
    # rows of the 30-step run: the stable run's up to 27, then its branch's
    assert [r["step"] for r in result["runs"]["30"]["rows"]] == list(range(1, 31))
    assert result["runs"]["20"]["final_val_loss"] == 8.0 and result["runs"]["40"]["branch_point"] == 36
    calls.clear()
    progress = Progress(0, quiet=True)
    wsd.run_wsd(["--x"], [20, 30, 40], 2, out, validation_freq=5, train=fake_train, quiet=True, one_stable_run=True,
                progress=progress)
    assert calls == [("wsd_20", True), ("wsd_30", True), ("wsd_40", True)]
    assert progress.done == 36 + 2 + 3 + 4  # the reused stable run counted too
    calls.clear()
    os.remove(os.path.join(out, "stable_to_36", "checkpoint", "step-18", ".metadata"))
    wsd.run_wsd(["--x"], [20, 30, 40], 2, out, validation_freq=5, train=fake_train, quiet=True, one_stable_run=True)
    assert calls == [("stable_to_36", False), ("wsd_20", False), ("wsd_30", False), ("wsd_40", False)]
