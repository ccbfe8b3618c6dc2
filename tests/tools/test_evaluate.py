"""``python -m tst_titan.tools.evaluate``: the table and evaluate.json on the tiny pair's local
task; the hub tasks fail offline naming the task; bad input exits 2 with a clear message."""

import json
import os
import subprocess
import sys

from tst_titan.tools.evaluate import main


def test_writes_the_table_and_evaluate_json(pair, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main([pair["tst"], pair["baseline"], "--tasks", "tst_continuation", "--out", str(out),
                 "--tst-items", "12", "--batch-size", "auto", "--device", "cpu"]) == 0
    record = json.loads((out / "evaluate.json").read_text())
    runs = [os.path.normpath(pair["tst"]), os.path.normpath(pair["baseline"])]
    assert [(r["run"], r["task"]) for r in record["results"]] == [(runs[0], "tst_continuation"),
                                                                   (runs[1], "tst_continuation")]
    for r in record["results"]:
        assert {"run", "task", "accuracy", "stderr"} <= set(r) and 0 <= r["accuracy"] <= 1
        assert abs(r["accuracy"] * 12 - round(r["accuracy"] * 12)) < 1e-9  # a fraction of the 12 items
    assert [r["step"] for r in record["runs"]] == [20, 30]  # each run's latest checkpoint
    text = capsys.readouterr().out
    lines = text.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("run ")):]  # after lm-eval's prints
    assert lines[0].split() == ["run", "step", "val_loss", "tst_continuation"]
    for line, r, run in zip(lines[1:3], record["results"], record["runs"]):
        assert line.split()[:5] == [r["run"], str(run["step"]), f"{run['val_loss']:.4f}", f"{r['accuracy']:.4f}", "±"]
    assert f"written: {out / 'evaluate.json'}" in text


def test_bad_input_exits_2_with_the_argument_named(pair, tmp_path, capsys):
    assert main([pair["tst"], "--tasks", "tst_continuation", "--step", "3", "--out", str(tmp_path)]) == 2
    assert "--step 3" in capsys.readouterr().err
    assert main([pair["tst"], "--tasks", "tst_continuation", "--tst-items", "0", "--out", str(tmp_path)]) == 2
    assert "items must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "evaluate.json").exists()


def test_hub_tasks_fail_offline_naming_the_task(pair, tmp_path):
    # A fresh interpreter: the hub libraries read HF_HUB_OFFLINE when first imported.
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    proc = subprocess.run([sys.executable, "-m", "tst_titan.tools.evaluate", pair["tst"], "--tasks",
                           "tst_continuation", "arc_easy", "--out", str(tmp_path / "ev")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: task 'arc_easy': its dataset could not be loaded" in proc.stderr
    assert "tst_continuation" in proc.stderr.splitlines()[-1]  # the offline alternative is named
    assert not (tmp_path / "ev" / "cache" / "hf").exists()  # no model was exported
