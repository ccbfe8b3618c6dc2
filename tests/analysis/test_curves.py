"""tst_titan.analysis.curves: the switch arithmetic on hand-made metrics rows, and the summary
table of a tiny real pair."""

import pytest

from tst_titan.analysis import compare, curves
from tst_titan.run_files import read_metrics


# -- the switch, on hand-made rows ------------------------------------------------------------
def _rows(points, **extra):
    return [dict(step=s, flops_seen=10.0 * s, wall_time_s=0.5 * s, raw_tokens_seen=4 * s, **extra,
                 **({"val_loss": v} if v is not None else {}), loss=l) for s, l, v in points]

TST_ROWS = _rows([(2, 3.0, 5.0), (4, 2.0, 4.8), (5, 1.9, None), (6, 4.5, 4.9), (8, 4.0, 4.0), (10, 3.6, 3.5)])
BASE_ROWS = _rows([(2, 5.0, 5.0), (4, 4.6, 4.6), (6, 4.4, 4.4), (8, 4.2, 4.2), (10, 4.0, 4.0),
                   (12, 3.8, 3.8), (16, 3.4, 3.4)])

def test_loss_jump_reads_the_last_value_before_and_the_first_after_the_switch():
    j = curves.loss_jump(TST_ROWS, 5, "loss")
    assert j == {"key": "loss", "before_step": 5, "before": 1.9, "after_step": 6, "after": 4.5,
                 "jump": pytest.approx(2.6)}
    v = curves.loss_jump(TST_ROWS, 5, "val_loss")  # step 5 has no val loss: step 4's counts
    assert (v["before_step"], v["after_step"], v["jump"]) == (4, 6, pytest.approx(0.1))
    assert curves.loss_jump(TST_ROWS, 0) is None and curves.loss_jump(TST_ROWS, 10) is None

def test_recovery_length_compares_at_equal_flops():
    rec = curves.recovery_length(TST_ROWS, BASE_ROWS, 5)
    # step 6: 4.9 > 4.4; step 8: 4.0 <= 4.2 -> recovered 3 steps after the switch
    assert (rec["step"], rec["steps_after_switch"], rec["tst_val_loss"], rec["baseline_val_loss"]) == (
        8, 3, 4.0, pytest.approx(4.2))
    # against a baseline that is better by 0.6 everywhere, TST never gets there
    better = [dict(r, val_loss=r["val_loss"] - 0.6) for r in BASE_ROWS]
    assert curves.recovery_length(TST_ROWS, better, 5)["step"] is None
    # interpolation: baseline flops 50..70 (steps 5, 7) only through value_at
    sparse = _rows([(5, 4.5, 4.5), (7, 4.1, 4.1), (9, 3.9, 3.9)])
    rec = curves.recovery_length(TST_ROWS, sparse, 5)
    assert rec["step"] == 8 and rec["baseline_val_loss"] == pytest.approx(4.0)
    assert curves.recovery_to_level(TST_ROWS, 5, 4.8) == 3 and curves.recovery_to_level(TST_ROWS, 5, 1.0) is None

def test_speedups_and_equal_flops_use_the_benchmark_arithmetic():
    sp = curves.speedups(TST_ROWS, BASE_ROWS)
    assert set(sp) == {"step", "flops_seen", "wall_time_s"}
    for metric, result in sp.items():
        assert result == compare.matched_loss_speedup(TST_ROWS, BASE_ROWS, x=metric)
    # TST ends at 3.5 at step 10; the baseline reaches 3.5 at step 15 (between 3.8@12 and 3.4@16)
    assert sp["step"]["baseline"] == pytest.approx(15.0) and sp["step"]["speedup"] == pytest.approx(1.5)
    assert sp["wall_time_s"]["speedup"] == pytest.approx(1.5)
    assert curves.equal_flops_val(TST_ROWS, BASE_ROWS) == {"flops": 100.0, "tst": 3.5, "baseline": 4.0}

def test_summary_table_of_the_tiny_pair(pair):
    table = curves.summary_table(pair["tst"], pair["baseline"])
    values = {r["quantity"]: r["value"] for r in table}
    assert values["bag size s, superposition fraction r"] == "4, 0.3"
    assert values["switch: last phase-1 step / TST steps"] == "6 / 20"
    tst_rows, base_rows = read_metrics(pair["tst"]), read_metrics(pair["baseline"])
    assert not [q for q in values if "speedup" in q]  # one baseline's curve gives none (the frontier does)
    assert values["val loss baseline at TST's final FLOPs"] == f"{curves.equal_flops_val(tst_rows, base_rows)['baseline']:.4f}"
    assert values["final val loss TST"] == f"{compare.curve(tst_rows)[-1][1]:.4f}"
    assert any(q.startswith("next-token val loss at step 6") for q in values)
    assert "recovery" in curves.format_table(table)
