"""Comparing a TST run with its baseline: matched-loss speedups and equal-FLOPs losses.

Shared by the benchmark, the sweep and the notebooks, so every figure in the project is computed
one way. Inputs are rows of ``metrics.jsonl`` (:func:`tst_titan.run_files.read_metrics`); a leaf:
imports nothing of tst_titan.
"""

from __future__ import annotations

import math
from typing import Sequence


def curve(rows: Sequence[dict], x: str = "step", y: str = "val_loss") -> list[tuple[float, float]]:
    """``(x, y)`` points of the rows that have ``y`` (e.g. the validation evaluations)."""
    return [(float(r[x]), float(r[y])) for r in rows if y in r and r[y] is not None]


def first_crossing(points: Sequence[tuple[float, float]], target: float) -> float | None:
    """The first x at which the curve reaches ``target`` (y <= target), linearly interpolated
    between the two evaluations that bracket it; None if it never does."""
    prev = None
    for x, y in points:
        if y <= target:
            if prev is None:
                return x
            (x0, y0) = prev
            if y0 == y:
                return x
            return x0 + (x - x0) * (y0 - target) / (y0 - y)
        prev = (x, y)
    return None


def value_at(points: Sequence[tuple[float, float]], x: float) -> float | None:
    """The curve's y at ``x``, linearly interpolated; None outside its range."""
    if not points or x < points[0][0] or x > points[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def matched_loss_speedup(tst_rows, base_rows, x: str = "step") -> dict:
    """How much longer (in ``x``: steps, flops_seen, wall_time_s, ...) the baseline needs to reach
    TST's final next-token validation loss.

    Returns ``{"target": tst final val loss, "tst": x at TST's end, "baseline": x where the baseline
    reaches it (None if never), "speedup": baseline / tst (or None), "at_least": the bound
    baseline-end / tst when it never gets there, shown as ">K"}``.
    """
    tst, base = curve(tst_rows, x), curve(base_rows, x)
    if not tst or not base:
        raise ValueError("both runs need validation losses (val_loss) in metrics.jsonl")
    target = tst[-1][1]
    tst_x = tst[-1][0]
    reached = first_crossing(base, target)
    out = {"metric": x, "target": target, "tst": tst_x, "baseline": reached,
           "speedup": None, "at_least": None}
    if reached is not None:
        out["speedup"] = reached / tst_x if tst_x else math.inf
    else:
        out["at_least"] = base[-1][0] / tst_x if tst_x else math.inf
    return out


def format_speedup(result: dict) -> str:
    if result["speedup"] is not None:
        return f"{result['speedup']:.2f}x"
    return f">{result['at_least']:.2f}x"
