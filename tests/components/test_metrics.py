"""metrics.jsonl and phase-corrected throughput, checked against the closed-form counts; the run
file; the non-finite loss guards."""

import pytest
from torchtitan.components import metrics as tt_metrics
from torchtitan.distributed import ParallelDims

from tests.helpers.data import job
from tests.helpers.trainer import parse
from tst_titan.components.dataloader import phase_schedule
from tst_titan.components.metrics import TSTMetricsProcessor
from tst_titan.components.run_context import begin_training_run
from tst_titan.run_files import read_metrics, read_run_file


@pytest.fixture
def processor(tmp_path):
    cfg = parse(
        "--job.dump_folder", str(tmp_path),
        "--training.steps", "10", "--tst.superposition_fraction", "0.3", "--tst.bag_size", "4",
        "--training.local_batch_size", "2", "--training.global_batch_size", "4",
        "--training.seq_len", "8", "--metrics.log_freq", "1", "--validation.freq", "2",
        "--metrics.no-enable-tensorboard",
    )
    dims = ParallelDims(dp_shard=1, dp_replicate=1, cp=1, tp=1, pp=1, ep=1, etp=1, world_size=1)
    begin_training_run(cfg, {})  # what the TST dataloader builder does first in a trainer
    p = TSTMetricsProcessor(cfg, dims)
    p.num_flops_per_token = 1000
    return p


def _train_step(p, step, phase):
    # what torchtitan's batch_generator does per microbatch (2 microbatches of 2 samples)
    for _ in range(2):
        p.ntokens_since_last_log += 2 * 8 * (4 if phase == 1 else 1)
        p.data_loading_times.append(0.0)
    p.log(step, 5.0, 5.0, 1.0, extra_metrics={"lr": 0.1, "n_tokens_seen": 0})


def test_rows_counts_and_validation_merge(processor, tmp_path):
    p = processor
    _train_step(p, 1, 1)
    # throughput counts positions (2 microbatches x 2 samples x 8), not s x positions
    assert p.ntokens_since_last_log == 0
    p.log_validation(4.5, 1)
    _train_step(p, 2, 1)
    p.log_validation(4.4, 2)
    _train_step(p, 3, 1)
    _train_step(p, 4, 2)
    p.log_validation(4.3, 4)
    p.close()
    rows = read_metrics(str(tmp_path))
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["phase"] for r in rows] == [1, 1, 1, 2]
    assert [r.get("val_loss") for r in rows] == [4.5, 4.4, None, 4.3]
    per_step = 4 * 8
    assert [r["positions_seen"] for r in rows] == [per_step * k for k in (1, 2, 3, 4)]
    assert [r["raw_tokens_seen"] for r in rows] == [per_step * 4 * k for k in (1, 2, 3)] + [per_step * 13]
    assert rows[3]["flops_seen"] == 1000 * per_step * 4
    assert all(0 <= r["data_loading_pct"] <= 100 for r in rows)  # torchtitan's data-wait share
    assert all(set(r) >= {"step", "phase", "loss", "lr", "raw_tokens_seen", "positions_seen",
                          "flops_seen", "wall_time_s"} for r in rows)
    record = read_run_file(str(tmp_path))  # the run file: the job config the run was built with
    assert record["job_config"]["tst"]["bag_size"] == 4 and record["model_args"] is None


def test_tps_is_positions_per_second(processor, monkeypatch):
    seen = {}
    original = tt_metrics.MetricsProcessor.log

    def capture(self, step, *args, **kwargs):
        seen[step] = self.ntokens_since_last_log
        return original(self, step, *args, **kwargs)

    monkeypatch.setattr(tt_metrics.MetricsProcessor, "log", capture)
    _train_step(processor, 1, 1)
    _train_step(processor, 4, 2)
    assert seen == {1: 2 * 2 * 8, 4: 2 * 2 * 8}  # the same positions in both phases


def test_non_finite_validation_loss_stops_the_run():
    processor = TSTMetricsProcessor.__new__(TSTMetricsProcessor)  # only what the guard reads
    processor.schedule = phase_schedule(job(steps=10, r=0.3), 1)
    with pytest.raises(FloatingPointError, match=r"non-finite validation loss inf at step 7 \(phase 2\)"):
        processor.log_validation(float("inf"), 7)
    with pytest.raises(FloatingPointError, match=r"non-finite loss nan at step 2 \(phase 1\)"):
        processor.log(2, float("nan"), float("nan"), 1.0)


def test_an_evaluation_between_logged_steps_restarts_the_throughput_interval(processor, monkeypatch):
    # log_freq 3, validation every 2: the evaluation after step 2 falls inside the interval 1..3.
    processor.log_freq = 3
    seen = {}
    original = tt_metrics.MetricsProcessor.log

    def capture(self, step, *args, **kwargs):
        seen[step] = (self.ntokens_since_last_log, len(self.data_loading_times))
        return original(self, step, *args, **kwargs)

    monkeypatch.setattr(tt_metrics.MetricsProcessor, "log", capture)
    for _ in range(4):  # steps 1 and 2: 4 microbatches before the evaluation
        processor.data_loading_times.append(0.0)
    processor.log_validation(4.0, 2)
    _train_step(processor, 3, 1)  # 2 microbatches after it
    # positions and data-loading share of the 2 microbatches after the evaluation only
    assert seen[3] == (2 * 2 * 8, 2)
