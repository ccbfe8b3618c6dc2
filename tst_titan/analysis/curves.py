"""What happens to the loss curves across TST's phase switch: the jump, the recovery, the speedups
(the benchmark's matched-loss arithmetic, :mod:`tst_titan.analysis.compare`) and a summary table.
Inputs are rows of ``metrics.jsonl`` (:func:`tst_titan.run_files.read_metrics`)."""

from __future__ import annotations

from typing import Any, Sequence

from tst_titan.analysis import compare
from tst_titan.analysis.runs import run_info
from tst_titan.run_files import read_metrics

#: The x axes of :func:`speedups`, and how the notebooks name them.
SPEEDUP_METRICS = {"step": "steps", "flops_seen": "FLOPs", "wall_time_s": "wall-clock"}


def _rows_with(rows: Sequence[dict], key: str) -> list[dict]:
    return [r for r in rows if r.get(key) is not None]


def loss_jump(rows: Sequence[dict], switch: int, key: str = "val_loss") -> dict[str, Any] | None:
    """``key`` at the last logged step ``<= switch`` and at the first one after it, and the jump
    (after − before). Training ``loss`` changes meaning there (multi-hot → next-token);
    ``val_loss`` is next-token in both phases. None if either side has no value."""
    have = _rows_with(rows, key)
    before = [r for r in have if r["step"] <= switch]
    after = [r for r in have if r["step"] > switch]
    if switch <= 0 or not before or not after:
        return None
    b, a = before[-1], after[0]
    return {"key": key, "before_step": b["step"], "before": float(b[key]), "after_step": a["step"],
            "after": float(a[key]), "jump": float(a[key]) - float(b[key])}


def recovery_length(tst_rows: Sequence[dict], base_rows: Sequence[dict], switch: int,
                    x: str = "flops_seen") -> dict[str, Any]:
    """Steps after the switch until TST's validation loss is at or below the baseline's at equal
    ``x`` (FLOPs by default: the baseline's curve read with :func:`compare.value_at`).
    ``step``/``steps_after_switch`` are None when it never gets there within both runs."""
    base = compare.curve(base_rows, x)
    out = {"metric": x, "switch": switch, "step": None, "steps_after_switch": None, "x": None,
           "tst_val_loss": None, "baseline_val_loss": None}
    for r in _rows_with(tst_rows, "val_loss"):
        if r["step"] <= switch:
            continue
        ref = compare.value_at(base, float(r[x]))
        if ref is not None and r["val_loss"] <= ref:
            out.update(step=r["step"], steps_after_switch=r["step"] - switch, x=float(r[x]),
                       tst_val_loss=float(r["val_loss"]), baseline_val_loss=ref)
            break
    return out


def recovery_to_level(rows: Sequence[dict], switch: int, level: float, key: str = "val_loss") -> int | None:
    """Steps after the switch until ``key`` is at or below ``level`` (e.g. its pre-switch value)."""
    for r in _rows_with(rows, key):
        if r["step"] > switch and r[key] <= level:
            return r["step"] - switch
    return None


def speedups(tst_rows: Sequence[dict], base_rows: Sequence[dict],
             metrics: Sequence[str] = tuple(SPEEDUP_METRICS)) -> dict[str, dict]:
    """:func:`compare.matched_loss_speedup` in each metric (the benchmark's arithmetic): how much
    longer the baseline needs to reach TST's final validation loss."""
    return {m: compare.matched_loss_speedup(tst_rows, base_rows, x=m) for m in metrics}


def equal_flops_val(tst_rows: Sequence[dict], base_rows: Sequence[dict]) -> dict[str, float | None]:
    """TST's final validation loss and the baseline's at the same FLOPs (interpolated)."""
    tst = compare.curve(tst_rows, "flops_seen")
    base = compare.curve(base_rows, "flops_seen")
    flops, loss = tst[-1]
    return {"flops": flops, "tst": loss, "baseline": compare.value_at(base, flops)}


def _fmt(v, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def summary_table(tst_dir: str, base_dir: str) -> list[dict[str, str]]:
    """The switch and the comparison in one list of ``{"quantity", "value"}`` rows (no speedup:
    see the frontier study)."""
    info = run_info(tst_dir)
    tst_rows, base_rows = read_metrics(tst_dir), read_metrics(base_dir)
    k = info.switch_step
    rows = [("bag size s, superposition fraction r", f"{info.bag_size}, {info.superposition_fraction:g}"),
            ("switch: last phase-1 step / TST steps", f"{k} / {tst_rows[-1]['step']}"),
            ("baseline steps", f"{base_rows[-1]['step']}")]
    for key, label in (("loss", "training loss"), ("val_loss", "next-token val loss")):
        j = loss_jump(tst_rows, k, key)
        if j:
            rows.append((f"{label} at step {j['before_step']} → step {j['after_step']}",
                         f"{j['before']:.4f} → {j['after']:.4f} ({j['jump']:+.4f})"))
    rec = recovery_length(tst_rows, base_rows, k)
    rows.append(("recovery: steps after the switch until TST ≤ baseline at equal FLOPs",
                 "not within the runs" if rec["step"] is None else f"{rec['steps_after_switch']} (step {rec['step']})"))
    eq = equal_flops_val(tst_rows, base_rows)
    rows.append(("final val loss TST", _fmt(eq["tst"])))
    rows.append(("val loss baseline at TST's final FLOPs", _fmt(eq["baseline"])))
    rows.append(("final val loss baseline (its own end)", _fmt(compare.curve(base_rows)[-1][1])))
    # No "speedup" row: one baseline's curve before its own decay is not a fully trained run of
    # that length. The speedup is the frontier study's (tst_titan.experiments.frontier).
    last = tst_rows[-1]["step"]
    base_raw = compare.value_at(compare.curve(base_rows, "step", "raw_tokens_seen"), float(last))
    rows.append(("raw tokens read by TST / by the baseline at the same step",
                 f"{tst_rows[-1]['raw_tokens_seen']:,} / {_fmt(base_raw, ',.0f')}"))
    return [{"quantity": q, "value": v} for q, v in rows]


def format_table(rows: Sequence[dict[str, str]]) -> str:
    width = max(len(r["quantity"]) for r in rows)
    return "\n".join(f"{r['quantity']:<{width}}  {r['value']}" for r in rows)
