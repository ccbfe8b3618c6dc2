"""Matched-loss arithmetic used by the benchmark, the sweep and the notebooks."""

import pytest

from tst_titan.analysis.compare import first_crossing, format_speedup, matched_loss_speedup, value_at


def rows(points, x="step"):
    return [{x: a, "val_loss": b, "phase": 2} for a, b in points]


def test_first_crossing_interpolates_between_evaluations():
    pts = [(0, 8.0), (10, 6.0), (20, 4.0), (30, 3.0)]
    assert first_crossing(pts, 5.0) == pytest.approx(15.0)
    assert first_crossing(pts, 6.0) == 10.0  # exactly at an evaluation
    assert first_crossing(pts, 9.0) == 0.0  # already there at the first evaluation
    assert first_crossing(pts, 2.0) is None  # never


def test_first_crossing_takes_the_first_time_not_the_last():
    pts = [(0, 8.0), (10, 4.0), (20, 6.0), (30, 3.0)]
    assert first_crossing(pts, 5.0) == pytest.approx(7.5)


def test_value_at():
    pts = [(0, 8.0), (10, 6.0), (20, 4.0)]
    assert value_at(pts, 5) == pytest.approx(7.0)
    assert value_at(pts, 20) == 4.0
    assert value_at(pts, 25) is None


def test_speedup_in_steps():
    tst = rows([(0, 8.0), (50, 5.0), (100, 4.0)])
    base = rows([(0, 8.0), (100, 5.0), (200, 4.5), (300, 3.5)])
    out = matched_loss_speedup(tst, base)
    assert out["target"] == 4.0
    assert out["baseline"] == pytest.approx(250.0)
    assert out["speedup"] == pytest.approx(2.5)
    assert format_speedup(out) == "2.50x"


def test_baseline_that_never_gets_there_is_reported_as_at_least_k():
    tst = rows([(0, 8.0), (100, 3.0)])
    base = rows([(0, 8.0), (150, 4.0), (300, 3.5)])
    out = matched_loss_speedup(tst, base)
    assert out["speedup"] is None and out["at_least"] == pytest.approx(3.0)
    assert format_speedup(out) == ">3.00x"


def test_tst_worse_than_baseline_gives_speedup_below_one():
    tst = rows([(0, 8.0), (100, 5.0)])
    base = rows([(0, 8.0), (40, 5.0), (100, 4.0)])
    assert matched_loss_speedup(tst, base)["speedup"] == pytest.approx(0.4)


def test_other_axes_and_missing_validation():
    tst = rows([(0.0, 8.0), (10.0, 4.0)], x="wall_time_s")
    base = rows([(0.0, 8.0), (30.0, 4.0)], x="wall_time_s")
    assert matched_loss_speedup(tst, base, "wall_time_s")["speedup"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="val_loss"):
        matched_loss_speedup([{"step": 1, "loss": 3.0}], rows([(0, 8.0), (10, 4.0)]))
