"""Resume is exact across the phase switch, the phase survives a partial load, checkpoints carry
the [tst] settings, runs are deterministic, and a NaN loss stops the run.

The runs are shared (the ``one``, ``fsdp`` and ``twins`` families of tests/helpers/plans.py): one
uninterrupted run saves a full checkpoint after every step; resumed runs load step K into a fresh
dump folder and must log the same rows (tests/helpers/trainer.py's COMPARED keys), bit for bit,
from step K+1 on.
"""

import re

import pytest

from tests.helpers.plans import RESUME_STEPS
from tests.helpers.trainer import compared

pytestmark = pytest.mark.usefixtures("embedded_store")


def test_uninterrupted_run_switches_after_step_four(one):
    rows = one.rows("full")
    assert [r["phase"] for r in rows] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert [r["step"] for r in rows if "val_loss" in r] == [1, 4, 8]
    assert all(r["epoch"] == 0 for r in rows)


@pytest.mark.parametrize("step", RESUME_STEPS, ids=["mid-phase-1", "at-switch", "after-switch"])
def test_resume_is_bit_exact_one_process(one, step):
    resumed = one.rows(f"resume-{step}")
    assert resumed and resumed[0]["step"] == step + 1
    assert compared(resumed) == compared(one.rows("full"), after=step)


@pytest.mark.slow
@pytest.mark.parametrize("step", RESUME_STEPS, ids=["mid-phase-1", "at-switch", "after-switch"])
def test_resume_is_bit_exact_fsdp2(fsdp, step):
    full = fsdp.rows("full")
    assert [r["phase"] for r in full] == [1, 1, 1, 1, 2, 2, 2, 2]
    resumed = fsdp.rows(f"resume-{step}")
    assert resumed and resumed[0]["step"] == step + 1
    assert compared(resumed) == compared(full, after=step)


@pytest.mark.parametrize("step", [2, 6])
def test_phase_follows_the_step_without_the_dataloader_state(one, step):
    # checkpoint.exclude_from_loading = dataloader: the lr_scheduler state says the step, the
    # dataset fast-forwards to step x samples per step: the same data, bit-exact losses.
    name = f"no-dataloader-{step}"
    assert compared(one.rows(name)) == compared(one.rows("full"), after=step)
    log = one.log(name)
    assert "dataloader state was not loaded" in log
    assert f"resumed step {step}" in log and f"sample {step * 4}" in log
    assert f"phase {1 if step < 4 else 2}" in log


@pytest.mark.slow
def test_phase_follows_the_step_without_the_dataloader_state_fsdp2(fsdp):
    assert compared(fsdp.rows("no-dataloader-4")) == compared(fsdp.rows("full"), after=4)


def test_excluding_dataloader_and_scheduler_stops_the_run(one):
    error = one.error("no-dataloader-no-scheduler-6")
    assert error.startswith("RuntimeError: [tst] after step 7")
    assert "'dataloader' and 'lr_scheduler'" in error and "exclude_from_loading" in error
    assert not one.rows("no-dataloader-no-scheduler-6")  # stopped before logging step 7


def test_a_new_run_from_weights_starts_phase_one(one):
    # initial_load_path, model only: a new run at step 0, so phase 1 (bags) first.
    rows = one.rows("from-weights")
    assert [r["phase"] for r in rows] == [1, 1, 2, 2]
    assert one.shapes("from-weights") == [[4, 32, 4]] * 2 + [[4, 32]] * 2
    assert "dataloader state was not loaded" not in one.log("from-weights")


@pytest.mark.parametrize("plan, key, saved, now", [
    ("other-bag-size", "tst.bag_size", "4", "2"),
    ("other-fraction", "tst.superposition_fraction", "0.5", "0.25"),
])
def test_resume_with_other_tst_settings_is_refused(one, plan, key, saved, now):
    error = one.error(plan)
    assert error.startswith(f"ValueError: [tst] cannot resume: the checkpoint was trained with {key} = {saved}")
    assert f"this run has {now}" in error
    assert not one.rows(plan)  # before step 1


def test_same_config_and_seed_give_identical_losses(one, twins):
    # Two processes, the same configs: TST and baseline each reproduce their losses exactly.
    for name in ("full", "baseline"):
        assert compared(one.rows(name)) == compared(twins.rows(name))
    assert [r["loss"] for r in one.rows("full")] != [r["loss"] for r in one.rows("baseline")]


def test_non_finite_loss_stops_the_run_naming_step_and_phase(one):
    error = one.error("nan")
    assert re.match(r"FloatingPointError: \[tst\] non-finite loss (nan|inf|-inf) at step \d+ \(phase [12]\)",
                    error), error[:300]
    step = int(re.search(r"at step (\d+)", error).group(1))
    assert [r["step"] for r in one.rows("nan")] == list(range(1, step))
