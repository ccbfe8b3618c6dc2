"""lm-eval on the tiny TST/baseline pair (the session's ``pair`` runs), through the Hugging Face
export: on the local task the accuracy and every log-likelihood match a hand computation with
torchtitan's own model on the stored token ids; bad input fails before any model is loaded."""

import json
import math
import os
import shutil

import pytest
import torch

from tst_titan.analysis.runs import load_model
from tst_titan.evaluation import harness
from tst_titan.evaluation.checkpoint import EvaluationError
from tst_titan.evaluation.continuation_task import ContinuationSpec
from tst_titan.evaluation.harness import evaluate_runs
from tst_titan.run_files import read_metrics

SPEC = ContinuationSpec(items=40, context_tokens=20, continuation_tokens=8, distractors=3, seed=0)


@pytest.fixture(scope="module")
def evaluated(pair, tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("evaluate_cache"))
    # the baseline at the TST run's last step: equal FLOPs (the pair keeps that checkpoint)
    return evaluate_runs([pair["tst"], pair["baseline"]], ["tst_continuation"], cache_dir=cache, step=[None, 20],
                         spec=SPEC, batch_size=4, log_samples=True)


def _hand_loglikelihoods(run_dir, step, items):
    """Sum of log p(choice token | bos + context + earlier choice tokens), torchtitan's model."""
    model = load_model(run_dir, step)
    out = []
    with torch.no_grad():
        for item in items:  # the choices have equal token counts: one batch per item
            ids = torch.tensor([[0] + item["context_ids"] + choice for choice in item["choice_ids"]])  # bos first
            logp = torch.log_softmax(model(ids[:, :-1]).double(), dim=-1)
            n = len(item["context_ids"]) + 1
            out.append([sum(float(logp[c, n - 1 + j, t]) for j, t in enumerate(choice))
                        for c, choice in enumerate(item["choice_ids"])])
    return out


def test_local_task_accuracy_and_loglikelihoods_match_a_hand_computation(pair, evaluated):
    assert [r["run"] for r in evaluated["runs"]] == [os.path.normpath(pair["tst"]), os.path.normpath(pair["baseline"])]
    assert [r["step"] for r in evaluated["runs"]] == [20, 20]
    for run in evaluated["runs"]:
        samples = sorted(evaluated["samples"][run["run"]]["tst_continuation"], key=lambda s: s["doc_id"])
        items = [s["doc"] for s in samples]
        assert len(items) == SPEC.items
        hand = _hand_loglikelihoods(run["run"], run["step"], items)
        theirs = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
        for h, t in zip(hand, theirs):
            assert len(h) == len(t) == SPEC.distractors + 1
            assert all(abs(a - b) < 1e-4 for a, b in zip(h, t)), (h, t)  # float32 logits, <= 8 tokens
        correct = [max(range(len(h)), key=lambda i: (h[i], -i)) == item["label"] for h, item in zip(hand, items)]
        acc = sum(correct) / len(correct)
        row = next(r for r in evaluated["results"] if r["run"] == run["run"])
        assert row["task"] == "tst_continuation" and row["metric"] == "acc"
        assert row["accuracy"] == acc
        # lm-eval's stderr of a mean: sample standard deviation / sqrt(n)
        n = len(correct)
        assert row["stderr"] == pytest.approx(math.sqrt(acc * (1 - acc) * n / (n - 1) / n), rel=1e-9)


def test_val_loss_is_the_runs_logged_value_at_that_step(pair, evaluated):
    for run, path in zip(evaluated["runs"], (pair["tst"], pair["baseline"])):
        logged = [r["val_loss"] for r in read_metrics(path) if r["step"] == 20 and "val_loss" in r]
        assert logged and run["val_loss"] == logged[-1]
    text = harness.format_table(evaluated)
    assert "tst_continuation" in text and f"{evaluated['results'][0]['accuracy']:.4f} ± " in text
    assert evaluated["lm_eval_version"] == "0.4.13"


@pytest.fixture
def no_model(monkeypatch):
    """Any attempt to load a model fails the test: errors must come before."""
    def fail(*a, **k):
        raise AssertionError("a model was loaded before the bad input was reported")
    monkeypatch.setattr(harness, "evaluate_checkpoint", fail)
    monkeypatch.setattr(harness, "hf_folder", fail)


def _run(tmp_path, **kw):
    return evaluate_runs(cache_dir=str(tmp_path), **kw)


def test_a_run_without_checkpoint(pair, tmp_path, no_model):
    run = tmp_path / "no_ckpt"
    run.mkdir()
    shutil.copy(os.path.join(pair["tst"], "tst_run.json"), run)
    with pytest.raises(EvaluationError, match=r"RUN_DIR .*no_ckpt.* has no checkpoint"):
        _run(tmp_path, run_dirs=[pair["tst"], str(run)], tasks=["tst_continuation"])
    with pytest.raises(EvaluationError, match=r"RUN_DIR .* has no tst_run.json"):
        _run(tmp_path, run_dirs=[str(tmp_path)], tasks=["tst_continuation"])
    with pytest.raises(EvaluationError, match=r"RUN_DIR .*missing.* is not a folder"):
        _run(tmp_path, run_dirs=[str(tmp_path / "missing")], tasks=["tst_continuation"])


def test_a_step_that_does_not_exist(pair, tmp_path, no_model):
    with pytest.raises(EvaluationError, match=r"--step 5: .* it has steps \[1, 6, 7, 20\]"):
        _run(tmp_path, run_dirs=[pair["tst"]], tasks=["tst_continuation"], step=5)


def test_an_unknown_task(pair, tmp_path, no_model):
    with pytest.raises(EvaluationError, match=r"--tasks: unknown task 'arc_easyy' \(did you mean arc_easy"):
        _run(tmp_path, run_dirs=[pair["tst"]], tasks=["tst_continuation", "arc_easyy"])
    with pytest.raises(EvaluationError, match=r"--tasks .*nope.yaml.*: no such task YAML file"):
        _run(tmp_path, run_dirs=[pair["tst"]], tasks=[str(tmp_path / "nope.yaml")])


def test_a_tokenizer_that_does_not_match_the_vocab(pair, embedded_store, tmp_path, no_model):
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_file(os.path.join(embedded_store, "tokenizer.json"))
    tok.add_tokens([AddedToken(f"<extra_{i}>", special=True) for i in range(10)])  # 2058 > 2048 rows
    folder = tmp_path / "big_tokenizer"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    shutil.copy(os.path.join(embedded_store, "tokenizer_config.json"), folder)
    with pytest.raises(EvaluationError, match=r"--tokenizer .*big_tokenizer.* has 2058 tokens but the checkpoint "
                                              r".* embeds 2048"):
        _run(tmp_path, run_dirs=[pair["tst"]], tasks=["tst_continuation"], tokenizer=str(folder))


def test_local_task_lengths_must_fit_the_run(pair, tmp_path, no_model):
    with pytest.raises(EvaluationError, match=r"--tst-context/--tst-continuation: .* exceeds the run's "
                                              r"training.seq_len 32"):
        _run(tmp_path, run_dirs=[pair["tst"]], tasks=["tst_continuation"],
             spec=ContinuationSpec(context_tokens=30, continuation_tokens=8))
