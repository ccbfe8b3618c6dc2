"""The `python -m tst_titan.tools.prepare` command: end to end, argument errors, a missing folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

from tst_titan.datastore.sources import embedded_source_files
from tst_titan.datastore.store import TokenStore
from tst_titan.tools import prepare



def test_prepare_command_end_to_end(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for f in embedded_source_files()[:30]:
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "extra.jsonl").write_text(
        json.dumps({"text": "a json document"}) + "\n" + json.dumps({"x": 1}) + "\n"
    )
    out = tmp_path / "store"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "tst_titan.tools.prepare", "--out", str(out), "--folder", str(folder),
         "--vocab-size", "300", "--val-fraction", "0.2", "--shard-documents", "8"],
        capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    manifest = json.loads((out / "manifest.json").read_text())
    for split in ("train", "val"):
        assert summary["tokens"][split] == manifest["splits"][split]["tokens"] > 0
        assert summary["documents"][split] == manifest["splits"][split]["documents"]
    assert summary["source_stats"]["skipped_records"] == 1
    assert summary["tokens_per_second"] > 0 and summary["vocab_size"] <= 300
    assert "shard_00000" in proc.stderr  # per-shard progress lines
    assert len(TokenStore(out, "train")) == summary["tokens"]["train"]


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--folder", "x", "--site-packages"], "--site-packages"),
        (["--embedded", "--folder", "x"], "--folder"),
        (["--vocab-size", "100", "--embedded"], "--vocab-size"),
        (["--embedded", "--max-documents", "5"], "--max-documents"),
        (["--embedded", "--val-fraction", "1.5"], "--val-fraction"),
        (["--embedded", "--workers", "0"], "--workers"),
        ([], "--embedded"),
    ],
)
def test_prepare_argument_errors_name_the_option(tmp_path, capsys, argv, option):
    with pytest.raises(SystemExit) as e:
        prepare.main(["--out", str(tmp_path / "o")] + argv)
    assert e.value.code == 2
    assert option in capsys.readouterr().err


def test_prepare_reports_a_missing_folder(tmp_path, capsys):
    code = prepare.main(["--out", str(tmp_path / "o"), "--folder", str(tmp_path / "nope")])
    assert code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nope") in err and ".jsonl" in err
    assert not (tmp_path / "o").exists()
