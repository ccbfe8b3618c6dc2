"""Documents to train on: plain iterators of ``str`` from three sources.

* :func:`embedded_documents` -- text every machine with this package has: the running Python's
  standard-library ``.py`` sources (tests excluded), optionally (the "large" corpus) the ``.py``
  sources of a pinned list of installed distributions too (:data:`CORPUS_DISTRIBUTIONS`). Needs
  no network and no download.
* :func:`folder_documents` -- any local folder of ``.txt .md .rst .py`` files (one document per
  file) and ``.jsonl`` files (one document per line, field ``"text"``).
* :func:`hf_documents` -- a Hugging Face dataset, streamed (``"c4"``, ``"fineweb-edu"`` or any
  dataset name ``datasets.load_dataset`` accepts, including local builders such as ``"json"``).

File-based documents are cut into chunks of at most ``max_chars`` characters at line boundaries
(:func:`chunk_text`): whole files let one huge generated file (``pydoc_data/topics.py`` is 750 kB)
dominate early training steps.

Every source can fill a :class:`CorpusStats` passed as ``stats=`` so that nothing is dropped
silently: undecodable files, JSON lines without a string text field, empty files are counted.

:func:`split_of` assigns a document to ``"train"`` or ``"val"`` by a stable hash of its text, so
the split is deterministic, independent of document order and identical texts always land in the
same split. The tokenizer (:mod:`tst_titan.datastore.tokenizer`) is trained on the training split.

:func:`corpus_sha256` names a corpus by its content: the hash of its documents' texts in order.
"""

from __future__ import annotations

import dataclasses
import base64
import hashlib
import importlib.metadata
import itertools
import json
import os
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = [
    "MAX_CHARS",
    "TEXT_EXTENSIONS",
    "JSONL_EXTENSIONS",
    "FOLDER_EXTENSIONS",
    "HF_SHORT_NAMES",
    "CORPUS_DISTRIBUTIONS",
    "CorpusSourceError",
    "CorpusStats",
    "chunk_text",
    "corpus_sha256",
    "pinned_distribution_files",
    "is_test_path",
    "embedded_source_files",
    "embedded_documents",
    "folder_files",
    "folder_documents",
    "hf_documents",
    "split_of",
    "split_documents",
]

MAX_CHARS = 8000

TEXT_EXTENSIONS = (".txt", ".md", ".rst", ".py")
JSONL_EXTENSIONS = (".jsonl",)
FOLDER_EXTENSIONS = TEXT_EXTENSIONS + JSONL_EXTENSIONS

# Directory names whose contents are tests (anywhere in a relative path), and directories that
# are never part of the standard library proper.
TEST_DIR_NAMES = frozenset({"test", "tests", "idle_test"})
NON_SOURCE_DIR_NAMES = frozenset({"site-packages", "dist-packages", "__pycache__"})

#: The installed distributions whose ``.py`` sources join the standard library's in the large
#: embedded corpus, at the exact versions it is built from (name, version). All are pure-Python
#: wheels (``py3-none-any``: the same files on every platform) that this project's own
#: installation brings: torchtitan, torchdata and tyro are pinned exactly by pyproject.toml,
#: datasets / huggingface_hub and tensorboard are its dependencies, sympy, mpmath and networkx
#: torch 2.13.0's. Together with the stdlib about 45 MB of text (~22 M tokens at vocab 512).
#: torch itself is left out: its wheels are platform builds whose files differ between CPU and
#: CUDA builds, and GPU machines run other torch versions. An installed version that differs is
#: refused (:class:`CorpusSourceError`), never silently used or skipped: the corpus, and so every
#: result trained on it, would change without a word.
CORPUS_DISTRIBUTIONS: tuple[tuple[str, str], ...] = (
    ("torchtitan", "0.2.2"),
    ("torchdata", "0.11.0"),
    ("tyro", "1.0.17"),
    ("datasets", "5.2.0"),
    ("huggingface_hub", "2.4.0"),
    ("tensorboard", "2.21.0"),
    ("sympy", "1.14.0"),
    ("mpmath", "1.3.0"),
    ("networkx", "3.6.1"),
)

# short name -> (dataset name, config name)
HF_SHORT_NAMES: dict[str, tuple[str, str | None]] = {
    "c4": ("allenai/c4", "en"),
    "fineweb-edu": ("HuggingFaceFW/fineweb-edu", None),
}


