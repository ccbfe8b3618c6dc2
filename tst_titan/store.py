"""A memory-mapped token store: tokenize a corpus once, serve slices of it fast.

Layout of a store directory::

    <store>/manifest.json              written last: its presence means the store is complete
    <store>/tokenizer.json             the tokenizer (the store doubles as torchtitan's
    <store>/tokenizer_config.json      ``model.hf_assets_path``)
    <store>/train/shard_00000.bin      raw little-endian uint32 token ids
    <store>/train/shard_00000.docs.npy int64 [documents, 2]: (input index, token count) per document
    <store>/val/shard_00000.bin ...
    <store>/progress.json              only while a build is unfinished (makes it resumable)

The token stream of a split is, over its documents in store order, ``[bos] + encode(doc) + [eos]``
concatenated -- what torchtitan's ``HuggingFaceTokenizer.encode(doc, add_bos=True,
add_eos=True)`` gives. Documents go to a split by a hash of their text
(:func:`tst_titan.corpus.split_of`), the tokenizer is trained on the training split only, and each
split's documents are put in a seeded shuffled order before sharding, so that the chunks of one
source file are not all adjacent.

Manifest (``format_version`` 1)::

    {"format": "tst_titan.token_store", "format_version": 1, "complete": true,
     "build_key": <blake2b of inputs + parameters>,
     "dtype": "uint32", "byteorder": "little",
     "tokenizer_sha256": <sha256 of tokenizer.json>, "tokenizer_trained": bool,
     "vocab_size": <tokenizer's vocab size>, "requested_vocab_size": int | null,
     "bos_token": ..., "bos_id": 0, "eos_token": ..., "eos_id": 1,
     "source": <description>, "source_stats": {...} | null, "source_info": {...} | null,
     "input": {"documents": N, "fingerprint": ..., "val_fraction": ..., "shuffle_seed": ...,
               "shard_documents": ...},
     "splits": {"train": {"documents": n, "skipped_documents": n_empty, "tokens": t,
                          "shards": [{"file": "train/shard_00000.bin",
                                      "index": "train/shard_00000.docs.npy",
                                      "documents": d, "tokens": t}, ...]},
                "val": {...}}}
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from tst_titan import corpus
from tst_titan.corpus import atomic_write_bytes

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "DTYPE",
    "SPLITS",
    "StoreMismatchError",
    "build_store",
    "TokenStore",
    "embedded_source_name",
    "embedded_source_info",
    "ensure_embedded_store",
    "ensure_folder_store",
    "folder_signature",
    "read_manifest",
]

FORMAT = "tst_titan.token_store"
FORMAT_VERSION = 1
DTYPE = np.dtype("<u4")
SPLITS = ("train", "val")
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
BUILD_HINT = (
    "build one with `python -m tst_titan.prepare --out {path} --embedded` "
    "(or --folder PATH / --hf NAME)"
)


class StoreMismatchError(ValueError):
    """The directory holds a store (or a partial build) made from other inputs."""


# ---------------------------------------------------------------------------------------------
# helpers


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8")


def _load_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_manifest(store_dir: str | os.PathLike) -> dict | None:
    """The manifest of a complete store, or None if ``store_dir`` holds none."""
    path = Path(store_dir) / MANIFEST
    if not path.is_file():
        return None
    manifest = _load_json(path)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a tst_titan token store manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has format_version {manifest.get('format_version')}, this code reads "
            f"{FORMAT_VERSION}: rebuild the store"
        )
    return manifest


def _fingerprint(texts: list[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _build_key(params: dict) -> str:
    return hashlib.blake2b(
        json.dumps(params, sort_keys=True).encode("utf-8"), digest_size=16
    ).hexdigest()


def _stats_dict(source_stats) -> dict | None:
    if source_stats is None:
        return None
    if hasattr(source_stats, "as_dict"):
        return source_stats.as_dict()
    return dict(source_stats)


def _shard_name(k: int) -> str:
    return f"shard_{k:05d}"


# ---------------------------------------------------------------------------------------------
# tokenizing


class _Encoder:
    """Tokenizes a batch of documents to one uint32 array of ``[bos] ids [eos]`` per document.

    ``num_workers=None``: the tokenizer's own Rust thread pool (``encode_batch_fast``; on 2 cores
    ~1.5x a serial loop, as fast as 2 processes, and safe inside a process that already runs
    threads). ``1``: serial. ``N > 1``: a pool of N forked processes each running
    ``encode_batch_fast`` single-threaded.
    """

    def __init__(self, tokenizer, bos_id: int, eos_id: int, num_workers: int | None):
        if num_workers is not None and num_workers < 1:
            raise ValueError(f"num_workers must be >= 1 or None, got {num_workers}")
        self.tokenizer = tokenizer
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.num_workers = num_workers
        self._pool = None

    def __enter__(self):
        if self.num_workers is not None and self.num_workers > 1:
            import multiprocessing

            ctx = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
            # the workers run single-threaded (and silently: tokenizers warns when a process
            # forks after using its thread pool); the parent's setting is restored at once
            previous = os.environ.get("TOKENIZERS_PARALLELISM")
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
            try:
                self._pool = ctx.Pool(
                    self.num_workers, initializer=_worker_init,
                    initargs=(self.tokenizer.to_str(),),
                )
            finally:
                if previous is None:
                    del os.environ["TOKENIZERS_PARALLELISM"]
                else:
                    os.environ["TOKENIZERS_PARALLELISM"] = previous
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def encode(self, texts: list[str]) -> list[list[int]]:
        if self._pool is not None:
            n = self.num_workers
            step = max(1, -(-len(texts) // (4 * n)))
            parts = [texts[i : i + step] for i in range(0, len(texts), step)]
            return [ids for part in self._pool.map(_worker_encode, parts) for ids in part]
        if self.num_workers == 1:
            return [self.tokenizer.encode(t).ids for t in texts]
        return [e.ids for e in self.tokenizer.encode_batch_fast(texts)]

    def tokens(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(tokens uint32, per-document token counts int64) for ``texts``."""
        ids = self.encode(texts)
        counts = np.fromiter((len(x) + 2 for x in ids), dtype=np.int64, count=len(ids))
        out = np.empty(int(counts.sum()), dtype=DTYPE)
        pos = 0
        for x in ids:
            out[pos] = self.bos_id
            end = pos + 1 + len(x)
            out[pos + 1 : end] = x
            out[end] = self.eos_id
            pos = end + 1
        return out, counts


