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

import json
import os
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
    "read_manifest",
    "TokenStore",
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
