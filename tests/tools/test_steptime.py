"""``python -m tst_titan.tools.steptime``: torchtitan's own train step, interleaved variants, in a
fresh process (a Trainer initialises torch.distributed)."""

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.helpers.trainer import EMBEDDED_STORE

pytestmark = pytest.mark.usefixtures("embedded_store")


def _steptime(tmp_path, *args):
    out = tmp_path / "steptime.json"
    cmd = [sys.executable, "-m", "tst_titan.tools.steptime", "debug_tst.toml", "--steps", "4", "--warmup", "1",
           "--out", str(out), "--job.dump_folder", str(tmp_path / "dump"),
           "--training.dataset_path", EMBEDDED_STORE, "--model.hf_assets_path", EMBEDDED_STORE,
           "--model.flavor", "tiny", "--training.seq_len", "32", "--training.local_batch_size", "4", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    return proc, out


def test_times_every_variant_through_the_train_step(tmp_path):
    proc, out = _steptime(tmp_path, "--tst.bag_size", "6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["step_s"]) == {"phase1", "phase2", "baseline", "next_token_chunked"}
    for stats in report["step_s"].values():
        assert stats["n"] == 4 and stats["q1"] <= stats["median"] <= stats["q3"] and stats["median"] > 0
    assert report["bag_size"] == 6 and report["device"] == "cpu"
    s = report["step_s"]
    assert report["tst_step_ratio"] == pytest.approx(s["phase1"]["median"] / s["next_token_chunked"]["median"])
    assert report["kernel_gain"] == pytest.approx(s["baseline"]["median"] / s["next_token_chunked"]["median"])
    memory = report["peak_memory_bytes"]
    # the same data kind through the same loss: phase 2 is the baseline's step, byte for byte
    assert memory["phase2"] == memory["baseline"]
    # torchtitan's cross-entropy keeps an fp32 [B·L, V] log-softmax for its backward; the chunked
    # kernel keeps one fp32 logsumexp per position: the peaks differ by that buffer (4 x 32
    # positions x vocab 2048 x 4 bytes = 1 MiB), less the kernel's [B·L] vectors
    assert memory["baseline"] - memory["next_token_chunked"] == pytest.approx(4 * 32 * 2048 * 4, rel=0.01)
    assert "phase 1 / baseline" in proc.stdout and "control" in proc.stdout


def test_refuses_a_config_without_bags(tmp_path):
    proc, _ = _steptime(tmp_path, "--tst.bag_size", "1")
    assert proc.returncode != 0
    assert "tst.bag_size >= 2" in proc.stderr