_WORKER_TOKENIZER = None


def _worker_init(tokenizer_json: str) -> None:
    global _WORKER_TOKENIZER
    from tokenizers import Tokenizer

    _WORKER_TOKENIZER = Tokenizer.from_str(tokenizer_json)


def _worker_encode(texts: list[str]) -> list[list[int]]:
    return [e.ids for e in _WORKER_TOKENIZER.encode_batch_fast(texts)]


# ---------------------------------------------------------------------------------------------
# building


def build_store(
    out_dir: str | os.PathLike,
    documents: Iterable[str],
    *,
    vocab_size: int | None = None,
    tokenizer_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.02,
    shard_documents: int = 2000,
    num_workers: int | None = None,
    shuffle_seed: int = 0,
    source: str = "documents",
    source_stats=None,
    source_info: dict | None = None,
    on_shard: Callable[[dict], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Tokenize ``documents`` into a token store at ``out_dir``; return its manifest.

    The tokenizer is trained on the training split with ``vocab_size`` (or loaded from
    ``tokenizer_dir``, whose vocabulary must then fit ``vocab_size`` if that is given too).
    Empty documents are skipped and counted. ``source`` describes the input (kept in the
    manifest; :func:`ensure_embedded_store` matches on it); ``source_stats`` (a
    :class:`~tst_titan.corpus.CorpusStats` or dict, read after ``documents`` is exhausted) is kept
    in the manifest too, and so is ``source_info`` (free-form, e.g. a folder signature); neither
    is part of the inputs' identity.

    Resumable: shards are written atomically and recorded in ``progress.json``; a re-run with the
    same inputs and parameters keeps the finished shards (and the tokenizer) and builds the rest.
    A complete store with the same inputs is returned as is; a complete store or partial build
    from other inputs, parameters or tokenizer raises :class:`StoreMismatchError`.
    ``on_shard(info)`` is called after each shard is written or found finished (info: split,
    shard, shards, documents, tokens, reused); an exception from it interrupts the build.
    """
    out = Path(out_dir)
    log = log or (lambda msg: None)
    if vocab_size is None and tokenizer_dir is None:
        raise ValueError("build_store needs vocab_size (to train a tokenizer) or tokenizer_dir")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if shard_documents < 1:
        raise ValueError(f"shard_documents must be >= 1, got {shard_documents}")

    given_tokenizer = None
    if tokenizer_dir is not None:
        tokenizer, bos_token, eos_token = corpus.load_tokenizer(tokenizer_dir)
        given_sha = corpus.tokenizer_sha256(tokenizer_dir)
        size = tokenizer.get_vocab_size(with_added_tokens=True)
        if vocab_size is not None and size > vocab_size:
            raise ValueError(
                f"tokenizer in {str(tokenizer_dir)!r} has {size} tokens, more than vocab_size "
                f"{vocab_size}"
            )
        given_tokenizer = (tokenizer, bos_token, eos_token, given_sha)

    t0 = time.perf_counter()
    texts = list(documents)
    if any(not isinstance(t, str) for t in texts):
        bad = next(type(t).__name__ for t in texts if not isinstance(t, str))
        raise TypeError(f"documents must be str, got {bad}")
    params = {
        "format_version": FORMAT_VERSION,
        "fingerprint": _fingerprint(texts),
        "documents": len(texts),
        "val_fraction": val_fraction,
        "shuffle_seed": shuffle_seed,
        "shard_documents": shard_documents,
        "requested_vocab_size": vocab_size,
        "given_tokenizer_sha256": given_tokenizer[3] if given_tokenizer else None,
    }
    key = _build_key(params)
    log(f"read {len(texts)} documents in {time.perf_counter() - t0:.1f}s")

    # -- what is already there?
    manifest = read_manifest(out) if out.is_dir() else None
    if manifest is not None:
        if manifest.get("build_key") == key:
            log(f"{out} already holds this store: nothing to do")
            return manifest
        raise StoreMismatchError(_mismatch_message(out, manifest, params, complete=True))
    progress = None
    if (out / PROGRESS).is_file():
        progress = _load_json(out / PROGRESS)
        if progress.get("build_key") != key:
            raise StoreMismatchError(_mismatch_message(out, progress, params, complete=False))
    elif out.is_dir() and any(out.iterdir()):
        raise StoreMismatchError(
            f"{str(out)!r} exists and is not empty, but holds no token store or partial build "
            f"(no {MANIFEST} or {PROGRESS}): choose an empty or new directory"
        )
    out.mkdir(parents=True, exist_ok=True)
    if progress is None:
        # claim the directory before anything else is written, so an interruption at any point
        # leaves something a re-run recognises
        progress = {"build_key": key, "params": params, "tokenizer_sha256": None, "shards": {}}
        atomic_write_bytes(out / PROGRESS, _json_bytes(progress))

    # -- split
    split_docs: dict[str, list[int]] = {s: [] for s in SPLITS}
    skipped = {s: 0 for s in SPLITS}
    for i, text in enumerate(texts):
        split = corpus.split_of(text, val_fraction)
        if text:
            split_docs[split].append(i)
        else:
            skipped[split] += 1

    # -- tokenizer
    if given_tokenizer is not None:
        tokenizer, bos_token, eos_token, _ = given_tokenizer
        trained = False
        if not ((out / "tokenizer.json").is_file()
                and corpus.tokenizer_sha256(out) == progress.get("tokenizer_sha256")):
            shutil.copyfile(Path(tokenizer_dir) / "tokenizer.json", out / "tokenizer.json.tmp")
            os.replace(out / "tokenizer.json.tmp", out / "tokenizer.json")
            config_src = Path(tokenizer_dir) / "tokenizer_config.json"
            if config_src.is_file():
                shutil.copyfile(config_src, out / "tokenizer_config.json.tmp")
                os.replace(out / "tokenizer_config.json.tmp", out / "tokenizer_config.json")
            else:
                config = dict(corpus.tokenizer_config(), bos_token=bos_token, eos_token=eos_token)
                atomic_write_bytes(out / "tokenizer_config.json", _json_bytes(config))
    else:
        trained = True
        reuse = (
            (out / "tokenizer.json").is_file()
            and corpus.tokenizer_sha256(out) == progress.get("tokenizer_sha256")
        )
        if reuse:
            tokenizer, bos_token, eos_token = corpus.load_tokenizer(out)
            log("resuming: reusing the tokenizer of the partial build")
        else:
            if not split_docs["train"]:
                raise ValueError("no non-empty training document to train the tokenizer on")
            t1 = time.perf_counter()
            tokenizer = corpus.train_tokenizer((texts[i] for i in split_docs["train"]), vocab_size)
            corpus.save_tokenizer(tokenizer, out)
            bos_token, eos_token = corpus.BOS_TOKEN, corpus.EOS_TOKEN
            log(
                f"trained a {tokenizer.get_vocab_size()}-token BPE tokenizer on "
                f"{len(split_docs['train'])} training documents in {time.perf_counter() - t1:.1f}s"
            )
    tok_sha = corpus.tokenizer_sha256(out)
    bos_id = tokenizer.token_to_id(bos_token)
    eos_id = tokenizer.token_to_id(eos_token)
    if progress.get("tokenizer_sha256") != tok_sha:
        progress = {"build_key": key, "params": params, "tokenizer_sha256": tok_sha, "shards": {}}
        atomic_write_bytes(out / PROGRESS, _json_bytes(progress))

    # -- shards
    splits_info: dict[str, dict] = {}
    with _Encoder(tokenizer, bos_id, eos_id, num_workers) as encoder:
        for split in SPLITS:
            order = list(split_docs[split])
            random.Random(f"{shuffle_seed}/{split}").shuffle(order)
            (out / split).mkdir(exist_ok=True)
            groups = [order[i : i + shard_documents] for i in range(0, len(order), shard_documents)]
            shards = []
            for k, group in enumerate(groups):
                name = _shard_name(k)
                rel_bin, rel_idx = f"{split}/{name}.bin", f"{split}/{name}.docs.npy"
                done = progress["shards"].get(rel_bin)
                reused = (
                    done is not None
                    and done["documents"] == len(group)
                    and (out / rel_bin).is_file()
                    and (out / rel_bin).stat().st_size == done["tokens"] * DTYPE.itemsize
                    and (out / rel_idx).is_file()
                )
                if reused:
                    n_tokens = done["tokens"]
                else:
                    t1 = time.perf_counter()
                    tokens, counts = encoder.tokens([texts[i] for i in group])
                    index = np.stack([np.asarray(group, dtype=np.int64), counts], axis=1)
                    atomic_write_bytes(out / rel_bin, tokens.tobytes())
                    tmp_idx = out / (rel_idx + ".tmp.npy")
                    np.save(tmp_idx, index)
                    os.replace(tmp_idx, out / rel_idx)
                    n_tokens = int(tokens.size)
                    progress["shards"][rel_bin] = {"documents": len(group), "tokens": n_tokens}
                    atomic_write_bytes(out / PROGRESS, _json_bytes(progress))
                    log(
                        f"{split} {name}: {len(group)} documents, {n_tokens} tokens "
                        f"({n_tokens / max(time.perf_counter() - t1, 1e-9):,.0f} tokens/s)"
                    )
                shards.append(
                    {"file": rel_bin, "index": rel_idx, "documents": len(group), "tokens": n_tokens}
                )
                if on_shard is not None:
                    on_shard({
                        "split": split, "shard": k, "shards": len(groups),
                        "documents": len(group), "tokens": n_tokens, "reused": reused,
                    })
            splits_info[split] = {
                "documents": len(order),
                "skipped_documents": skipped[split],
                "tokens": sum(s["tokens"] for s in shards),
                "shards": shards,
            }
            _remove_stale_shards(out / split, len(groups))

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "complete": True,
        "build_key": key,
        "dtype": "uint32",
        "byteorder": "little",
        "tokenizer_sha256": tok_sha,
        "tokenizer_trained": trained,
        "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
        "requested_vocab_size": vocab_size,
        "bos_token": bos_token,
        "bos_id": bos_id,
        "eos_token": eos_token,
        "eos_id": eos_id,
        "source": source,
        "source_stats": _stats_dict(source_stats),
        "source_info": source_info,
        "input": {
            "documents": len(texts),
            "fingerprint": params["fingerprint"],
            "val_fraction": val_fraction,
            "shuffle_seed": shuffle_seed,
            "shard_documents": shard_documents,
        },
        "splits": splits_info,
    }
    atomic_write_bytes(out / MANIFEST, _json_bytes(manifest))
    (out / PROGRESS).unlink(missing_ok=True)
    for leftover in out.glob("*.tmp"):
        leftover.unlink()
    return manifest


def _remove_stale_shards(split_dir: Path, n_shards: int) -> None:
    """Delete leftovers (tmp files, shards beyond the last) of an interrupted build."""
    for path in split_dir.iterdir():
        name = path.name
        if ".tmp" in name:
            path.unlink()
        elif name.startswith("shard_"):
            try:
                k = int(name[len("shard_") :].split(".")[0])
            except ValueError:
                continue
            if k >= n_shards:
                path.unlink()


def _mismatch_message(out: Path, existing: dict, params: dict, *, complete: bool) -> str:
    what = "a complete token store" if complete else "a partial build"
    old = existing.get("params") or {
        "fingerprint": existing.get("input", {}).get("fingerprint"),
        "documents": existing.get("input", {}).get("documents"),
        "val_fraction": existing.get("input", {}).get("val_fraction"),
        "shuffle_seed": existing.get("input", {}).get("shuffle_seed"),
        "shard_documents": existing.get("input", {}).get("shard_documents"),
        "requested_vocab_size": existing.get("requested_vocab_size"),
        "given_tokenizer_sha256": (
            None if existing.get("tokenizer_trained", True) else existing.get("tokenizer_sha256")
        ),
    }
    names = {
        "fingerprint": "documents' content",
        "documents": "number of documents",
        "given_tokenizer_sha256": "tokenizer (sha256 of tokenizer.json)",
    }
    diffs = [
        f"{names.get(k, k)}: {old.get(k)!r} there, {params.get(k)!r} now"
        for k in params
        if k != "format_version" and old.get(k) != params.get(k)
    ]
    return (
        f"{str(out)!r} holds {what} made from other inputs or parameters "
        f"({'; '.join(diffs) or 'build key differs'}). Not mixing them: delete the directory "
        f"or choose another output directory."
    )


# ---------------------------------------------------------------------------------------------
# serving


class TokenStore:
    """Read-only view of one split of a token store, memory-mapped.

    ``len(store)`` is the number of tokens; ``store.slice(start, stop)`` (or ``store[start:stop]``)
    returns a fresh ``np.ndarray`` of uint32 ids, crossing shard boundaries with one
    ``np.concatenate`` at most. Picklable (memory maps are reopened lazily), so it can be handed
    to DataLoader workers.
    """

    def __init__(self, store_dir: str | os.PathLike, split: str = "train"):
        self.store_dir = Path(store_dir)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split = split
        if not self.store_dir.is_dir():
            raise FileNotFoundError(
                f"token store {str(self.store_dir)!r} does not exist: "
                + BUILD_HINT.format(path=self.store_dir)
            )
        manifest = read_manifest(self.store_dir)
        if manifest is None:
            partial = (self.store_dir / PROGRESS).is_file()
            raise FileNotFoundError(
                f"no {MANIFEST} in {str(self.store_dir)!r}"
                + (" (an interrupted build: re-run the same command to finish it)" if partial else "")
                + ": "
                + BUILD_HINT.format(path=self.store_dir)
            )
        self.manifest = manifest
        info = manifest["splits"].get(split)
        if not info or info["tokens"] == 0:
            raise ValueError(
                f"token store {str(self.store_dir)!r} has no {split!r} tokens "
                f"({(info or {}).get('documents', 0)} documents); with few documents raise "
                f"--val-fraction or use a larger corpus"
            )
        self._shards = info["shards"]
        self._offsets = np.zeros(len(self._shards) + 1, dtype=np.int64)
        np.cumsum([s["tokens"] for s in self._shards], out=self._offsets[1:])
        for s in self._shards:
            path = self.store_dir / s["file"]
            if not path.is_file() or path.stat().st_size != s["tokens"] * DTYPE.itemsize:
                raise ValueError(
                    f"token store {str(self.store_dir)!r}: shard {s['file']} is missing or has the "
                    f"wrong size (expected {s['tokens']} tokens): rebuild the store"
                )
        self._maps: list[np.memmap] | None = None

    # -- properties
    @property
    def path(self) -> Path:
        """The store directory (also its tokenizer directory)."""
        return self.store_dir

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["vocab_size"])

    @property
    def bos_id(self) -> int:
        return int(self.manifest["bos_id"])

    @property
    def eos_id(self) -> int:
        return int(self.manifest["eos_id"])

    @property
    def num_documents(self) -> int:
        return int(self.manifest["splits"][self.split]["documents"])

    @property
    def num_shards(self) -> int:
        return len(self._shards)

    @property
    def shard_offsets(self) -> np.ndarray:
        """Token offset of each shard's start, plus the total at the end."""
        return self._offsets.copy()

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __repr__(self) -> str:
        return (
            f"TokenStore({str(self.store_dir)!r}, split={self.split!r}: {len(self):,} tokens, "
            f"{self.num_documents:,} documents, {self.num_shards} shards, vocab {self.vocab_size})"
        )

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_maps"] = None
        return state

    def _memmaps(self) -> list[np.memmap]:
        if self._maps is None:
            self._maps = [
                np.memmap(self.store_dir / s["file"], dtype=DTYPE, mode="r", shape=(s["tokens"],))
                for s in self._shards
            ]
        return self._maps

    # -- access
    def slice(self, start: int, stop: int) -> np.ndarray:
        """Tokens ``[start, stop)`` of the split as a new uint32 array (native byte order).

        ``0 <= start <= stop <= len(self)`` is required (IndexError otherwise).
        """
        start, stop, total = int(start), int(stop), len(self)
        if not 0 <= start <= stop <= total:
            raise IndexError(f"slice [{start}, {stop}) out of range for {total} tokens")
        if start == stop:
            return np.empty(0, dtype=np.uint32)
        maps = self._memmaps()
        first = int(np.searchsorted(self._offsets, start, side="right")) - 1
        last = int(np.searchsorted(self._offsets, stop, side="left")) - 1
        if first == last:
            base = self._offsets[first]
            return np.array(maps[first][start - base : stop - base], dtype=np.uint32)
        pieces = []
        for k in range(first, last + 1):
            lo = max(start, self._offsets[k]) - self._offsets[k]
            hi = min(stop, self._offsets[k + 1]) - self._offsets[k]
            pieces.append(maps[k][lo:hi])
        return np.concatenate(pieces).astype(np.uint32, copy=False)

    def __getitem__(self, item):
        if isinstance(item, slice):
            start, stop, step = item.indices(len(self))
            if step != 1:
                raise ValueError("TokenStore slices must have step 1")
            return self.slice(start, max(start, stop))
        index = int(item)
        if index < 0:
            index += len(self)
        return int(self.slice(index, index + 1)[0])

    def documents(self) -> np.ndarray:
        """int64 ``[documents, 3]``: (input index, start token, token count) in store order.

        The input index is the document's position in the iterable given to :func:`build_store`;
        each document spans ``[bos] + ids + [eos]`` from ``start``.
        """
        parts = [np.load(self.store_dir / s["index"]) for s in self._shards]
        index = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)
        starts = np.zeros(len(index), dtype=np.int64)
        if len(index):
            np.cumsum(index[:-1, 1], out=starts[1:])
        return np.stack([index[:, 0], starts, index[:, 1]], axis=1)


# ---------------------------------------------------------------------------------------------
# the embedded corpus, built once on first use


def embedded_source_info(include_site_packages: bool = False) -> dict:
    """What the embedded corpus is on this machine (kept in the manifest, not matched on)."""
    import sysconfig

    paths = sysconfig.get_paths()
    roots = [paths["stdlib"]] + ([paths["purelib"]] if include_site_packages else [])
    return {"python": sys.version.split()[0], "roots": roots}


def embedded_source_name(include_site_packages: bool = False) -> str:
    return "embedded:stdlib+site-packages" if include_site_packages else "embedded:stdlib"


def ensure_embedded_store(
    store_dir: str | os.PathLike,
    vocab_size: int,
    include_site_packages: bool = False,
    *,
    log: Callable[[str], None] | None = None,
    **build_kwargs,
) -> dict:
    """Build the embedded-corpus store at ``store_dir`` unless it is there; return its manifest.

    Safe to call from several processes at once (ranks starting together): the build runs under
    ``filelock.FileLock(store_dir + ".lock")`` and the others wait, then find it complete. A
    complete store with the same ``vocab_size`` and source returns at once without reading the
    corpus; one with another vocab size or source raises ``ValueError``.
    """
    from filelock import FileLock

    store_dir = Path(store_dir)
    source = embedded_source_name(include_site_packages)

    def check(manifest: dict) -> dict:
        problems = []
        if manifest.get("requested_vocab_size") != vocab_size:
            problems.append(
                f"it was built with vocab_size {manifest.get('requested_vocab_size')}, "
                f"the model asks for {vocab_size}"
            )
        if manifest.get("source") != source:
            problems.append(f"it holds {manifest.get('source')!r}, not {source!r}")
        if problems:
            raise ValueError(
                f"token store at training.dataset_path = {str(store_dir)!r} does not match: "
                + "; ".join(problems)
                + ". Point training.dataset_path at another directory (or delete this one)."
            )
        return manifest

    manifest = read_manifest(store_dir) if store_dir.is_dir() else None
    if manifest is not None:
        return check(manifest)
    store_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(store_dir) + ".lock"):
        manifest = read_manifest(store_dir) if store_dir.is_dir() else None
        if manifest is not None:
            return check(manifest)
        stats = corpus.CorpusStats()
        docs = corpus.embedded_documents(include_site_packages, stats=stats)
        try:
            return build_store(
                store_dir,
                docs,
                vocab_size=vocab_size,
                source=source,
                source_stats=stats,
                source_info=embedded_source_info(include_site_packages),
                log=log,
                **build_kwargs,
            )
        except StoreMismatchError as exc:
            raise StoreMismatchError(f"training.dataset_path = {str(store_dir)!r}: {exc}") from exc