class CorpusSourceError(ValueError):
    """The installed sources of the large embedded corpus are not the pinned ones."""


def corpus_sha256(documents: Iterable[str]) -> str:
    """sha256 naming a corpus by its content: over the non-empty documents in the given order,
    each as its UTF-8 byte length (8 bytes, little-endian) and bytes. Independent of where the
    files are, their names and times; empty documents (which add no token) do not count."""
    h = hashlib.sha256()
    for text in documents:
        if not text:
            continue
        data = text.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


@dataclasses.dataclass
class CorpusStats:
    """Counts filled in while a source is iterated (pass one as ``stats=``)."""

    files: int = 0  # files read and decoded
    documents: int = 0  # documents yielded
    empty_files: int = 0  # files with no text (yield no document)
    skipped_files: int = 0  # files that failed to decode as UTF-8
    skipped_records: int = 0  # JSON lines / dataset rows without a string text field
    invalid_json_lines: int = 0  # JSON lines that do not parse (also counted in skipped_records)
    skipped_examples: list[str] = dataclasses.field(default_factory=list)  # first few, "where: why"

    MAX_EXAMPLES = 10

    def note_skip(self, where: str, why: str) -> None:
        if len(self.skipped_examples) < self.MAX_EXAMPLES:
            self.skipped_examples.append(f"{where}: {why}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# chunking


def chunk_text(text: str, max_chars: int = MAX_CHARS) -> list[str]:
    """Cut ``text`` into pieces of at most ``max_chars`` characters, at ``\\n`` boundaries.

    Lines are packed greedily; a single line longer than ``max_chars`` is cut into
    ``max_chars``-sized pieces. ``"".join(chunk_text(t)) == t`` always; empty text gives ``[]``.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    if len(text) <= max_chars:
        return [text] if text else []
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in _split_keep_newlines(text):
        while len(line) > max_chars:
            if current:
                chunks.append("".join(current))
                current, size = [], 0
            chunks.append(line[:max_chars])
            line = line[max_chars:]
        if size + len(line) > max_chars and current:
            chunks.append("".join(current))
            current, size = [], 0
        if line:
            current.append(line)
            size += len(line)
    if current:
        chunks.append("".join(current))
    return chunks


def _split_keep_newlines(text: str) -> list[str]:
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


# ---------------------------------------------------------------------------------------------
# embedded corpus: Python sources


def is_test_path(relpath: str | os.PathLike) -> bool:
    """True when a path (relative to a source root) is test code or not a library source.

    Excluded: any directory named ``test``, ``tests`` or ``idle_test`` (so ``test/``,
    ``idlelib/idle_test``, ``lib2to3/tests``, ``unittest/test``, ``pkg/tests`` ...), anything under
    ``site-packages``/``dist-packages``/``__pycache__``, and files named ``test_*.py``,
    ``*_test.py`` or ``conftest.py``.
    """
    parts = Path(relpath).parts
    dirs, name = parts[:-1], parts[-1] if parts else ""
    if any(d in TEST_DIR_NAMES or d in NON_SOURCE_DIR_NAMES for d in dirs):
        return True
    return name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py"


def _python_files(root: Path) -> list[str]:
    """Relative paths of the ``.py`` files under ``root`` (not tests), sorted."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_parts = () if rel_dir == "." else Path(rel_dir).parts
        # prune excluded and hidden directories
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in TEST_DIR_NAMES and d not in NON_SOURCE_DIR_NAMES and not d.startswith(".")
        )
        for name in filenames:
            if not name.endswith(".py"):
                continue
            rel = os.path.join(*rel_parts, name) if rel_parts else name
            if not is_test_path(rel):
                found.append(rel)
    return sorted(found, key=lambda r: Path(r).parts)


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return [root / rel for rel in _python_files(root)] if root.is_dir() else []


def _install_hint(distributions) -> str:
    return "pip install " + " ".join(f"{name}=={version}" for name, version in distributions)


