"""The local multiple-choice task: its items come from the store's held-out documents, each true
continuation is the document's next tokens, each distractor is a chunk of another held-out
document, and every text re-encodes to exactly the stored ids (what lm-eval scores)."""

import json
import os

import numpy as np
import pytest
from tokenizers import Tokenizer

from tst_titan.datastore.store import TokenStore
from tst_titan.evaluation.continuation_task import (ContinuationSpec, build_items, prepare_task, read_items,
                                                    task_yaml)

pytestmark = pytest.mark.usefixtures("embedded_store")

SPEC = ContinuationSpec(items=60, context_tokens=20, continuation_tokens=6, distractors=3, seed=1)


@pytest.fixture(scope="module")
def held_out(embedded_store):
    store = TokenStore(embedded_store, "val")
    docs = [store.slice(int(s), int(s + n)).tolist() for _, s, n in store.documents()]
    return docs, Tokenizer.from_file(os.path.join(embedded_store, "tokenizer.json"))


def _occurs_in(chunk, doc):
    n = len(chunk)
    return any(doc[i:i + n] == chunk for i in range(len(doc) - n + 1))


def test_items_are_held_out_text_that_round_trips(embedded_store, held_out):
    docs, tok = held_out
    items = build_items(embedded_store, SPEC)
    assert len(items) == SPEC.items
    for item in items:
        doc = docs[item["document"]]
        assert doc[0] == 0 and doc[-1] == 1  # bos ... eos, as the store frames documents
        body = doc[1:-1]
        ctx, choices, label = item["context_ids"], item["choice_ids"], item["label"]
        p = item["position"]
        # the context ends right where the true continuation starts, in the document itself
        assert body[p - len(ctx):p] == ctx and body[p:p + len(choices[label])] == choices[label]
        assert 0 < len(ctx) <= SPEC.context_tokens and 0 < len(choices[label]) <= SPEC.continuation_tokens
        assert len(choices) == SPEC.distractors + 1 and len({len(c) for c in choices}) == 1
        for i, chunk in enumerate(choices):
            if i != label:
                others = [d for j, d in enumerate(docs) if j != item["document"]]
                assert any(_occurs_in(chunk, d) for d in others)
        # what lm-eval does: encode context + choice in one piece, split after the context's tokens
        assert tok.encode(item["context"], add_special_tokens=False).ids == ctx
        assert tok.decode(ctx) == item["context"]
        for text, ids in zip(item["choices"], choices):
            assert tok.encode(item["context"] + text, add_special_tokens=False).ids == ctx + ids
            assert text[0].isspace() and not item["context"][-1].isspace()
    labels = [it["label"] for it in items]
    assert set(labels) == set(range(SPEC.distractors + 1))  # the true answer is not always first


def test_items_are_seeded(embedded_store):
    small = ContinuationSpec(items=10, seed=3)
    assert build_items(embedded_store, small) == build_items(embedded_store, small)
    assert build_items(embedded_store, small) != build_items(embedded_store, ContinuationSpec(items=10, seed=4))


def test_prepared_task_folder(embedded_store, tmp_path):
    small = ContinuationSpec(items=5)
    path = prepare_task(embedded_store, small, str(tmp_path))
    assert prepare_task(embedded_store, small, str(tmp_path)) == path  # cached
    assert read_items(path) == build_items(embedded_store, small)
    text = open(path).read()
    assert text == task_yaml(os.path.join(os.path.dirname(path), "items.jsonl"))
    assert "task: tst_continuation" in text and 'target_delimiter: ""' in text
    assert json.loads(open(os.path.join(os.path.dirname(path), "spec.json")).read())["items"] == 5


@pytest.mark.parametrize("field, value", [("items", 0), ("context_tokens", 0), ("continuation_tokens", 0),
                                          ("distractors", 0)])
def test_bad_spec_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ContinuationSpec(**{field: value}).check()


def test_spec_must_fit_the_runs_sequence_length():
    with pytest.raises(ValueError, match="exceeds the run's training.seq_len 16"):
        ContinuationSpec(context_tokens=12, continuation_tokens=8).check(16)
    ContinuationSpec(context_tokens=8, continuation_tokens=8).check(16)
