"""``python -m tst_titan.tools.dryrun CONFIG.toml [--world-size N] [overrides]``: check a training
config without training (see :mod:`tst_titan.experiments.dryrun`). Prints one JSON object; a bad
config exits with status 2 and the message (naming the key) on stderr."""

from __future__ import annotations

import argparse
import json
import sys

from tst_titan.experiments.dryrun import dry_run
from tst_titan.job_config import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tst_titan.tools.dryrun",
        description="Parse a torchtitan TOML like torchtitan, build the model on meta, print JSON "
        "(parameters, FLOPs, tokens/step, parallel degrees, memory per GPU). Other arguments are "
        "torchtitan overrides, e.g. --training.seq_len 4096.",
    )
    parser.add_argument("config", help="a TOML file, or the name of a packaged config (e.g. debug_tst.toml)")
    parser.add_argument("--world-size", type=int, default=None, metavar="N",
                        help="GPUs to resolve the degrees for (default: the config's degrees; with "
                        "data_parallel_shard_degree = -1 the smallest world size it runs on)")
    args, overrides = parser.parse_known_args(argv)
    try:
        report = dry_run(args.config, overrides, args.world_size)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
