"""A memory-mapped token store: its format, its manifest, serving slices of it fast.

Built by :func:`tst_titan.datastore.build.build_store` (tokenize a corpus once).

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
(:func:`tst_titan.datastore.sources.split_of`), the tokenizer is trained on the training split
only, and each split's documents are put in a seeded shuffled order before sharding, so that the
chunks of one source file are not all adjacent.

Manifest (``format_version`` 1)::

    {"format": "tst_titan.token_store", "format_version": 1, "complete": true,
     "build_key": <blake2b of inputs + parameters>,
     "corpus_sha256": <sha256 of the documents' texts in input order (sources.corpus_sha256)>,
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

``corpus_sha256`` names the text a store holds, whatever its kind (embedded, folder, dataset) and
wherever it was built: :func:`corpus_record` reads it with what else makes two stores' tokens and
validation sets the same, and :func:`check_same_corpus` refuses to compare runs of different
corpora. Stores built before it was recorded get it on their next ``ensure_store``; a prepared
store without it must be rebuilt.

:class:`DocumentOrderView` serves a split with its documents in another seeded order (the
training data order of ``tst.data_seed``).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "DTYPE",
    "SPLITS",
    "MANIFEST",
    "PROGRESS",
    "StoreMismatchError",
    "CorpusMismatchError",
    "CORPUS_KEYS",
    "read_manifest",
    "corpus_record",
    "check_same_corpus",
    "TokenStore",
    "document_order",
    "DocumentOrderView",
    "atomic_write_bytes",
]

FORMAT = "tst_titan.token_store"
FORMAT_VERSION = 1
DTYPE = np.dtype("<u4")
SPLITS = ("train", "val")
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
BUILD_HINT = (
    "build one with `python -m tst_titan.tools.prepare --out {path} --embedded` "
    "(or --folder PATH / --hf NAME)"
)


class StoreMismatchError(ValueError):
    """The directory holds a store (or a partial build) made from other inputs."""


class CorpusMismatchError(ValueError):
    """Runs (or results) that were trained on different corpora are about to be compared."""


#: What must agree for two runs' training text and validation sets to be the same: the corpus,
#: its tokenizer, and how it was split (and shuffled) into the store.
CORPUS_KEYS = ("corpus_sha256", "tokenizer_sha256", "val_fraction", "shuffle_seed")


# ---------------------------------------------------------------------------------------------
# files


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a partial one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


def corpus_record(store_dir: str | os.PathLike) -> dict:
    """What identifies the data of the store at ``store_dir``: :data:`CORPUS_KEYS` plus its
    ``source`` and path (for messages). Put it in every result trained on the store."""
    manifest = read_manifest(store_dir)
    if manifest is None:
        raise FileNotFoundError(f"no complete token store at {str(store_dir)!r} (no {MANIFEST})")
    if "corpus_sha256" not in manifest:
        raise ValueError(
            f"the token store at {str(store_dir)!r} was built before stores recorded their "
            "corpus_sha256: delete it and build it again (the embedded and folder stores record it "
            "on their next use)"
        )
    inputs = manifest["input"]
    return {
        "corpus_sha256": manifest["corpus_sha256"],
        "tokenizer_sha256": manifest["tokenizer_sha256"],
        "val_fraction": inputs["val_fraction"],
        "shuffle_seed": inputs["shuffle_seed"],
        "source": manifest["source"],
        "store": str(Path(store_dir).resolve()),
    }


def check_same_corpus(records: Mapping[str, Mapping]) -> str:
    """Refuse to compare runs trained on different data; return their common ``corpus_sha256``.

    ``records`` maps a run's (or result's) name to its :func:`corpus_record` (a benchmark JSON's
    ``"corpus"``). Raises :class:`CorpusMismatchError` naming every run and its value of each
    :data:`CORPUS_KEYS` key that differs, or the runs that record no corpus at all.
    """
    if not records:
        raise ValueError("check_same_corpus needs at least one record")
    missing = [name for name, rec in records.items() if not rec or not rec.get("corpus_sha256")]
    if missing:
        raise CorpusMismatchError(
            f"cannot tell which corpus {', '.join(map(repr, missing))} trained on (no corpus_sha256 "
            "recorded): not comparing it with other runs; re-run it with the current code"
        )
    problems = []
    for key in CORPUS_KEYS:
        values = {name: rec.get(key) for name, rec in records.items()}
        if len({json.dumps(v) for v in values.values()}) > 1:
            listed = "; ".join(
                f"{name}: {str(v)[:16] if key.endswith('sha256') else v!r} "
                f"({records[name].get('source', 'source unknown')})"
                for name, v in values.items()
            )
            problems.append(f"{key} differs -- {listed}")
    if problems:
        raise CorpusMismatchError(
            "these runs were not trained on the same data, so their losses cannot be compared: "
            + " | ".join(problems)
            + ". Re-run them on one corpus (the same token store)"
        )
    return next(iter(records.values()))["corpus_sha256"]


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
# another document order


def document_order(num_documents: int, seed: int) -> list[int]:
    """The order in which :class:`DocumentOrderView` serves a split's documents: the store's own
    order for seed 0, else a shuffle by ``random.Random`` seeded with a string (the same on every
    machine and Python version since 3.2)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"the document order seed must be an integer >= 0, got {seed!r}")
    order = list(range(num_documents))
    if seed:
        random.Random(f"tst_titan.data_seed/{seed}").shuffle(order)
    return order


