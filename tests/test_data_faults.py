"""Data faults lose nothing silently; the data position is a pure function of the sample index,
so the phase can follow the training step; checkpoints carry the [tst] settings; loss guards.

Unit tests use a numpy stand-in for the token store; the end-to-end ones read the shared runs of
tests/reliability_runs.py (real torchtitan Trainer starts and trainings).
"""

import glob
import json
import os
import pickle

import numpy as np
import pytest
import torch

from tests.reliability_runs import short_documents
from tests.test_data import ArrayStore, job
from tst_titan.data import PhaseSchedule, TokenWindowDataset, TrainingRun


# -- the position is a function of the sample index -----------------------------------------------
@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("n_tokens, s, r", [
    (3000, 4, 0.5),   # no wrap in phase 1, wraps in phase 2
    (700, 4, 0.5),    # wraps several times in phase 1
    (250, 3, 0.9),    # one phase-1 stride per epoch
    (1000, 1, 0.0),   # TST off: plain samples
    (999, 2, 0.3),
])
def test_position_after_matches_serving_sample_by_sample(world, n_tokens, s, r):
    sched = PhaseSchedule.from_job_config(job(steps=10, r=r, s=s, local_batch=2, seq_len=8), world)
    ds = TokenWindowDataset(ArrayStore(np.arange(n_tokens)), sched, 0)
    for i in range(200):
        assert sched.position_after(i, n_tokens) == (ds.cursor, ds.epoch), f"after {i} samples"
        ds._next_window()


def _samples(ds, n):
    it = iter(ds)
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("step", [0, 1, 3, 4, 7])
def test_fast_forward_to_the_resumed_step_serves_the_same_samples(step):
    # 10 steps, r = 0.3: bag samples 0..5 (2 per step); a small store so epochs wrap.
    stream = np.random.default_rng(3).integers(0, 100, size=400)
    sched = PhaseSchedule.from_job_config(job(steps=10, r=0.3, s=4, local_batch=2, seq_len=8), 1)
    reference = _samples(TokenWindowDataset(ArrayStore(stream), sched, 0), 20)
    run = TrainingRun()
    run.set_resume_step(step)
    resumed = TokenWindowDataset(ArrayStore(stream), sched, 0, run=run)
    got = _samples(resumed, 20 - 2 * step)
    for (x, y), (rx, ry) in zip(got, reference[2 * step:]):
        assert torch.equal(x["input"], rx["input"]) and torch.equal(y, ry)


def test_loaded_state_that_disagrees_with_the_step_is_an_error():
    stream = np.arange(3000)
    sched = PhaseSchedule.from_job_config(job(steps=10, r=0.3, s=2), 1)
    first = TokenWindowDataset(ArrayStore(stream), sched, 0)
    _samples(first, 5)
    run = TrainingRun()
    run.set_resume_step(4)  # 8 samples, but the state says 5
    resumed = TokenWindowDataset(ArrayStore(stream), sched, 0, run=run)
    resumed.load_state_dict(first.state_dict())
    with pytest.raises(ValueError, match=r"dataloader state of rank 0 is at sample 5.*step 4.*sample 8"):
        next(iter(resumed))


def test_position_check_names_the_step_and_phases():
    sched = PhaseSchedule.from_job_config(job(steps=10, r=0.3, s=2), 1)
    run = TrainingRun()
    run.datasets.append(TokenWindowDataset(ArrayStore(np.arange(3000)), sched, 0))
    with pytest.raises(RuntimeError, match=r"after step 5 .* at sample 0 \(phase 1\).*sample 10 \(phase 2"):
        run.check_position(5)


# -- the settings travel with the checkpoint ---------------------------------------------------
def test_dataset_state_carries_the_tst_settings():
    from types import SimpleNamespace

    from tst_titan.data import tst_settings

    cfg = job(steps=10, r=0.3, s=4, local_batch=2, global_batch=4)
    cfg.tst.loss_weighting = "power"
    sched = PhaseSchedule.from_job_config(cfg, 1)
    ds = TokenWindowDataset(ArrayStore(np.arange(3000)), sched, 0, settings=tst_settings(cfg, sched))
    assert ds.state_dict()["tst"] == {
        "enable": True, "bag_size": 4, "superposition_fraction": 0.3, "loss_weighting": "power",
        "mode": "full", "optimizer_at_switch": "keep", "steps": 10, "seq_len": 8, "samples_per_step": 4, "switch_step": 3, "switch_sample": 12}
    other_cfg = SimpleNamespace(tst=SimpleNamespace(**{**vars(cfg.tst), "loss_weighting": "uniform"}),
                                training=cfg.training)
    other = TokenWindowDataset(ArrayStore(np.arange(3000)), sched, 0, settings=tst_settings(other_cfg, sched))
    with pytest.raises(ValueError, match=r"tst\.loss_weighting = 'power'.*this run has 'uniform'"):
        other.load_state_dict(ds.state_dict())


