"""The loss of a real torchtitan phase-1 step equals the method computed by hand, for every
tst.mode and for llama3 and qwen3: windows read from the raw token stream, cut by a loop into the
inputs and targets the paper describes, a bag's embedding the mean of its rows, the model's blocks
run on those embeddings, and the cross-entropy averaged over every target."""

import os

import pytest
import torch

from tests.helpers.trainer import EMBEDDED_STORE, Plan, Results, run_plans
from tst_titan.analysis.runs import load_checkpoint_tensors
from tst_titan.datastore.store import TokenStore
from tst_titan.train_spec import get_tst_train_spec

BAG, SEQ, BATCH = 4, 32, 4  # s, L and the local batch (one process, no accumulation)
ARGS = ["--training.steps", "2", "--tst.superposition_fraction", "0.5", "--tst.bag_size", str(BAG),
        "--training.seq_len", str(SEQ), "--training.local_batch_size", str(BATCH), "--validation.no-enable"]
#: (model, mode): the paper's TST and the two halves of its section 5.2 ablation.
CASES = [("tst_llama3", "full"), ("tst_llama3", "input_only"), ("tst_llama3", "output_only"),
         ("tst_qwen3", "full")]


def _case_args(model: str, mode: str) -> list[str]:
    return [*ARGS, "--model.name", model, "--tst.mode", mode]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, embedded_store) -> Results:
    """For each case the step-0 weights (seed) and a run's first step from them, in one process."""
    base = str(tmp_path_factory.mktemp("phase1_loss"))
    plans = []
    for model, mode in CASES:
        name = f"{model}-{mode}"
        seed = os.path.join(base, f"{name}-seed", "checkpoint", "step-0")
        plans += [Plan(f"{name}-seed", [*_case_args(model, mode), "--checkpoint.enable",
                                        "--checkpoint.create_seed_checkpoint"]),
                  Plan(name, [*_case_args(model, mode), "--checkpoint.enable", "--checkpoint.initial_load_path",
                              seed, "--checkpoint.interval", "100000"])]
    run_plans(base, plans)
    return Results(base)


def _sample(tokens: list[int], mode: str) -> tuple[list[list[int]], list[list[int]]]:
    """One phase-1 sample by hand: per position the tokens averaged into its input, and its targets."""
    if mode == "full":  # bag j in, every token of bag j + 1 out
        bags = [tokens[j * BAG:(j + 1) * BAG] for j in range(SEQ + 1)]
        return bags[:-1], bags[1:]
    if mode == "input_only":  # bag j in, the one token after it out
        return [tokens[j * BAG:(j + 1) * BAG] for j in range(SEQ)], [[tokens[(j + 1) * BAG]] for j in range(SEQ)]
    # output_only: token t in, tokens t+1 .. t+s out
    return [[tokens[t]] for t in range(SEQ)], [tokens[t + 1:t + 1 + BAG] for t in range(SEQ)]


def _by_hand(model_name: str, weights: dict, stream: list[int], mode: str) -> float:
    spec = get_tst_train_spec(model_name)
    model = spec.model_cls(spec.model_args["tiny"])  # no bag embedding: the means are computed here
    model.load_state_dict(weights)
    table = model.tok_embeddings.weight.detach().double()
    window = {"full": BAG * (SEQ + 1), "input_only": BAG * SEQ + 1, "output_only": SEQ + BAG}[mode]
    inputs, targets = [], []
    for b in range(BATCH):  # sample b of rank 0 of 1 is the b-th window of the stream
        ins, outs = _sample(stream[b * window:(b + 1) * window], mode)
        inputs.append(torch.stack([sum(table[t] for t in bag) / len(bag) for bag in ins]))
        targets.append(outs)
    model.tok_embeddings = None  # torchtitan's forward then takes the embeddings as they are
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.stack(inputs).float()).double(), dim=-1)
    losses = [-log_probs[b, j, t] for b in range(BATCH) for j in range(SEQ) for t in targets[b][j]]
    return float(sum(losses)) / len(losses)


@pytest.mark.slow
@pytest.mark.parametrize("model_name, mode", CASES)
def test_a_real_phase1_step_reports_the_hand_computed_loss(runs, model_name, mode):
    name = f"{model_name}-{mode}"
    first = runs.rows(name)[0]
    assert (first["step"], first["phase"]) == (1, 1)
    weights = load_checkpoint_tensors(os.path.join(runs.dump(f"{name}-seed"), "checkpoint", "step-0"))
    stream = TokenStore(EMBEDDED_STORE, "train").slice(0, BATCH * BAG * (SEQ + 1)).tolist()
    assert first["loss"] == pytest.approx(_by_hand(model_name, weights, stream, mode), rel=1e-6)