def folder_signature(folder: str | os.PathLike) -> str:
    """A cheap signature of a document folder: blake2b of the sorted (relative path, size) of
    its usable files (no reading). Edits that keep every file's size are not seen."""
    root = Path(folder)
    h = hashlib.blake2b(digest_size=16)
    files = [root] if root.is_file() else corpus._folder_files(root)
    for path in files:
        rel = path.name if path == root else path.relative_to(root).as_posix()
        h.update(f"{rel}\0{path.stat().st_size}\n".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def ensure_folder_store(
    store_dir: str | os.PathLike,
    folder: str | os.PathLike,
    vocab_size: int,
    *,
    log: Callable[[str], None] | None = None,
    **build_kwargs,
) -> dict:
    """Like :func:`ensure_embedded_store`, for the documents of a local folder
    (:func:`tst_titan.corpus.folder_documents`).

    A complete store is reused when its vocab size matches and the folder's
    :func:`folder_signature` (file names and sizes) is unchanged; otherwise ``ValueError`` (delete
    the store directory to rebuild). The store may live inside the folder under a hidden name
    (``.tst_store``): hidden files and folders are not documents.
    """
    from filelock import FileLock

    store_dir, folder = Path(store_dir), Path(folder)
    if not folder.exists():
        # the clear error of folder_documents, before any lock or directory is made
        corpus.folder_documents(folder)

    def check(manifest: dict) -> dict:
        problems = []
        if manifest.get("requested_vocab_size") != vocab_size:
            problems.append(
                f"it was built with vocab_size {manifest.get('requested_vocab_size')}, "
                f"the model asks for {vocab_size}"
            )
        info = manifest.get("source_info") or {}
        if not str(manifest.get("source", "")).startswith("folder:"):
            problems.append(f"it holds {manifest.get('source')!r}, not a folder's documents")
        elif info.get("folder_signature") != folder_signature(folder):
            problems.append(
                f"the files of {str(folder)!r} changed (names or sizes) since it was built"
            )
        if problems:
            raise ValueError(
                f"token store {str(store_dir)!r} for training.dataset_path = {str(folder)!r} does "
                "not match: " + "; ".join(problems) + ". Delete the store directory to rebuild it."
            )
        return manifest

    manifest = read_manifest(store_dir) if store_dir.is_dir() else None
    if manifest is not None:
        return check(manifest)
    store_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(store_dir) + ".lock"):
        manifest = read_manifest(store_dir) if store_dir.is_dir() else None
        if manifest is not None:
            return check(manifest)
        stats = corpus.CorpusStats()
        signature = folder_signature(folder)
        docs = corpus.folder_documents(folder, stats=stats)
        try:
            return build_store(
                store_dir,
                docs,
                vocab_size=vocab_size,
                source=f"folder:{folder.resolve()}",
                source_stats=stats,
                source_info={"folder_signature": signature},
                log=log,
                **build_kwargs,
            )
        except StoreMismatchError as exc:
            raise StoreMismatchError(
                f"store {str(store_dir)!r} of training.dataset_path = {str(folder)!r}: {exc}"
            ) from exc
