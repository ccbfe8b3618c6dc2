"""``python -m tst_titan.tools.export RUN_DIR OUT_DIR``: a trained run as a Hugging Face model
folder (see :mod:`tst_titan.export.hf`).

``RUN_DIR`` is the dump folder; the latest ``step-N`` of its checkpoint folder is exported unless
``--step N``. The run's config comes from ``RUN_DIR/tst_run.json``, or from ``--config TOML`` plus
torchtitan command-line overrides.

    python -m tst_titan.tools.export outputs/debug_tst exported/debug_tst
    python -m tst_titan.tools.export outputs/debug_tst exported/debug_tst --step 100
    python -m tst_titan.tools.export outputs/x exported/x --config train_configs/debug_tst.toml --model.flavor tiny
"""

from __future__ import annotations

import argparse
import json
import sys

from tst_titan.export.hf import ExportError, export


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tst_titan.tools.export",
        description="Export a run's checkpoint as a Hugging Face model folder (safetensors + "
        "config.json + tokenizer). Extra --section.key value arguments override --config.",
    )
    parser.add_argument("run_dir", help="the run's dump folder (job.dump_folder), or a step-N dir")
    parser.add_argument("out_dir", help="the folder to write")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    parser.add_argument("--config", default=None, metavar="TOML",
                        help="the run's config, when RUN_DIR has no tst_run.json")
    parser.add_argument("--tokenizer", default=None, metavar="DIR",
                        help="tokenizer folder (default: the run's token store / hf_assets_path)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args, overrides = parser.parse_known_args(argv)
    try:
        summary = export(args.run_dir, args.out_dir, step=args.step, config=args.config,
                         overrides=overrides, tokenizer=args.tokenizer, dtype=args.dtype)
    except (ExportError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