def pinned_distribution_files(
    distributions: Iterable[tuple[str, str]] = CORPUS_DISTRIBUTIONS,
) -> list[tuple[Path, str]]:
    """``(path, RECORD sha256)`` of the ``.py`` sources of each pinned distribution, in the given
    order, each distribution's files sorted by relative path; tests excluded (:func:`is_test_path`).

    The file list is the distribution's own (its wheel's ``RECORD``, read by
    ``importlib.metadata``), not whatever lies in ``site-packages``. Raises
    :class:`CorpusSourceError` naming the distribution when it is not installed, is installed at
    another version than pinned, or was not installed from a pure-Python wheel (its files could
    differ between machines).
    """
    distributions = tuple(distributions)
    found: list[tuple[Path, str]] = []
    for name, version in distributions:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise CorpusSourceError(
                f"the large embedded corpus is built from {name}=={version}, which is not "
                f"installed; install the pinned sources with `{_install_hint(distributions)}`"
            ) from None
        if dist.version != version:
            raise CorpusSourceError(
                f"the large embedded corpus is built from {name}=={version}, but {name} "
                f"{dist.version} is installed: its sources (and so the corpus and its "
                f"corpus_sha256) would differ. Install the pinned versions with "
                f"`{_install_hint(distributions)}` or train on another corpus"
            )
        tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
                if line.startswith("Tag:")]
        if not tags or not all(tag.endswith("-none-any") for tag in tags):
            raise CorpusSourceError(
                f"{name} {version} is installed from {'wheel tags ' + ', '.join(tags) if tags else 'no wheel'}"
                f", not a pure-Python (py3-none-any) wheel, so its files may differ from the pinned "
                f"corpus's; reinstall it with `pip install --force-reinstall {name}=={version}`"
            )
        entries = []
        for entry in dist.files or []:
            parts = entry.parts
            if entry.suffix != ".py" or not parts or parts[0] == ".." or parts[0].endswith(".dist-info"):
                continue
            if is_test_path(entry.as_posix()):
                continue
            if entry.hash is None or entry.hash.mode != "sha256":
                raise CorpusSourceError(
                    f"{name} {version}: its RECORD lists {entry.as_posix()} without a sha256 hash; "
                    f"reinstall it with `pip install --force-reinstall {name}=={version}`"
                )
            entries.append((parts, Path(dist.locate_file(entry)), entry.hash.value))
        entries.sort(key=lambda item: item[0])
        found.extend((path, digest) for _, path, digest in entries)
    return found


def embedded_source_files(
    include_site_packages: bool = False,
    distributions: Iterable[tuple[str, str]] = CORPUS_DISTRIBUTIONS,
) -> list[Path]:
    """The files :func:`embedded_documents` reads, in its order (absolute paths).

    The standard library (``sysconfig.get_paths()["stdlib"]``; tests and ``site-packages``
    excluded) sorted by relative path, then, with ``include_site_packages``, the ``.py`` sources
    of the pinned installed ``distributions`` (:func:`pinned_distribution_files`).
    """
    files = _stdlib_files()
    if include_site_packages:
        files.extend(path for path, _ in pinned_distribution_files(distributions))
    return files


