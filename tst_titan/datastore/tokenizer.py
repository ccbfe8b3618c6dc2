"""The byte-level BPE tokenizer of a token store: training, saving, loading, its hash.

Ids 0 and 1 are :data:`BOS_TOKEN` and :data:`EOS_TOKEN`; the saved directory (``tokenizer.json``
+ ``tokenizer_config.json``) loads in torchtitan's ``HuggingFaceTokenizer``, which adds both
around every encoded text.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tst_titan.datastore.store import atomic_write_bytes

__all__ = [
    "BOS_TOKEN",
    "EOS_TOKEN",
    "train_tokenizer",
    "tokenizer_config",
    "save_tokenizer",
    "load_tokenizer",
    "tokenizer_sha256",
]

BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2):
    """Train a byte-level BPE tokenizer (``tokenizers``) on ``texts``.

    ByteLevel pre-tokenizer (no prefix space) and decoder, no normalizer, so
    ``decode(encode(t)) == t`` for any text (spaces, newlines, any unicode). Ids 0 and 1 are
    ``<|begin_of_text|>`` and ``<|end_of_text|>``; all 256 byte symbols are in the vocabulary;
    the final vocabulary size is at most ``vocab_size`` (less if the text has too few pairs).
    """
    minimum = 2 + 256
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size must be >= {minimum} (2 special tokens + 256 bytes), got {vocab_size}"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[BOS_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if tokenizer.token_to_id(BOS_TOKEN) != 0 or tokenizer.token_to_id(EOS_TOKEN) != 1:
        raise RuntimeError("special tokens did not get ids 0 and 1")  # pragma: no cover
    if tokenizer.get_vocab_size(with_added_tokens=True) > vocab_size:
        raise RuntimeError("trained vocabulary exceeds vocab_size")  # pragma: no cover
    return tokenizer


def tokenizer_config() -> dict:
    """What ``tokenizer_config.json`` says: the bos/eos tokens, added around every text."""
    return {
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "add_bos_token": True,
        "add_eos_token": True,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def save_tokenizer(tokenizer, directory: str | os.PathLike) -> Path:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` into ``directory`` (created).

    torchtitan's ``HuggingFaceTokenizer(directory)`` loads the result and finds ``bos_id`` 0 and
    ``eos_id`` 1, adding both around every encoded text. Returns the directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / "tokenizer.json", tokenizer.to_str().encode("utf-8"))
    config = json.dumps(tokenizer_config(), indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(directory / "tokenizer_config.json", config.encode("utf-8"))
    return directory


def load_tokenizer(directory: str | os.PathLike):
    """``(tokenizer, bos_token, eos_token)`` from a directory with ``tokenizer.json``.

    bos/eos come from ``tokenizer_config.json`` when present (strings or ``{"content": ...}``),
    else default to ``<|begin_of_text|>``/``<|end_of_text|>``; both must be in the vocabulary.
    """
    directory = Path(directory)
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer.json in {str(directory)!r}")
    tokenizer = Tokenizer.from_file(str(path))
    bos, eos = BOS_TOKEN, EOS_TOKEN
    config_path = directory / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))

        def _token(value, default):
            if isinstance(value, dict):
                value = value.get("content")
            return value if isinstance(value, str) else default

        bos = _token(config.get("bos_token"), bos)
        eos = _token(config.get("eos_token"), eos)
    for token in (bos, eos):
        if tokenizer.token_to_id(token) is None:
            raise ValueError(f"tokenizer in {str(directory)!r} has no token {token!r}")
    return tokenizer, bos, eos


def tokenizer_sha256(directory: str | os.PathLike) -> str:
    """sha256 of the bytes of ``<directory>/tokenizer.json``."""
    return hashlib.sha256((Path(directory) / "tokenizer.json").read_bytes()).hexdigest()
