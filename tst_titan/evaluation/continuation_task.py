"""``tst_continuation``: a multiple-choice lm-eval task made from the held-out ("val") split of a
run's own token store, so that a CPU machine with no network gets a downstream number.

An item is a stretch of one held-out document (the context) and ``1 + distractors`` candidate
continuations of equal token count: the document's true next chunk, and chunks cut at random
from other held-out documents. The model is right when the true chunk has the highest summed
log-likelihood given the context (lm-eval's ``acc``; ``acc_norm`` divides by the chunk's bytes).

lm-eval scores text, not token ids: it encodes ``context + choice`` in one piece and takes the
tokens after the context's encoding as the continuation. A byte-level BPE does not in general
re-encode a decoded slice of ids to the same ids (a slice may start inside a word, or split a
multi-byte character), and a word can merge across the context/choice seam. So every cut is made
where the next token starts with whitespace and the previous one does not end with it: the
pre-tokenizer always splits there, so ``encode(context + choice) == context ids + choice ids``.
Each item is checked to round-trip exactly that way through the store's tokenizer (items that
do not are drawn again), so the log-likelihoods lm-eval computes are those of the stored ids.

The items are deterministic (seeded) for a store and the :class:`ContinuationSpec`; they are
written as JSON lines next to an lm-eval task YAML (``dataset_path: json``), which also runs with
lm-eval's own command line: ``lm_eval --include_path <folder> --tasks tst_continuation``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass

import numpy as np
from tokenizers import Tokenizer

from tst_titan.datastore.store import TokenStore, read_manifest

TASK_NAME = "tst_continuation"
ITEMS_FILE = "items.jsonl"
YAML_FILE = "tst_continuation.yaml"


@dataclass(frozen=True)
class ContinuationSpec:
    """The task's shape. Context and continuation lengths are in tokens (the longest clean cut
    within them); ``context_tokens + continuation_tokens`` must fit the run's sequence length."""

    items: int = 200
    context_tokens: int = 24
    continuation_tokens: int = 8
    distractors: int = 3
    seed: int = 0

    def check(self, seq_len: int | None = None) -> None:
        for name in ("items", "context_tokens", "continuation_tokens", "distractors"):
            if getattr(self, name) < 1:
                raise ValueError(f"tst_continuation {name} must be >= 1, got {getattr(self, name)}")
        if seq_len is not None and self.context_tokens + self.continuation_tokens > seq_len:
            raise ValueError(
                f"tst_continuation context_tokens + continuation_tokens = "
                f"{self.context_tokens + self.continuation_tokens} exceeds the run's training.seq_len "
                f"{seq_len}: lower them")