class DocumentOrderView:
    """A split's token stream with its documents (each ``[bos] ids [eos]``, kept whole) in the
    order :func:`document_order` gives for ``seed``: the same tokens, the same length, another
    order. Serves ``slice``/``len``/``path`` like the store it wraps (a :class:`TokenStore` or
    anything with ``documents()`` and ``slice``)."""

    def __init__(self, store, seed: int):
        if not hasattr(store, "documents"):
            raise ValueError(
                f"{store!r} has no document boundaries (documents()), so its documents cannot be "
                "put in another order"
            )
        self.base = store
        self.seed = seed
        docs = np.asarray(store.documents(), dtype=np.int64)  # (index, start, count) per document
        order = np.asarray(document_order(len(docs), seed), dtype=np.int64)
        self._starts = docs[order, 1] if len(docs) else np.zeros(0, dtype=np.int64)
        counts = docs[order, 2] if len(docs) else np.zeros(0, dtype=np.int64)
        self._offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(counts, out=self._offsets[1:])
        if self._offsets[-1] != len(store):
            raise ValueError(
                f"{store!r}: its documents hold {int(self._offsets[-1])} tokens, its stream "
                f"{len(store)}: the store is damaged, rebuild it"
            )

    @property
    def path(self):
        return self.base.path

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __repr__(self) -> str:
        return f"DocumentOrderView({self.base!r}, seed={self.seed})"

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Tokens ``[start, stop)`` of the reordered stream (uint32), read from the documents
        that cover them."""
        start, stop, total = int(start), int(stop), len(self)
        if not 0 <= start <= stop <= total:
            raise IndexError(f"slice [{start}, {stop}) out of range for {total} tokens")
        if start == stop:
            return np.empty(0, dtype=np.uint32)
        first = int(np.searchsorted(self._offsets, start, side="right")) - 1
        last = int(np.searchsorted(self._offsets, stop, side="left")) - 1
        pieces = []
        for k in range(first, last + 1):
            lo = max(start, int(self._offsets[k])) - int(self._offsets[k])
            hi = min(stop, int(self._offsets[k + 1])) - int(self._offsets[k])
            base = int(self._starts[k])
            pieces.append(self.base.slice(base + lo, base + hi))
        out = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        return np.asarray(out, dtype=np.uint32)
