"""Build a token store: ``python -m tst_titan.tools.prepare --out DIR SOURCE [options]``.

Sources (exactly one):

* ``--embedded [--site-packages]`` -- the Python standard library's sources on this machine
  (optionally plus the sources of the pinned packages of ``datastore.sources.CORPUS_DISTRIBUTIONS``,
  refused when an installed version differs); no download;
* ``--folder PATH`` -- a local folder of .txt .md .rst .py / .jsonl files;
* ``--hf NAME [--hf-config C] [--hf-split train] [--text-field text] [--max-documents N]`` -- a
  Hugging Face dataset, streamed (``c4``, ``fineweb-edu`` or any dataset name).

Trains a byte-level BPE tokenizer of ``--vocab-size`` tokens on the training split (or uses
``--tokenizer DIR``), tokenizes everything once into ``DIR`` (see :mod:`tst_titan.datastore.store`),
prints one line per shard on stderr and a JSON summary on stdout. Re-running an interrupted
command resumes it. Point ``training.dataset_path`` (and ``model.hf_assets_path``) at ``DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from tst_titan.datastore.build import build_store, document_source
from tst_titan.datastore.sources import CorpusStats

DEFAULT_VOCAB_SIZE = 2048


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tst_titan.tools.prepare",
        description="Tokenize a corpus once into a memory-mapped token store.",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="store directory to build")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--embedded",
        action="store_true",
        help="the Python standard library's .py sources on this machine (tests excluded)",
    )
    src.add_argument("--folder", metavar="PATH", help="a local folder of .txt .md .rst .py .jsonl")
    src.add_argument("--hf", metavar="NAME", help="a Hugging Face dataset (c4, fineweb-edu, ...)")
    parser.add_argument(
        "--site-packages",
        action="store_true",
        help="with --embedded: add the .py sources of the pinned packages (datastore.sources.CORPUS_DISTRIBUTIONS)",
    )
    parser.add_argument("--hf-config", metavar="NAME", default=None, help="with --hf: config")
    parser.add_argument("--hf-split", metavar="SPLIT", default=None, help="with --hf (train)")
    parser.add_argument(
        "--text-field", metavar="FIELD", default=None, help="with --hf or --folder (text)"
    )
    parser.add_argument(
        "--max-documents", metavar="N", type=int, default=None, help="with --hf: stop after N"
    )
    parser.add_argument(
        "--vocab-size",
        metavar="N",
        type=int,
        default=None,
        help=f"train a tokenizer of at most N tokens (default {DEFAULT_VOCAB_SIZE})",
    )
    parser.add_argument(
        "--tokenizer", metavar="DIR", default=None, help="use the tokenizer.json in DIR instead"
    )
    parser.add_argument(
        "--val-fraction", metavar="F", type=float, default=0.02, help="held-out share (0.02)"
    )
    parser.add_argument(
        "--shard-documents", metavar="N", type=int, default=2000, help="documents per shard"
    )
    parser.add_argument(
        "--workers",
        metavar="N",
        type=int,
        default=None,
        help="tokenizer processes (default: the tokenizer's threads on all cores)",
    )
    parser.add_argument("--seed", metavar="S", type=int, default=0, help="shuffle seed (0)")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.site_packages and not args.embedded:
        parser.error("argument --site-packages: only allowed with --embedded")
    for option, value in (
        ("--hf-config", args.hf_config),
        ("--hf-split", args.hf_split),
        ("--max-documents", args.max_documents),
    ):
        if value is not None and args.hf is None:
            parser.error(f"argument {option}: only allowed with --hf")
    if args.text_field is not None and args.hf is None and args.folder is None:
        parser.error("argument --text-field: only allowed with --hf or --folder")
    if args.max_documents is not None and args.max_documents < 1:
        parser.error(f"argument --max-documents: must be >= 1, got {args.max_documents}")
    if args.tokenizer is None and args.vocab_size is None:
        args.vocab_size = DEFAULT_VOCAB_SIZE
    if args.vocab_size is not None and args.vocab_size < 258:
        parser.error(f"argument --vocab-size: must be >= 258 (2 special + 256 bytes), got "
                     f"{args.vocab_size}")
    if not 0.0 <= args.val_fraction < 1.0:
        parser.error(f"argument --val-fraction: must be in [0, 1), got {args.val_fraction}")
    if args.workers is not None and args.workers < 1:
        parser.error(f"argument --workers: must be >= 1, got {args.workers}")
    if args.shard_documents < 1:
        parser.error(f"argument --shard-documents: must be >= 1, got {args.shard_documents}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)

    def log(msg: str) -> None:
        print(f"[prepare] {msg}", file=sys.stderr, flush=True)

    stats = CorpusStats()
    t0 = time.perf_counter()
    try:
        source, source_info, docs = document_source(
            folder=args.folder,
            hf=args.hf,
            include_site_packages=args.site_packages,
            text_field=args.text_field,
            hf_config=args.hf_config,
            hf_split=args.hf_split,
            max_documents=args.max_documents,
            stats=stats,
        )
        log(f"source {source} -> {args.out}")
        manifest = build_store(
            args.out,
            docs,
            vocab_size=args.vocab_size,
            tokenizer_dir=args.tokenizer,
            val_fraction=args.val_fraction,
            shard_documents=args.shard_documents,
            num_workers=args.workers,
            shuffle_seed=args.seed,
            source=source,
            source_stats=stats,
            source_info=source_info,
            log=log,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    tokens = sum(s["tokens"] for s in manifest["splits"].values())
    summary = {
        "out": str(args.out),
        "source": manifest["source"],
        "vocab_size": manifest["vocab_size"],
        "tokenizer_sha256": manifest["tokenizer_sha256"],
        "documents": {k: v["documents"] for k, v in manifest["splits"].items()},
        "skipped_documents": {k: v["skipped_documents"] for k, v in manifest["splits"].items()},
        "tokens": {k: v["tokens"] for k, v in manifest["splits"].items()},
        "shards": {k: len(v["shards"]) for k, v in manifest["splits"].items()},
        "source_stats": manifest["source_stats"],
        "seconds": round(seconds, 3),
        "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