def _record_digest(data: bytes) -> str:
    """A RECORD file's hash value of ``data``: urlsafe base64 of the sha256, unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")


def _verified_texts(files: Iterable[tuple[Path, str]]) -> Iterator[Path]:
    """Check each pinned file against its RECORD hash, then pass it on to be read."""
    for path, digest in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CorpusSourceError(f"{path} of the pinned corpus sources cannot be read: {exc}") from None
        if _record_digest(data) != digest:
            raise CorpusSourceError(
                f"{path} differs from the file its distribution installed (RECORD sha256 mismatch): "
                "the pinned corpus sources were modified; reinstall that distribution with "
                "`pip install --force-reinstall NAME==VERSION`"
            )
        yield path


def _read_text(path: Path, stats: CorpusStats | None) -> str | None:
    try:
        text = path.read_bytes().decode("utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        if stats is not None:
            stats.skipped_files += 1
            stats.note_skip(str(path), type(exc).__name__)
        return None
    if stats is not None:
        stats.files += 1
        if not text:
            stats.empty_files += 1
    return text


def _file_documents(
    files: Iterable[Path], max_chars: int, stats: CorpusStats | None
) -> Iterator[str]:
    for path in files:
        text = _read_text(path, stats)
        if text is None:
            continue
        for chunk in chunk_text(text, max_chars):
            if stats is not None:
                stats.documents += 1
            yield chunk


def embedded_documents(
    include_site_packages: bool = False,
    *,
    max_chars: int = MAX_CHARS,
    stats: CorpusStats | None = None,
    distributions: Iterable[tuple[str, str]] = CORPUS_DISTRIBUTIONS,
) -> Iterator[str]:
    """Real text that is on every machine: the running Python's standard-library sources.

    Reads the files of :func:`embedded_source_files` (tests excluded; files that are not valid
    UTF-8 are skipped and counted in ``stats``) and yields each cut by :func:`chunk_text`.
    Deterministic for a given Python installation. ``include_site_packages=True`` adds the
    ``.py`` sources of the pinned installed ``distributions`` (:data:`CORPUS_DISTRIBUTIONS`: about
    three times more text), each file checked against its distribution's RECORD hash: the same
    corpus on every machine with the same Python, or a :class:`CorpusSourceError` (raised at
    once for a missing or other version, while reading for a modified file).
    """
    files: Iterable[Path] = _stdlib_files()
    if include_site_packages:
        pinned = pinned_distribution_files(distributions)  # version errors now, not at first next()
        files = itertools.chain(files, _verified_texts(pinned))
    return _file_documents(files, max_chars, stats)


# ---------------------------------------------------------------------------------------------
# a local folder


def folder_files(root: Path) -> list[Path]:
    """The usable files under ``root`` (accepted extensions, not hidden), by relative path."""
    files: list[tuple[tuple[str, ...], Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(FOLDER_EXTENSIONS):
                continue
            path = Path(dirpath) / name
            files.append((path.relative_to(root).parts, path))
    files.sort(key=lambda item: item[0])
    return [p for _, p in files]


def folder_documents(
    path: str | os.PathLike,
    *,
    max_chars: int = MAX_CHARS,
    text_field: str = "text",
    stats: CorpusStats | None = None,
) -> Iterator[str]:
    """Documents from a local folder, recursively, in sorted relative-path order.

    ``.txt .md .rst .py``: one document per file, cut by :func:`chunk_text`. ``.jsonl``: one
    document per line, taken from the string field ``text_field`` (not chunked); lines without it,
    or that do not parse, are counted in ``stats.skipped_records`` (blank lines are ignored).
    Hidden files and folders are ignored. A single file may be given instead of a folder.

    Raises (immediately, not at first ``next``): ``FileNotFoundError`` if ``path`` does not
    exist, ``ValueError`` if it holds no file with an accepted extension. Raises ``ValueError`` at
    the end of iteration if the files held no document at all (e.g. JSON lines without text).
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(
            f"document folder {str(root)!r} does not exist (expected a folder of "
            f"{' '.join(FOLDER_EXTENSIONS)} files)"
        )
    if root.is_file():
        if not root.name.lower().endswith(FOLDER_EXTENSIONS):
            raise ValueError(
                f"{str(root)!r} is not a usable document file: accepted extensions are "
                f"{' '.join(FOLDER_EXTENSIONS)}"
            )
        files = [root]
    else:
        files = folder_files(root)
        if not files:
            raise ValueError(
                f"document folder {str(root)!r} holds no usable file: accepted extensions are "
                f"{' '.join(FOLDER_EXTENSIONS)} (searched recursively, hidden files ignored)"
            )
    stats = stats if stats is not None else CorpusStats()
    return _folder_iter(root, files, max_chars, text_field, stats)


def _folder_iter(
    root: Path, files: list[Path], max_chars: int, text_field: str, stats: CorpusStats
) -> Iterator[str]:
    yielded = 0
    for path in files:
        if path.name.lower().endswith(JSONL_EXTENSIONS):
            for doc in _jsonl_documents(path, text_field, stats):
                yielded += 1
                yield doc
        else:
            for doc in _file_documents([path], max_chars, stats):
                yielded += 1
                yield doc
    if yielded == 0:
        raise ValueError(
            f"document folder {str(root)!r} gave no document: {len(files)} file(s) with accepted "
            f"extensions ({' '.join(FOLDER_EXTENSIONS)}), {stats.empty_files} empty, "
            f"{stats.skipped_files} not UTF-8, {stats.skipped_records} JSON line(s) without a "
            f"string {text_field!r} field"
            + (f"; e.g. {stats.skipped_examples[0]}" if stats.skipped_examples else "")
        )


