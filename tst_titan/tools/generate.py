"""``python -m tst_titan.tools.generate RUN_DIR --prompt "..."``: text from a trained run's
checkpoint through its Hugging Face export (``transformers`` generate: greedy by default, or
``--temperature T [--top-k K]`` sampling, seeded), with the first ``--check-steps`` greedy tokens
also decoded by torchtitan's own model and compared (see :mod:`tst_titan.evaluation.sampling`).

    python -m tst_titan.tools.generate outputs/bench/tst --prompt "def main(" --max-new-tokens 40
    python -m tst_titan.tools.generate outputs/bench/tst --prompt "import " --temperature 0.8 --top-k 20 --num-samples 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from tst_titan.evaluation.checkpoint import EvaluationError, resolve
from tst_titan.evaluation.sampling import SamplingSettings, generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tst_titan.tools.generate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", metavar="RUN_DIR", help="the run's dump folder")
    parser.add_argument("--prompt", required=True, help="the text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    parser.add_argument("--top-k", type=int, default=None, help="with --temperature: the k most likely tokens only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--check-steps", type=int, default=8,
                        help="greedy tokens also decoded by torchtitan's model and compared (0: none)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    parser.add_argument("--tokenizer", default=None, metavar="DIR",
                        help="tokenizer folder (default: the run's token store / model.hf_assets_path)")
    parser.add_argument("--cache", default=None, metavar="DIR", help="where the export goes (default: a temporary folder)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    settings = SamplingSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                                seed=args.seed, num_samples=args.num_samples)
    try:
        settings.check()
        if args.check_steps < 0:
            raise EvaluationError(f"--check-steps must be >= 0, got {args.check_steps}")
        ckpt = resolve(args.run, args.step, args.tokenizer)
        with tempfile.TemporaryDirectory() as tmp:
            result = generate(ckpt, args.prompt, settings, cache_dir=args.cache or tmp,
                              check_steps=args.check_steps, device=args.device)
    except (EvaluationError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{result['run']} step {result['step']} ({os.path.basename(result['tokenizer'])} tokenizer)")
        for i, sample in enumerate(result["samples"]):
            print(f"--- sample {i + 1}" + (f" (seed {args.seed + i})" if args.temperature > 0 else " (greedy)"))
            print(args.prompt + sample["text"])
        check = result["greedy_check"]
        if check["steps"]:
            verdict = "same tokens" if check["equal"] else f"DIFFERENT: {check['hf']} vs {check['torchtitan']}"
            print(f"--- greedy, first {check['steps']} tokens: Hugging Face export vs torchtitan model: {verdict}")
        if result["beyond_seq_len"]:
            print("(note: prompt + new tokens exceed the run's training seq_len; the tokens past it use positions "
                  "the model never trained on)")
    return 0 if not result["greedy_check"]["steps"] or result["greedy_check"]["equal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
