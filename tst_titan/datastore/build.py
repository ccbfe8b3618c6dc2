"""Building a token store: tokenizing documents once into shards, resumably; the document
source a store is built from; building it once on first use (:func:`ensure_store`).

The format of what is built is in :mod:`tst_titan.datastore.store`.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import sys
import sysconfig
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from filelock import FileLock
from tokenizers import Tokenizer

from tst_titan.datastore.sources import (
    CORPUS_DISTRIBUTIONS,
    CorpusStats,
    corpus_sha256,
    embedded_documents,
    folder_documents,
    folder_files,
    hf_documents,
    split_of,
)
from tst_titan.datastore.store import (
    DTYPE,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    PROGRESS,
    SPLITS,
    StoreMismatchError,
    atomic_write_bytes,
    read_manifest,
)
from tst_titan.datastore.tokenizer import (
    BOS_TOKEN,
    EOS_TOKEN,
    load_tokenizer,
    save_tokenizer,
    tokenizer_config,
    tokenizer_sha256,
    train_tokenizer,
)

__all__ = [
    "build_store",
    "embedded_source_name",
    "embedded_source_info",
    "folder_signature",
    "document_source",
    "ensure_store",
]


# ---------------------------------------------------------------------------------------------
# helpers


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8")


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
    manifest; :func:`ensure_store` matches on it); ``source_stats`` (a
    :class:`~tst_titan.datastore.sources.CorpusStats` or dict, read after ``documents`` is
    exhausted) is kept in the manifest too, and so is ``source_info`` (free-form, e.g. a folder
    signature); neither is part of the inputs' identity.

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
        tokenizer, bos_token, eos_token = load_tokenizer(tokenizer_dir)
        given_sha = tokenizer_sha256(tokenizer_dir)
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
            if "corpus_sha256" not in manifest:  # built before stores recorded it: add it
                manifest["corpus_sha256"] = corpus_sha256(texts)
                atomic_write_bytes(out / MANIFEST, _json_bytes(manifest))
                log(f"{out}: recorded its corpus_sha256 {manifest['corpus_sha256'][:12]}")
            else:
                log(f"{out} already holds this store: nothing to do")
            return manifest
        raise StoreMismatchError(_mismatch_message(out, manifest, params, complete=True))
    progress = None
    if (out / PROGRESS).is_file():
        progress = json.loads((out / PROGRESS).read_text(encoding="utf-8"))
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
        split = split_of(text, val_fraction)
        if text:
            split_docs[split].append(i)
        else:
            skipped[split] += 1

    # -- tokenizer (a partial build's is kept when it is still the one its progress recorded)
    kept_tokenizer = (
        (out / "tokenizer.json").is_file()
        and tokenizer_sha256(out) == progress.get("tokenizer_sha256")
    )
    if given_tokenizer is not None:
        tokenizer, bos_token, eos_token, _ = given_tokenizer
        trained = False
        if not kept_tokenizer:
            shutil.copyfile(Path(tokenizer_dir) / "tokenizer.json", out / "tokenizer.json.tmp")
            os.replace(out / "tokenizer.json.tmp", out / "tokenizer.json")
            config_src = Path(tokenizer_dir) / "tokenizer_config.json"
            if config_src.is_file():
                shutil.copyfile(config_src, out / "tokenizer_config.json.tmp")
                os.replace(out / "tokenizer_config.json.tmp", out / "tokenizer_config.json")
            else:
                config = dict(tokenizer_config(), bos_token=bos_token, eos_token=eos_token)
                atomic_write_bytes(out / "tokenizer_config.json", _json_bytes(config))
    else:
        trained = True
        if kept_tokenizer:
            tokenizer, bos_token, eos_token = load_tokenizer(out)
            log("resuming: reusing the tokenizer of the partial build")
        else:
            if not split_docs["train"]:
                raise ValueError("no non-empty training document to train the tokenizer on")
            t1 = time.perf_counter()
            tokenizer = train_tokenizer((texts[i] for i in split_docs["train"]), vocab_size)
            save_tokenizer(tokenizer, out)
            bos_token, eos_token = BOS_TOKEN, EOS_TOKEN
            log(
                f"trained a {tokenizer.get_vocab_size()}-token BPE tokenizer on "
                f"{len(split_docs['train'])} training documents in {time.perf_counter() - t1:.1f}s"
            )
    tok_sha = tokenizer_sha256(out)
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
        "corpus_sha256": corpus_sha256(texts),
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
# what a store is built from


def embedded_source_info(include_site_packages: bool = False) -> dict:
    """What the embedded corpus is on this machine (kept in the manifest, not matched on): the
    Python version (its stdlib is part of the corpus), and for the large corpus the pinned
    distributions (name -> version) whose sources it adds."""
    info = {"python": sys.version.split()[0], "stdlib": sysconfig.get_paths()["stdlib"]}
    if include_site_packages:
        info["distributions"] = dict(CORPUS_DISTRIBUTIONS)
    return info


def embedded_source_name(include_site_packages: bool = False) -> str:
    """The manifest's ``source`` of the embedded corpus: the stdlib alone, or with the pinned
    distributions' sources (``sources.CORPUS_DISTRIBUTIONS``)."""
    return "embedded:stdlib+pinned-packages" if include_site_packages else "embedded:stdlib"


