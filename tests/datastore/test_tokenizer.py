"""The byte-level BPE tokenizer: round trips, torchtitan loads it, deterministic and bounded."""

from __future__ import annotations

import itertools
import json
import sysconfig
from pathlib import Path

import pytest
from torchtitan.components.tokenizer import HuggingFaceTokenizer

from tst_titan.datastore.sources import embedded_documents
from tst_titan.datastore.tokenizer import (
    BOS_TOKEN,
    EOS_TOKEN,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)

STDLIB = Path(sysconfig.get_paths()["stdlib"])

ROUND_TRIP_TEXTS = [
    "def f(x):\n    return x  # two spaces\n\n\n\tindented by a tab\n",
    "  leading spaces, trailing spaces   \n   \n",
    "windows line\r\nendings\r\n",
    "unicode: naïve café, Ελληνικά, 日本語のテキスト, emoji 🙂🚀, combining e\u0301, nbsp\u00a0, "
    "zero-width\u200bjoiner, rtl עברית",
    "",
    " ",
    "\n",
    "special-looking text <|begin_of_text|x> <|end_of_tex|>",
]


@pytest.fixture(scope="module")
def small_docs():
    return list(itertools.islice(embedded_documents(), 150))


def test_train_tokenizer_round_trips_and_loads_in_torchtitan(tmp_path, small_docs):
    tok = train_tokenizer(small_docs, 512)
    assert tok.get_vocab_size(with_added_tokens=True) <= 512
    assert tok.token_to_id(BOS_TOKEN) == 0 and tok.token_to_id(EOS_TOKEN) == 1
    texts = ROUND_TRIP_TEXTS + small_docs[:20] + [(STDLIB / "os.py").read_text(encoding="utf-8")]
    for text in texts:
        ids = tok.encode(text).ids
        assert tok.decode(ids) == text
        assert 0 not in ids and 1 not in ids  # nothing added on its own

    save_tokenizer(tok, tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert config["bos_token"] == BOS_TOKEN and config["eos_token"] == EOS_TOKEN
    assert config["add_bos_token"] is True and config["add_eos_token"] is True

    tt = HuggingFaceTokenizer(str(tmp_path / "tok"))
    assert tt.bos_id == 0 and tt.eos_id == 1
    assert tt.get_vocab_size() == tok.get_vocab_size()
    for text in texts:
        ids = tt.encode(text)  # torchtitan's defaults: bos and eos added
        assert ids == [0] + tok.encode(text).ids + [1]
        assert tt.decode(ids[1:-1]) == text
        assert tt.encode(text, add_bos=True, add_eos=True) == ids

    loaded, bos, eos = load_tokenizer(tmp_path / "tok")
    assert (bos, eos) == (BOS_TOKEN, EOS_TOKEN)
    assert loaded.to_str() == tok.to_str()


def test_train_tokenizer_is_deterministic_and_bounded(small_docs):
    a = train_tokenizer(small_docs[:60], 400)
    b = train_tokenizer(small_docs[:60], 400)
    assert a.to_str() == b.to_str()
    assert a.get_vocab_size() <= 400
    # too few distinct pairs: fewer tokens than asked, never more
    tiny = train_tokenizer(["ab ab ab"], 2000)
    assert 258 <= tiny.get_vocab_size() < 300
    assert tiny.decode(tiny.encode("any text ✓ at all\n").ids) == "any text ✓ at all\n"
    with pytest.raises(ValueError, match="258"):
        train_tokenizer(["x"], 100)