def test_a_real_checkpoint_carries_the_tst_settings(one, tmp_path):
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(one.checkpoint("full", 8), str(tmp_path / "ckpt.pt"))
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    loader = pickle.loads(saved["dataloader"]["dp_rank_0"])
    state = loader["dataset_state"]
    assert state["sample_index"] == 8 * 4
    assert state["tst"] == {
        "enable": True, "bag_size": 4, "superposition_fraction": 0.5, "loss_weighting": "uniform",
        "mode": "full", "optimizer_at_switch": "keep", "steps": 8, "seq_len": 32, "samples_per_step": 4, "switch_step": 4, "switch_sample": 16}


# -- data faults through real trainer starts and runs -----------------------------------------
@pytest.mark.parametrize("plan", ["missing-store", "empty-folder"])
def test_missing_or_empty_dataset_path_stops_the_trainer_start(twins, plan):
    error = twins.error(plan)
    assert error.startswith("ConfigError: training.dataset_path = ")
    assert "is missing or empty" in error.splitlines()[0]
    assert not twins.rows(plan)


def test_corpus_too_small_for_one_phase_one_sample_stops_before_step_one(twins):
    error = twins.error("too-small").splitlines()[0]
    assert error.startswith("ValueError: the train split of ") and "has 51 tokens" in error
    assert "fewer than one sample needs on 1 rank(s): 132" in error
    assert "training.seq_len" in error and "tst.bag_size" in error
    assert not twins.rows("too-small")


def test_short_documents_train_and_every_token_is_counted(twins):
    from tokenizers import Tokenizer

    store = os.path.join(twins.base, "stores", "short_docs")
    with open(os.path.join(store, "manifest.json")) as f:
        manifest = json.load(f)
    docs = short_documents()
    tok = Tokenizer.from_file(os.path.join(store, "tokenizer.json"))
    lengths = [len(tok.encode(d).ids) for d in docs if d]
    assert min(lengths) >= 1 and max(lengths) <= 3
    splits = manifest["splits"]
    # nothing dropped uncounted: kept + skipped (empty) documents = the input's documents
    assert sum(s["documents"] + s["skipped_documents"] for s in splits.values()) == len(docs)
    assert sum(s["skipped_documents"] for s in splits.values()) == 5
    # every kept document's tokens, plus its bos and eos
    assert sum(s["tokens"] for s in splits.values()) == sum(n + 2 for n in lengths)
    rows = twins.rows("short-docs")
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert all(np.isfinite(r["loss"]) for r in rows)


def test_running_out_of_text_starts_a_new_epoch_logged_and_recorded(twins):
    rows = twins.rows("short-docs")
    epochs = [r["epoch"] for r in rows]
    assert epochs[0] == 0 and epochs[-1] >= 1 and epochs == sorted(epochs)
    assert "data exhausted after" in twins.log("short-docs") and "starting epoch 1" in twins.log("short-docs")

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tb_dir,) = glob.glob(os.path.join(twins.dump("short-docs"), "tb", "*"))
    events = EventAccumulator(tb_dir)
    events.Reload()
    assert [int(e.value) for e in events.Scalars("tst/epoch")] == epochs


# -- numerical guards --------------------------------------------------------------------------
def test_non_finite_validation_loss_stops_the_run():
    from tst_titan.metrics import TSTMetricsProcessor

    processor = TSTMetricsProcessor.__new__(TSTMetricsProcessor)  # only what the guard reads
    processor.schedule = PhaseSchedule.from_job_config(job(steps=10, r=0.3), 1)
    with pytest.raises(FloatingPointError, match=r"non-finite validation loss inf at step 7 \(phase 2\)"):
        processor.log_validation(float("inf"), 7)
    with pytest.raises(FloatingPointError, match=r"non-finite loss nan at step 2 \(phase 1\)"):
        processor.log(2, float("nan"), float("nan"), 1.0)
