"""``python -m tst_titan.tools.evaluate RUN_DIR [RUN_DIR ...] [--tasks ...]``: zero-shot downstream
accuracy of trained runs with lm-eval-harness, the paper's way (see
:mod:`tst_titan.evaluation.harness`; needs the ``[eval]`` extra).

Prints one table (runs x tasks, accuracy ± stderr as lm-eval reports them, and each run's
next-token val loss at that step) and writes ``--out DIR/evaluate.json``.

    python -m tst_titan.tools.evaluate outputs/bench/tst outputs/bench/tune_lr0.006 --tasks tst_continuation
    python -m tst_titan.tools.evaluate outputs/270m_tst outputs/270m_baseline --batch-size auto --device cuda
    python -m tst_titan.tools.evaluate outputs/x --tasks my_task.yaml --include-path my_tasks/
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tqdm import tqdm

from tst_titan.evaluation.checkpoint import EvaluationError
from tst_titan.evaluation.continuation_task import TASK_NAME, ContinuationSpec
from tst_titan.evaluation.harness import PAPER_TASKS, evaluate_runs, format_table


def _batch_size(text: str):
    if text == "auto" or text.startswith("auto:"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch-size must be an integer or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--batch-size must be >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tst_titan.tools.evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="dump folders of trained runs")
    parser.add_argument("--tasks", nargs="+", default=list(PAPER_TASKS),
                        help=f"lm-eval task names, task YAML files, or {TASK_NAME} (local, offline); "
                        f"default: the paper's {' '.join(PAPER_TASKS)}")
    parser.add_argument("--include-path", action="append", default=[], metavar="DIR",
                        help="a folder of your own lm-eval task YAMLs (repeatable)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: each run's latest)")
    parser.add_argument("--tokenizer", default=None, metavar="DIR",
                        help="tokenizer folder (default: the run's token store / model.hf_assets_path)")
    parser.add_argument("--out", default="outputs/evaluate", metavar="DIR", help="where evaluate.json goes")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="exported models and local task data (default: OUT/cache)")
    parser.add_argument("--batch-size", type=_batch_size, default=1, help="lm-eval's: an integer or 'auto'")
    parser.add_argument("--device", default=None, help="lm-eval's: cpu, cuda, cuda:0 ... (default: cuda if present)")
    parser.add_argument("--metric", default="acc", help="the metric reported as accuracy (acc, acc_norm, ...)")
    parser.add_argument("--limit", type=float, default=None,
                        help="lm-eval's: at most N examples per task (< 1: a fraction); for quick checks only")
    parser.add_argument("--tst-items", type=int, default=ContinuationSpec.items, help=f"{TASK_NAME}: items")
    parser.add_argument("--tst-context", type=int, default=ContinuationSpec.context_tokens,
                        help=f"{TASK_NAME}: context tokens (at most)")
    parser.add_argument("--tst-continuation", type=int, default=ContinuationSpec.continuation_tokens,
                        help=f"{TASK_NAME}: continuation tokens (at most)")
    parser.add_argument("--tst-distractors", type=int, default=ContinuationSpec.distractors,
                        help=f"{TASK_NAME}: wrong choices per item")
    parser.add_argument("--tst-seed", type=int, default=ContinuationSpec.seed, help=f"{TASK_NAME}: seed")
    args = parser.parse_args(argv)

    spec = ContinuationSpec(items=args.tst_items, context_tokens=args.tst_context,
                            continuation_tokens=args.tst_continuation, distractors=args.tst_distractors,
                            seed=args.tst_seed)
    limit = None if args.limit is None else (int(args.limit) if args.limit >= 1 else args.limit)
    if args.device is None:
        import torch  # heavy: only to pick the default device

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        spec.check()
        record = evaluate_runs(args.runs, args.tasks, cache_dir=args.cache or os.path.join(args.out, "cache"),
                               step=args.step, tokenizer=args.tokenizer, include_paths=args.include_path,
                               spec=spec, batch_size=args.batch_size, device=args.device, metric=args.metric,
                               limit=limit, progress=lambda runs: tqdm(runs, desc="runs", unit="run"))
    except (EvaluationError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # ContinuationSpec's own checks name the value
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "evaluate.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    print(format_table(record))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
