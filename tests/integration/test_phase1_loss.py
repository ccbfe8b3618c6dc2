"""The loss of a real torchtitan phase-1 step equals the method computed by hand: windows read from
the raw token stream, cut into bags by a loop, each bag's embedding the mean of its rows, the
model's blocks run on those means, and the multi-hot cross-entropy of every next-bag token."""

import os

import pytest
import torch

from tests.helpers.trainer import EMBEDDED_STORE, seed_checkpoint, train
from tst_titan.analysis.runs import load_checkpoint_tensors
from tst_titan.datastore.store import TokenStore
from tst_titan.train_spec import get_tst_train_spec

BAG, SEQ, BATCH = 4, 32, 4  # s, L and the local batch (one process, no accumulation)
ARGS = ["--training.steps", "2", "--tst.superposition_fraction", "0.5", "--tst.bag_size", str(BAG),
        "--training.seq_len", str(SEQ), "--training.local_batch_size", str(BATCH), "--validation.no-enable"]


def _by_hand(weights: dict, tokens: list[int]) -> float:
    """The mean multi-hot cross-entropy of the first phase-1 batch, from first principles."""
    spec = get_tst_train_spec("tst_llama3")
    model = spec.model_cls(spec.model_args["tiny"])  # no bag hook: the means are computed here
    model.load_state_dict(weights)
    table = model.tok_embeddings.weight.detach().double()
    window = BAG * (SEQ + 1)
    inputs, targets = [], []
    for b in range(BATCH):  # sample b of rank 0 of 1 is the b-th window of the stream
        sample = tokens[b * window:(b + 1) * window]
        bags = [sample[j * BAG:(j + 1) * BAG] for j in range(SEQ + 1)]
        inputs.append([sum(table[t] for t in bag) / BAG for bag in bags[:-1]])
        targets.append(bags[1:])  # position j predicts every token of bag j + 1
    embeddings = torch.stack([torch.stack(row) for row in inputs]).float()
    model.tok_embeddings = None  # torchtitan's forward then takes the embeddings as they are
    with torch.no_grad():
        logits = model(embeddings).double()
    log_probs = torch.log_softmax(logits, dim=-1)
    total = sum(-log_probs[b, j, t] for b in range(BATCH) for j in range(SEQ) for t in targets[b][j])
    return float(total) / (BATCH * SEQ * BAG)


@pytest.mark.slow
@pytest.mark.usefixtures("embedded_store")
def test_a_real_phase1_step_reports_the_hand_computed_bag_loss(tmp_path):
    seed = seed_checkpoint(tmp_path / "seed", *ARGS)
    rows = train(tmp_path / "run", *ARGS, *seed)
    assert rows[0]["step"] == 1 and rows[0]["phase"] == 1
    weights = load_checkpoint_tensors(os.path.join(tmp_path, "seed", "checkpoint", "step-0"))
    tokens = TokenStore(EMBEDDED_STORE, "train").slice(0, BATCH * BAG * (SEQ + 1)).tolist()
    expected = _by_hand(weights, tokens)
    assert rows[0]["loss"] == pytest.approx(expected, rel=1e-6)
    assert expected > 0