def _whitespace_edges(tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Per token id: does its text start / end with whitespace."""
    n = tokenizer.get_vocab_size(with_added_tokens=True)
    starts, ends = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    for i in range(n):
        text = tokenizer.decode([i], skip_special_tokens=False)
        if text:
            starts[i], ends[i] = text[0].isspace(), text[-1].isspace()
    return starts, ends


def clean_cuts(ids: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Positions p (0 < p < len) where the pre-tokenizer must split between ``ids[p-1]`` and
    ``ids[p]``: ``ids[p]`` starts with whitespace and ``ids[p-1]`` does not end with it."""
    if len(ids) < 2:
        return np.zeros(0, dtype=np.int64)
    ok = starts[ids[1:]] & ~ends[ids[:-1]]
    return np.flatnonzero(ok) + 1


def _held_out_documents(store: TokenStore) -> list[np.ndarray]:
    docs = []
    for _, start, count in store.documents():
        tokens = store.slice(int(start), int(start + count)).astype(np.int64)
        if tokens[0] != store.bos_id or tokens[-1] != store.eos_id:  # pragma: no cover (store format)
            raise ValueError(f"{store.store_dir}: a val document is not framed by bos/eos")
        docs.append(tokens[1:-1])
    return docs


def build_items(store_dir: str, spec: ContinuationSpec) -> list[dict]:
    """The task's items from the store's held-out split (see the module docstring)."""
    spec.check()
    store = TokenStore(store_dir, "val")
    tokenizer = Tokenizer.from_file(os.path.join(store_dir, "tokenizer.json"))
    starts, ends = _whitespace_edges(tokenizer)
    docs = _held_out_documents(store)
    cuts = [clean_cuts(d, starts, ends) for d in docs]
    cut_sets = [set(c.tolist()) for c in cuts]
    usable = [i for i, c in enumerate(cuts) if len(c) >= 3]
    if len(usable) < spec.distractors + 1:
        raise ValueError(f"{store_dir}: its val split has {len(usable)} usable documents; "
                         f"tst_continuation needs distractors + 1 = {spec.distractors + 1}")
    rng = np.random.default_rng(spec.seed)
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False).ids  # noqa: E731
    decode = lambda ids: tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)  # noqa: E731
    items: list[dict] = []
    attempts = 0
    while len(items) < spec.items:
        attempts += 1
        if attempts > 200 * spec.items:
            raise ValueError(f"{store_dir}: could only cut {len(items)} of {spec.items} tst_continuation "
                             "items; lower items or the lengths")
        d = int(rng.choice(usable))
        c = cuts[d]
        p = int(rng.choice(c))
        context_starts = [a for a in c.tolist() if p - spec.context_tokens <= a < p]
        if p <= spec.context_tokens:
            context_starts.insert(0, 0)  # the document's own start is a clean start too
        ends_ = [q for q in c.tolist() if p < q <= p + spec.continuation_tokens]
        if not context_starts or not ends_:
            continue
        a, q = context_starts[0], ends_[-1]
        n = q - p
        context_ids, true_ids = docs[d][a:p].tolist(), docs[d][p:q].tolist()
        others = [i for i in usable if i != d]
        rng.shuffle(others)
        distractor_ids = []
        for o in others:
            spans = [s for s in cuts[o].tolist() if s + n in cut_sets[o]]
            if not spans:
                continue
            s = int(rng.choice(spans))
            chunk = docs[o][s:s + n].tolist()
            if chunk != true_ids and chunk not in distractor_ids:
                distractor_ids.append(chunk)
            if len(distractor_ids) == spec.distractors:
                break
        if len(distractor_ids) < spec.distractors:
            continue
        label = int(rng.integers(spec.distractors + 1))
        choice_ids = distractor_ids[:label] + [true_ids] + distractor_ids[label:]
        context = decode(context_ids)
        choices = [decode(ids) for ids in choice_ids]
        # the round trip lm-eval relies on (see the module docstring)
        if encode(context) != context_ids or len(set(choices)) != len(choices) or any(
                encode(ch) != ids or encode(context + ch) != context_ids + ids
                for ch, ids in zip(choices, choice_ids)):
            continue
        items.append({"context": context, "choices": choices, "label": label, "context_ids": context_ids,
                      "choice_ids": choice_ids, "document": d, "position": p})
    return items


def task_yaml(items_path: str) -> str:
    """The lm-eval task definition reading ``items_path``."""
    return "\n".join([
        f"task: {TASK_NAME}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {json.dumps(items_path)}",
        "test_split: test",
        "output_type: multiple_choice",
        "doc_to_text: context",  # field names: lm-eval reads them from the item as they are
        "doc_to_choice: choices",
        "doc_to_target: label",
        'target_delimiter: ""',  # the choices carry their own leading whitespace
        "metric_list:",
        "  - metric: acc",
        "    aggregation: mean",
        "    higher_is_better: true",
        "  - metric: acc_norm",
        "    aggregation: mean",
        "    higher_is_better: true",
        "metadata:",
        "  version: 1.0",
        "",
    ])


def prepare_task(store_dir: str, spec: ContinuationSpec, cache_dir: str) -> str:
    """Write (once) the items and the task YAML of ``store_dir`` + ``spec`` under ``cache_dir``;
    return the YAML's path. The folder name hashes the store's build and the spec."""
    manifest = read_manifest(store_dir)
    if manifest is None:
        raise ValueError(f"{store_dir!r} is not a complete token store (no manifest.json)")
    key = hashlib.blake2b(json.dumps([manifest["build_key"], manifest["tokenizer_sha256"], asdict(spec)])
                          .encode(), digest_size=8).hexdigest()
    folder = os.path.join(os.path.abspath(cache_dir), f"{TASK_NAME}-{key}")
    yaml_path = os.path.join(folder, YAML_FILE)
    if os.path.isfile(yaml_path):
        return yaml_path
    items = build_items(store_dir, spec)
    os.makedirs(folder, exist_ok=True)
    items_path = os.path.join(folder, ITEMS_FILE)
    with open(items_path + ".tmp", "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    os.replace(items_path + ".tmp", items_path)
    with open(os.path.join(folder, "spec.json"), "w") as f:
        json.dump({"store_dir": os.path.abspath(store_dir), **asdict(spec)}, f, indent=1)
    with open(yaml_path + ".tmp", "w") as f:
        f.write(task_yaml(items_path))
    os.replace(yaml_path + ".tmp", yaml_path)  # last: its presence marks a complete folder
    return yaml_path


def read_items(yaml_path: str) -> list[dict]:
    with open(os.path.join(os.path.dirname(yaml_path), ITEMS_FILE), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
