"""TST on a Mixture-of-Experts model on CPU: 1 process, and 2 processes with FSDP2 + expert parallel."""

import os

import pytest
import torch

from tests.distributed import run_on_processes
from tests.training import _train_body, job_args, losses, train

pytestmark = pytest.mark.usefixtures("embedded_store")

MOE = ["--model.flavor", "debug_moe", "--training.steps", "6", "--tst.superposition_fraction", "0.5"]


def test_permute_runs_on_cpu_tensors():
    # torchtitan's _permute (expert parallel, grouped-mm padding) calls a triton kernel; tst_titan.cpu
    # routes CPU tensors to its reference implementation.
    from torchtitan.models.moe.utils import _permute

    x = torch.arange(12.0).view(6, 2)
    tokens_per_expert = torch.tensor([2, 0, 3, 1])  # 2 ranks x 2 local experts
    shape, permuted, indices, sizes = _permute(x, tokens_per_expert, ep_degree=2, num_local_experts=2)
    assert shape == (7, 2) and sizes.tolist() == [8, 8]  # each local expert padded to 8 rows
    # tokens arrive grouped [rank 0: E0 E1 | rank 1: E0 E1]; local expert 0 gets rows 0-1 (rank 0)
    # and 2-4 (rank 1), expert 1 row 5; padding rows point at the appended zero row (-1)
    assert indices[:9].tolist() == [0, 1, 2, 3, 4, -1, -1, -1, 5]
    assert torch.equal(permuted[:5], x[:5]) and not permuted[5:8].any()


@pytest.mark.slow
def test_moe_tst_on_one_process_and_with_fsdp2_and_expert_parallel(tmp_path):
    # Same seed weights (a step-0 checkpoint), same global batch of 4 samples: 1 process vs
    # 2 processes with FSDP2 and EP = 2 (4 of the 8 experts per rank, all-to-all token dispatch).
    seed = str(tmp_path / "seed")
    os.makedirs(seed)
    args = job_args(seed, *MOE, "--checkpoint.enable", "--checkpoint.create_seed_checkpoint",
                    config="debug_moe_tst.toml")
    run_on_processes(_train_body, 1, args, None)
    load = ["--checkpoint.enable", "--checkpoint.initial_load_path", os.path.join(seed, "checkpoint", "step-0"),
            "--checkpoint.interval", "100000"]
    one, (shapes,) = train(tmp_path / "one", *MOE, *load, "--training.local_batch_size", "4",
                           config="debug_moe_tst.toml", spy=True)
    two = train(tmp_path / "two", *MOE, *load, "--training.local_batch_size", "2",
                "--parallelism.data_parallel_shard_degree", "2", "--parallelism.expert_parallel_degree", "2",
                config="debug_moe_tst.toml", world_size=2)
    assert [r["phase"] for r in one if "loss" in r] == [1, 1, 1, 2, 2, 2]
    assert shapes == [[4, 32, 4]] * 3 + [[4, 32]] * 3  # bags of 4 tokens, then next-token
    assert [r["phase"] for r in two if "loss" in r] == [1, 1, 1, 2, 2, 2]
    assert losses(two) == pytest.approx(losses(one), rel=1e-4, abs=1e-4)
    assert losses(one)[-1] < losses(one)[3]  # it learns in phase 2
