"""``python -m tst_titan.tools.report RUN_DIR [RUN_DIR ...]``: where a run's outputs are, and its numbers.

For each torchtitan dump folder: the last logged step and phase, final training loss, final
next-token validation loss, raw tokens read, and the paths of metrics.jsonl, the checkpoints and
the TensorBoard logs.
"""

from __future__ import annotations

import argparse
import json
import sys

from tst_titan.analysis.report import summarize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tst_titan.tools.report", description=__doc__)
    parser.add_argument("runs", nargs="+", help="torchtitan dump folders (job.dump_folder)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        summaries = [summarize(run) for run in args.runs]
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summaries, indent=2))
        return 0
    header = f"{'run':<28} {'steps':>6} {'loss':>8} {'val_loss':>9} {'raw tokens':>12} {'time(s)':>8}"
    print(header)
    for s in summaries:
        val = f"{s['final_val_loss']:.4f}" if s["final_val_loss"] is not None else "-"
        loss = f"{s['final_loss']:.4f}" if s["final_loss"] is not None else "-"
        print(f"{s['run']:<28} {s['steps']:>6} {loss:>8} {val:>9} {s['raw_tokens_seen']:>12,} "
              f"{s['wall_time_s']:>8.1f}")
    for s in summaries:
        print(f"\n{s['run']}:\n  metrics:     {s['metrics']}\n  checkpoints: {s['checkpoints']}"
              f"\n  tensorboard: {s['tensorboard']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
