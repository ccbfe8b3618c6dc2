"""The ablation settings through real tiny trainings (the ``ablations`` family of
tests/helpers/plans.py): what the model and the loss see in each tst.mode, and the optimizer reset
at the switch, resumed across it.

8 steps, switch after step 4, 2 microbatches of 2 samples per step, L = 32, s = 4."""

import pytest

from tests.helpers.trainer import compared
from tst_titan.experiments.dryrun import dry_run
from tst_titan.train_spec import config_path

pytestmark = pytest.mark.usefixtures("embedded_store")


@pytest.mark.parametrize("mode, phase1_input, phase1_labels", [
    ("input_only", [2, 32, 4], [2, 32]),   # bags in, the next single token out
    ("output_only", [2, 32], [2, 32, 4]),  # tokens in, the next s tokens out
])
def test_mode_trains_with_its_shapes_then_next_token(ablations, mode, phase1_input, phase1_labels):
    spy, rows = ablations.spy(mode), ablations.rows(mode)
    # 4 bag steps x 2 microbatches, then 4 next-token steps x 2
    assert spy["inputs"] == [phase1_input] * 8 + [[2, 32]] * 8
    assert spy["labels"] == [phase1_labels] * 8 + [[2, 32]] * 8
    assert [r["phase"] for r in rows] == [1] * 4 + [2] * 4
    assert all(r["loss"] == r["loss"] and r["loss"] < 20 for r in rows)  # finite, sane
    assert "val_loss" in rows[-1]
    # raw_tokens_seen counts input tokens: s per position with bag inputs, 1 with output_only
    per_step = 4 * 32
    s_in = 4 if mode == "input_only" else 1
    assert rows[3]["raw_tokens_seen"] == 4 * s_in * per_step
    assert rows[-1]["raw_tokens_seen"] == (4 * s_in + 4) * per_step
    assert "switching to next-token training at step 5" in ablations.log(mode)


def test_modes_differ_from_full_tst_and_each_other(ablations):
    first = {m: ablations.rows(m)[0]["loss"] for m in ("input_only", "output_only", "keep")}
    assert len(set(first.values())) == 3


def test_reset_clears_adamw_before_the_first_next_token_step(ablations):
    keep, reset = ablations.spy("keep"), ablations.spy("reset")
    assert keep["adam_steps"] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert reset["adam_steps"] == [1, 2, 3, 4, 1, 2, 3, 4]  # a fresh AdamW from step 5 on
    log = ablations.log("reset")
    assert log.count("optimizer state reset") == 1 and "before step 5" in log
    assert "optimizer state reset" not in ablations.log("keep")
    # identical until the switch; the reset changes step 5 on (same LR schedule)
    keep_rows, reset_rows = ablations.rows("keep"), ablations.rows("reset")
    assert compared(keep_rows)[:4] == compared(reset_rows)[:4]
    assert keep_rows[4]["loss"] == reset_rows[4]["loss"]  # step 5's loss is computed before its update
    assert keep_rows[5]["loss"] != reset_rows[5]["loss"]
    assert [r["lr"] for r in keep_rows] == [r["lr"] for r in reset_rows]


def test_rewarm_resets_adamw_and_warms_the_rate_up_again_after_the_switch(ablations):
    keep, rewarm = ablations.rows("keep"), ablations.rows("rewarm")
    assert ablations.spy("rewarm")["adam_steps"] == [1, 2, 3, 4, 1, 2, 3, 4]
    assert "'reset_rewarm'" in ablations.log("rewarm") and "rewarm_steps = 3" in ablations.log("rewarm")
    # phase-2 step j (steps 5..8 are j = 1..4) runs at min(1, j / 3) x the scheduled rate
    factors = [1, 1, 1, 1, 1 / 3, 2 / 3, 1, 1]
    assert [r["lr"] for r in rewarm] == pytest.approx([k["lr"] * f for k, f in zip(keep, factors)], rel=1e-12)
    assert compared(keep)[:4] == compared(rewarm)[:4]


def test_reset_resumes_bit_exact_across_the_switch(ablations):
    full = ablations.rows("reset")
    # resumed from step 4 (the last bag step): the reset is still to come, and happens at step 5
    assert compared(ablations.rows("reset-resume-4")) == compared(full, after=4)
    assert ablations.spy("reset-resume-4")["adam_steps"] == [1, 2, 3, 4]
    assert "before step 5" in ablations.log("reset-resume-4")
    # resumed from step 6: the reset is behind it and does not happen again
    assert compared(ablations.rows("reset-resume-6")) == compared(full, after=6)
    assert ablations.spy("reset-resume-6")["adam_steps"] == [3, 4]
    assert "optimizer state reset" not in ablations.log("reset-resume-6")


@pytest.mark.parametrize("mode, text_per_position", [("full", 4), ("input_only", 4), ("output_only", 1)])
def test_dry_run_counts_phase1_text_per_mode(mode, text_per_position):
    report = dry_run(config_path("debug_tst.toml"), ["--tst.mode", mode, "--tst.optimizer_at_switch", "reset_moments"], None)
    tokens = report["tokens_per_step"]
    assert tokens["phase1_text_tokens"] == text_per_position * tokens["positions"]
    assert (report["tst"]["mode"], report["tst"]["optimizer_at_switch"]) == (mode, "reset_moments")
