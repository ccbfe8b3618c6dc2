"""Data faults through real trainer starts and runs lose nothing silently; a real checkpoint
carries the [tst] settings. The runs are the ``one`` and ``twins`` families of
tests/helpers/plans.py. (The dataset's position, fast-forward and settings on a numpy stand-in of
the store: tests/components/test_dataloader.py.)"""

import glob
import os
import pickle

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tokenizers import Tokenizer
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from tests.helpers.plans import short_documents
from tst_titan.datastore.store import read_manifest

pytestmark = pytest.mark.usefixtures("embedded_store")


def test_a_real_checkpoint_carries_the_tst_settings(one, tmp_path):
    dcp_to_torch_save(one.checkpoint("full", 8), str(tmp_path / "ckpt.pt"))
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    loader = pickle.loads(saved["dataloader"]["dp_rank_0"])
    state = loader["dataset_state"]
    assert state["sample_index"] == 8 * 4
    assert state["tst"] == {
        "enable": True, "bag_size": 4, "superposition_fraction": 0.5, "loss_weighting": "uniform",
        "mode": "full", "optimizer_at_switch": "keep", "rewarm_steps": 0, "window_order": "stream", "steps": 8, "seq_len": 32, "samples_per_step": 4, "switch_step": 4, "switch_sample": 16}


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
    store = os.path.join(twins.base, "stores", "short_docs")
    manifest = read_manifest(store)
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

    (tb_dir,) = glob.glob(os.path.join(twins.dump("short-docs"), "tb", "*"))
    events = EventAccumulator(tb_dir)
    events.Reload()
    assert [int(e.value) for e in events.Scalars("tst/epoch")] == epochs
