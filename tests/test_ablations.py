"""The ablation settings through real tiny trainings (tests/ablation_runs.py): what the model and
the loss see in each tst.mode, and the optimizer reset at the switch, resumed across it.

8 steps, switch after step 4, 2 microbatches of 2 samples per step, L = 32, s = 4."""

import pytest

from tests.ablation_runs import ablation_runs

pytestmark = pytest.mark.usefixtures("embedded_store")

#: What the COMPARED keys of tests/test_resume.py compare, bit for bit.
COMPARED = ("step", "phase", "loss", "val_loss", "lr", "grad_norm", "raw_tokens_seen", "positions_seen")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, embedded_store):
    return ablation_runs(tmp_path_factory)


def _rows(rows, after=0):
    return [{k: r.get(k) for k in COMPARED} for r in rows if r["step"] > after]


@pytest.mark.parametrize("mode, phase1_input, phase1_labels", [
    ("input_only", [2, 32, 4], [2, 32]),   # bags in, the next single token out
    ("output_only", [2, 32], [2, 32, 4]),  # tokens in, the next s tokens out
])
def test_mode_trains_with_its_shapes_then_next_token(runs, mode, phase1_input, phase1_labels):
    spy, rows = runs.spy(mode), runs.rows(mode)
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
    assert "switching to next-token training at step 5" in runs.log(mode)


def test_modes_differ_from_full_tst_and_each_other(runs):
    first = {m: runs.rows(m)[0]["loss"] for m in ("input_only", "output_only", "keep")}
    assert len(set(first.values())) == 3


def test_reset_clears_adamw_before_the_first_next_token_step(runs):
    keep, reset = runs.spy("keep"), runs.spy("reset")
    assert keep["adam_steps"] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert reset["adam_steps"] == [1, 2, 3, 4, 1, 2, 3, 4]  # a fresh AdamW from step 5 on
    log = runs.log("reset")
    assert log.count("optimizer state reset") == 1 and "before step 5" in log
    assert "optimizer state reset" not in runs.log("keep")
    # identical until the switch; the reset changes step 5 on (same LR schedule)
    keep_rows, reset_rows = runs.rows("keep"), runs.rows("reset")
    assert _rows(keep_rows)[:4] == _rows(reset_rows)[:4]
    assert keep_rows[4]["loss"] == reset_rows[4]["loss"]  # step 5's loss is computed before its update
    assert keep_rows[5]["loss"] != reset_rows[5]["loss"]
    assert [r["lr"] for r in keep_rows] == [r["lr"] for r in reset_rows]


def test_reset_resumes_bit_exact_across_the_switch(runs):
    full = runs.rows("reset")
    # resumed from step 4 (the last bag step): the reset is still to come, and happens at step 5
    assert _rows(runs.rows("reset-resume-4")) == _rows(full, after=4)
    assert runs.spy("reset-resume-4")["adam_steps"] == [1, 2, 3, 4]
    assert "before step 5" in runs.log("reset-resume-4")
    # resumed from step 6: the reset is behind it and does not happen again
    assert _rows(runs.rows("reset-resume-6")) == _rows(full, after=6)
    assert runs.spy("reset-resume-6")["adam_steps"] == [3, 4]
    assert "optimizer state reset" not in runs.log("reset-resume-6")


@pytest.mark.parametrize("mode, text_per_position", [("full", 4), ("input_only", 4), ("output_only", 1)])
def test_dry_run_counts_phase1_text_per_mode(mode, text_per_position):
    import os

    from tst_titan.dryrun import dry_run

    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train_configs",
                          "debug_tst.toml")
    report = dry_run(config, ["--tst.mode", mode, "--tst.optimizer_at_switch", "reset"], None)
    tokens = report["tokens_per_step"]
    assert tokens["phase1_text_tokens"] == text_per_position * tokens["positions"]
    assert (report["tst"]["mode"], report["tst"]["optimizer_at_switch"]) == (mode, "reset")
