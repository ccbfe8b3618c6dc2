"""tst_titan.analysis.runs: checkpoint loading against a hand-made DCP folder and a tiny real run,
and what a run folder tells (run info, checkpoints, the switch)."""

import math
import os

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F

from tests.helpers.analysis_runs import TINY
from tests.helpers.trainer import EMBEDDED_STORE
from tst_titan.analysis import embeddings, runs
from tst_titan.experiments import pairs
from tst_titan.datastore.store import TokenStore
from tst_titan.method.schedule import switch_step
from tst_titan.run_files import read_metrics


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_checkpoint_round_trip_with_prefixes_and_optimizer_state(tmp_path):
    model = runs.build_model("tst_llama3", "tiny", 32)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # what a torchtitan full checkpoint holds besides the weights, and wrapper prefixes
    saved = {f"model._orig_mod.{k}": v for k, v in sd.items()}
    saved["optimizer.state.tok_embeddings.weight.exp_avg"] = torch.ones(3)
    saved["train_state.step"] = torch.tensor(5)
    dcp.save(saved, checkpoint_id=str(tmp_path / "step-5"), no_dist=True)
    loaded = runs.load_checkpoint_tensors(str(tmp_path / "step-5"))
    assert sorted(loaded) == sorted(sd)
    for k in sd:
        assert torch.equal(loaded[k], sd[k]), k
    only = runs.load_checkpoint_tensors(str(tmp_path / "step-5"), ["output.weight"])
    assert list(only) == ["output.weight"] and torch.equal(only["output.weight"], sd["output.weight"])
    with pytest.raises(KeyError, match="no tensor"):
        runs.load_checkpoint_tensors(str(tmp_path / "step-5"), ["nope.weight"])

def test_tiny_run_info_checkpoints_and_stages(pair):
    switch = switch_step(TINY["fraction"], TINY["steps"])
    # from tst_run.json when the run wrote one, and from train.log + metrics.jsonl without it
    for use_record in (True, False):
        info = runs.run_info(pair["tst"], use_record=use_record)
        assert (info.enabled, info.bag_size, info.switch_step, info.steps, info.flavor, info.seq_len) == (
            True, 4, switch, TINY["steps"], "tiny", TINY["seq_len"])
        assert info.superposition_fraction == pytest.approx(TINY["fraction"])
        assert os.path.samefile(info.store_dir, EMBEDDED_STORE)
        base = runs.run_info(pair["baseline"], use_record=use_record)
        assert (base.enabled, base.switch_step, base.bag_size, base.steps) == (False, 0, 1, 30)
    plan = pairs.demo_checkpoint_plan(TINY["steps"], TINY["fraction"])
    assert runs.checkpoint_steps(pair["tst"]) == [1, switch, plan["after switch"], TINY["steps"]]
    assert runs.stage_checkpoints(pair["tst"]) == {"start": 1, "end of phase 1": switch,
                                                "after switch": plan["after switch"], "end": TINY["steps"]}
    assert runs.checkpoint_steps(pair["baseline"])[-1] == 30
    # the switch as metrics.jsonl logs it
    rows = read_metrics(pair["tst"])
    assert max(r["step"] for r in rows if r["phase"] == 1) == switch

def test_loaded_final_checkpoint_reproduces_the_logged_val_loss(pair):
    """The model rebuilt from the last checkpoint gives the val loss the trainer logged there."""
    info = runs.run_info(pair["tst"])
    rows = read_metrics(pair["tst"])
    last = rows[-1]
    model = runs.load_model(pair["tst"], last["step"], info)
    n = TINY["val_steps"] * TINY["batch"]
    L = TINY["seq_len"]
    val = TokenStore(info.store_dir, "val")
    x = torch.from_numpy(val.slice(0, n * (L + 1)).astype(np.int64)).view(n, L + 1)
    with torch.no_grad():
        logits = model(x[:, :-1])
    ce = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
    assert ce.item() == pytest.approx(last["val_loss"], abs=2e-4)
    # and the full mid-run checkpoints (with optimizer state) load into the same model
    emb, head = runs.load_embeddings(pair["tst"], 1)
    assert emb.shape == head.shape == (2048, 64)
    assert not torch.equal(emb, model.tok_embeddings.weight.detach())
    out = embeddings.phase1_entropy(model, val.slice(0, len(val)), 4, seq_len=L, batch=2)
    assert out["log_s"] == pytest.approx(math.log(4)) and 0 < out["entropy"] <= math.log(2048) + 1e-4
    assert out["bag_loss"] > 0 and out["positions"] == 2 * L