def folder_signature(folder: str | os.PathLike) -> str:
    """A cheap signature of a document folder: blake2b of the sorted (relative path, size) of
    its usable files (no reading). Edits that keep every file's size are not seen."""
    root = Path(folder)
    h = hashlib.blake2b(digest_size=16)
    files = [root] if root.is_file() else folder_files(root)
    for path in files:
        rel = path.name if path == root else path.relative_to(root).as_posix()
        h.update(f"{rel}\0{path.stat().st_size}\n".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def document_source(
    *,
    folder: str | os.PathLike | None = None,
    hf: str | None = None,
    include_site_packages: bool = False,
    text_field: str | None = None,
    hf_config: str | None = None,
    hf_split: str | None = None,
    max_documents: int | None = None,
    stats: CorpusStats | None = None,
) -> tuple[str, dict | None, Iterator[str]]:
    """``(source, source_info, documents)`` to give :func:`build_store`: the documents of the
    local ``folder``, of the Hugging Face dataset ``hf``, or (neither given) of the embedded
    corpus (with ``include_site_packages``, the pinned installed distributions' sources too:
    ``sources.CORPUS_DISTRIBUTIONS``).

    ``source`` names them in the manifest (``embedded:stdlib``, ``folder:<absolute path>``,
    ``hf:<name>[/<config>][<split>]``); ``source_info`` is :func:`embedded_source_info`, a
    folder's :func:`folder_signature` or None. ``text_field`` (``"text"``) is for a folder or a
    dataset; ``hf_config``, ``hf_split`` (``"train"``) and ``max_documents`` for a dataset.
    """
    if folder is not None and hf is not None:
        raise ValueError("document_source takes a folder or a dataset (hf), not both")
    if include_site_packages and (folder is not None or hf is not None):
        raise ValueError("include_site_packages is for the embedded corpus only")
    text_field = text_field or "text"
    if folder is not None:
        docs = folder_documents(folder, text_field=text_field, stats=stats)
        info = {"folder_signature": folder_signature(folder)}
        return f"folder:{Path(folder).resolve()}", info, docs
    if hf is None:
        docs = embedded_documents(include_site_packages, stats=stats)
        info = embedded_source_info(include_site_packages)
        return embedded_source_name(include_site_packages), info, docs
    split = hf_split or "train"
    docs = hf_documents(
        hf,
        split=split,
        text_field=text_field,
        max_documents=max_documents,
        config=hf_config,
        stats=stats,
    )
    desc = f"hf:{hf}" + (f"/{hf_config}" if hf_config else "") + f"[{split}]"
    if max_documents is not None:
        desc += f" max_documents={max_documents}"
    return desc, None, docs


# ---------------------------------------------------------------------------------------------
# built once, on first use


def _store_problems(
    manifest: dict, vocab_size: int, folder: Path | None, include_site_packages: bool
) -> list[str]:
    """Why a complete store is not the one :func:`ensure_store` was asked for (empty: it is)."""
    problems = []
    if manifest.get("requested_vocab_size") != vocab_size:
        problems.append(
            f"it was built with vocab_size {manifest.get('requested_vocab_size')}, "
            f"the model asks for {vocab_size}"
        )
    if folder is None:
        source = embedded_source_name(include_site_packages)
        if manifest.get("source") != source:
            problems.append(f"it holds {manifest.get('source')!r}, not {source!r}")
    elif not str(manifest.get("source", "")).startswith("folder:"):
        problems.append(f"it holds {manifest.get('source')!r}, not a folder's documents")
    elif (manifest.get("source_info") or {}).get("folder_signature") != folder_signature(folder):
        problems.append(f"the files of {str(folder)!r} changed (names or sizes) since it was built")
    return problems


def ensure_store(
    store_dir: str | os.PathLike,
    vocab_size: int,
    *,
    folder: str | os.PathLike | None = None,
    include_site_packages: bool = False,
    log: Callable[[str], None] | None = None,
    **build_kwargs,
) -> dict:
    """Build the token store at ``store_dir`` unless it is there; return its manifest.

    Its documents are those of the local ``folder``
    (:func:`~tst_titan.datastore.sources.folder_documents`) or, with ``folder=None``, the embedded
    corpus (with ``include_site_packages``, the pinned installed distributions' sources too:
    ``sources.CORPUS_DISTRIBUTIONS``).

    Safe to call from several processes at once (ranks starting together): the build runs under
    ``filelock.FileLock(store_dir + ".lock")`` and the others wait, then find it complete. A
    complete store is returned at once, without reading the documents, when it was built with the
    same ``vocab_size`` from the same source: the same embedded corpus, or a folder whose
    :func:`folder_signature` (file names and sizes) is unchanged; otherwise ``ValueError`` (point
    at another directory, or delete this one to rebuild). A folder's store may live inside the
    folder under a hidden name (``.tst_store``): hidden files and folders are not documents.
    """
    store_dir = Path(store_dir)
    if folder is None:
        where = f"training.dataset_path = {str(store_dir)!r}"
        mismatch = f"token store at {where} does not match"
        remedy = "Point training.dataset_path at another directory (or delete this one)."
        build_context = where
    else:
        folder = Path(folder)
        if not folder.exists():
            # the clear error of folder_documents, before any lock or directory is made
            folder_documents(folder)
        where = f"training.dataset_path = {str(folder)!r}"
        mismatch = f"token store {str(store_dir)!r} for {where} does not match"
        remedy = "Delete the store directory to rebuild it."
        build_context = f"store {str(store_dir)!r} of {where}"

    def checked(manifest: dict) -> dict:
        problems = _store_problems(manifest, vocab_size, folder, include_site_packages)
        if problems:
            raise ValueError(f"{mismatch}: " + "; ".join(problems) + f". {remedy}")
        return manifest

    # A matching complete store is returned as it is; one built before stores recorded their
    # corpus_sha256 goes through build_store once more, which adds it (reading the documents).
    manifest = read_manifest(store_dir) if store_dir.is_dir() else None
    if manifest is not None and "corpus_sha256" in checked(manifest):
        return manifest
    store_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(store_dir) + ".lock"):
        manifest = read_manifest(store_dir) if store_dir.is_dir() else None
        if manifest is not None and "corpus_sha256" in checked(manifest):
            return manifest
        stats = CorpusStats()
        source, source_info, docs = document_source(
            folder=folder, include_site_packages=include_site_packages, stats=stats
        )
        try:
            return build_store(
                store_dir,
                docs,
                vocab_size=vocab_size,
                source=source,
                source_stats=stats,
                source_info=source_info,
                log=log,
                **build_kwargs,
            )
        except StoreMismatchError as exc:
            raise StoreMismatchError(f"{build_context}: {exc}") from exc
