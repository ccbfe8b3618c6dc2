"""End-to-end runs of the stock torchtitan Trainer with the TST specs, on CPU over gloo (also the
bag-mean embedding under torch.compile and activation checkpointing)."""

import json
import subprocess
import sys

import pytest

from tests.helpers.trainer import job_args, losses, metrics_rows, seed_checkpoint, train

pytestmark = pytest.mark.usefixtures("embedded_store")


def test_bag_size_one_is_the_baseline_exactly(tmp_path):
    tst = train(tmp_path / "tst", "--tst.bag_size", "1", "--tst.superposition_fraction", "0.5")
    base = train(tmp_path / "base", config="debug_baseline.toml")
    assert [r["phase"] for r in tst if "loss" in r][:4] == [1, 1, 1, 1]
    assert losses(tst) == losses(base)  # bit for bit, every step
    assert [r.get("val_loss") for r in tst] == [r.get("val_loss") for r in base]


def test_switch_at_round_r_steps_with_gradient_accumulation(tmp_path):
    # 8 steps, r = 0.4 -> round(3.2) = 3 bag steps; global batch 8 = 2 microbatches of 4.
    rows, (shapes,) = train(tmp_path, "--tst.superposition_fraction", "0.4",
                            "--training.global_batch_size", "8", spy=True)
    assert [r["phase"] for r in rows if "loss" in r] == [1, 1, 1, 2, 2, 2, 2, 2]
    assert shapes == [[4, 32, 4]] * 6 + [[4, 32]] * 10
    # raw text read: s tokens per position in phase 1
    assert rows[-1]["raw_tokens_seen"] == 8 * 32 * (4 * 3 + 5)
    assert rows[-1]["positions_seen"] == 8 * 32 * 8


@pytest.mark.slow
def test_switch_with_two_data_parallel_ranks(tmp_path):
    rows, shapes = train(tmp_path, "--tst.superposition_fraction", "0.4",
                         "--training.global_batch_size", "16", world_size=2, spy=True)
    for rank_shapes in shapes:  # each rank: 2 microbatches per step
        assert rank_shapes == [[4, 32, 4]] * 6 + [[4, 32]] * 10
    assert [r["phase"] for r in rows if "loss" in r] == [1, 1, 1, 2, 2, 2, 2, 2]


def test_validation_reads_the_same_tokens_every_time(tmp_path):
    # With a learning rate of 0 the model never changes, so every evaluation must give the same
    # loss; torchtitan's own validator would read the next slice of text each time.
    rows = train(tmp_path, "--optimizer.lr", "0", "--validation.freq", "2")
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    assert len(val) == 5 and len(set(val)) == 1


@pytest.mark.slow
@pytest.mark.parametrize("parallelism, local_batch", [
    (["--parallelism.data_parallel_shard_degree", "2"], "2"),
    (["--parallelism.data_parallel_shard_degree", "1", "--parallelism.tensor_parallel_degree", "2"], "4"),
], ids=["fsdp2", "tp2"])
def test_two_processes_match_one(tmp_path, parallelism, local_batch):
    # Same global batch of 4 samples: FSDP2 splits it over 2 ranks (the same windows, see
    # tst_titan/components/dataloader.py), TP=2 shards the model (loss parallel on).
    steps = ["--training.steps", "6", "--tst.superposition_fraction", "0.5"]
    steps += seed_checkpoint(tmp_path / "seed")
    single = train(tmp_path / "one", *steps, "--training.local_batch_size", "4")
    multi = train(tmp_path / "two", *steps, *parallelism, "--training.local_batch_size", local_batch,
                  world_size=2)
    assert [r["phase"] for r in multi if "loss" in r] == [1, 1, 1, 2, 2, 2]
    assert losses(multi) == pytest.approx(losses(single), rel=1e-4, abs=1e-4)


def _torchrun(config, dump, nproc=1, extra=()):
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
           "-m", "torchtitan.train", *job_args(dump, *extra, config=config)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["debug_tst.toml", "debug_baseline.toml"])
def test_torchrun_smoke(tmp_path, config):
    proc = _torchrun(config, tmp_path, extra=["--training.steps", "4", "--model.flavor", "debug"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Training completed" in proc.stdout + proc.stderr
    rows = metrics_rows(tmp_path)
    assert rows[-1]["step"] == 4


@pytest.mark.slow
def test_torchrun_two_processes_fsdp(tmp_path):
    proc = _torchrun("debug_tst.toml", tmp_path, nproc=2,
                     extra=["--training.steps", "4", "--training.local_batch_size", "2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dp_shard=2" in proc.stdout + proc.stderr


def test_tst_qwen3_trains_with_bags(tmp_path):
    rows, (shapes,) = train(tmp_path, "--model.name", "tst_qwen3", "--model.flavor", "tiny",
                            "--training.steps", "4", "--tst.superposition_fraction", "0.5",
                            "--validation.freq", "2", spy=True)
    assert shapes == [[4, 32, 4]] * 2 + [[4, 32]] * 2
    assert [r["phase"] for r in rows] == [1, 1, 2, 2]
    assert all(r["loss"] == r["loss"] and r["loss"] < 20 for r in rows)  # finite, not NaN
    assert len([r for r in rows if "val_loss" in r]) == 3


@pytest.mark.slow
def test_compile_and_activation_checkpointing_match_eager(tmp_path):
    args = ["--training.steps", "5", "--tst.superposition_fraction", "0.4", "--validation.no-enable"]
    eager = train(tmp_path / "eager", *args)
    compiled = train(tmp_path / "compiled", *args, "--compile.enable", "--compile.backend", "inductor",
                     "--activation_checkpoint.mode", "full")
    assert [r["phase"] for r in compiled] == [1, 1, 2, 2, 2]
    assert losses(compiled) == pytest.approx(losses(eager), rel=1e-4, abs=1e-4)
    # the real backend compiled graphs: the transformer blocks and the next-token loss
    with open(tmp_path / "compiled" / "compile.json") as f:
        stats = json.load(f)
    assert stats["backend"] == "inductor" and stats["unique_graphs"] >= 2