def _record_text(record, text_field: str, stats: CorpusStats, where: str, why: str) -> str | None:
    """The string field ``text_field`` of a JSON record or dataset row (counted as a document), or
    None when it has none (counted as a skipped record)."""
    text = record.get(text_field) if isinstance(record, dict) else None
    if not isinstance(text, str):
        stats.skipped_records += 1
        stats.note_skip(where, why)
        return None
    stats.documents += 1
    return text


def _jsonl_documents(path: Path, text_field: str, stats: CorpusStats) -> Iterator[str]:
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        stats.skipped_files += 1
        stats.note_skip(str(path), type(exc).__name__)
        return
    why = f"no string {text_field!r} field"
    with handle:
        stats.files += 1
        lineno = 0
        try:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    stats.skipped_records += 1
                    stats.invalid_json_lines += 1
                    stats.note_skip(f"{path}:{lineno}", "invalid JSON")
                    continue
                text = _record_text(record, text_field, stats, f"{path}:{lineno}", why)
                if text is not None:
                    yield text
        except UnicodeDecodeError:
            stats.skipped_files += 1
            stats.note_skip(f"{path}:{lineno + 1}", "UnicodeDecodeError (rest of file skipped)")


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets (streamed)


def hf_documents(
    name: str,
    split: str = "train",
    text_field: str = "text",
    max_documents: int | None = None,
    *,
    config: str | None = None,
    data_files: str | list[str] | dict | None = None,
    stats: CorpusStats | None = None,
    **load_dataset_kwargs,
) -> Iterator[str]:
    """Stream documents from ``datasets.load_dataset(name, config, split=split, streaming=True)``.

    ``name`` may be a short name: ``"c4"`` (``allenai/c4``, config ``en``) or ``"fineweb-edu"``
    (``HuggingFaceFW/fineweb-edu``); an explicit ``config`` overrides the short name's. Local
    builders work the same way, e.g. ``hf_documents("json", data_files="docs.jsonl")``.
    Rows whose ``text_field`` is not a string are counted in ``stats.skipped_records``; at most
    ``max_documents`` documents are yielded. Documents are not chunked. Other keyword arguments
    (``cache_dir``, ``revision`` ...) go to ``load_dataset``.
    """
    if max_documents is not None and max_documents < 0:
        raise ValueError(f"max_documents must be >= 0, got {max_documents}")
    dataset_name, default_config = HF_SHORT_NAMES.get(name, (name, None))
    config = config if config is not None else default_config
    return _hf_iter(
        dataset_name, config, split, text_field, max_documents, data_files, stats,
        load_dataset_kwargs,
    )


def _hf_iter(
    dataset_name, config, split, text_field, max_documents, data_files, stats, load_kwargs
):
    stats = stats if stats is not None else CorpusStats()
    if max_documents == 0:
        return
    import datasets  # heavy (pyarrow, pandas): imported only when a dataset is streamed

    kwargs = dict(load_kwargs, split=split, streaming=True)
    if data_files is not None:
        kwargs["data_files"] = data_files
    dataset = datasets.load_dataset(dataset_name, config, **kwargs)
    for row_number, row in enumerate(dataset):
        where = f"{dataset_name}[{split}] row {row_number}"
        text = _record_text(row, text_field, stats, where, f"no string {text_field!r}")
        if text is None:
            continue
        yield text
        if max_documents is not None and stats.documents >= max_documents:
            return


# ---------------------------------------------------------------------------------------------
# train / validation split


def split_of(text: str, val_fraction: float = 0.02) -> str:
    """``"val"`` for about ``val_fraction`` of documents, else ``"train"``; a pure function of
    the text (blake2b), so it does not depend on order, machine or Python hash seed."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return "val" if int.from_bytes(digest, "little") < val_fraction * 2.0**64 else "train"


def split_documents(
    documents: Iterable[str], val_fraction: float = 0.02
) -> tuple[list[str], list[str]]:
    """(train, val) lists, by :func:`split_of`, each in input order."""
    train: list[str] = []
    val: list[str] = []
    for doc in documents:
        (val if split_of(doc, val_fraction) == "val" else train).append(doc)
    return train, val
