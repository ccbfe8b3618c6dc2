"""TST on a Mixture-of-Experts model on CPU: 1 process, and 2 processes with FSDP2 + expert parallel."""

import pytest

from tests.helpers.trainer import losses, seed_checkpoint, train

pytestmark = pytest.mark.usefixtures("embedded_store")

MOE = ["--model.flavor", "debug_moe", "--training.steps", "6", "--tst.superposition_fraction", "0.5"]


@pytest.mark.slow
def test_moe_tst_on_one_process_and_with_fsdp2_and_expert_parallel(tmp_path):
    # Same seed weights (a step-0 checkpoint), same global batch of 4 samples: 1 process vs
    # 2 processes with FSDP2 and EP = 2 (4 of the 8 experts per rank, all-to-all token dispatch).
    load = seed_checkpoint(tmp_path / "seed", *MOE, config="debug_moe_tst.toml")
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
