"""The package works installed, not only from a checkout: a non-editable install in a fresh
virtual environment runs a command on a packaged config from an unrelated folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.helpers import ROOT



@pytest.mark.slow
def test_a_wheel_in_a_fresh_venv_runs_the_dry_run_on_a_packaged_config(tmp_path):
    # Built from a copy of what the package is made of, so no build/ folder of the checkout (or
    # of an earlier build) can add a stale file to the wheel.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(Path(ROOT) / name, source / name)
    shutil.copytree(Path(ROOT) / "tst_titan", source / "tst_titan",
                    ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(source)], check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("tst_titan-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # The dependencies (torch, torchtitan, ...) come from this environment's site-packages, added
    # as a plain path: its .pth files, among them the editable install of this checkout, stay inactive.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import tst_titan; print(tst_titan.__file__)"], cwd=elsewhere,
                           check=True, capture_output=True, text=True, env=env).stdout.strip()
    assert Path(where).is_relative_to(site), where

    out = subprocess.run([str(python), "-m", "tst_titan.tools.dryrun", "debug_tst.toml"],
                         cwd=elsewhere, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert str(site / "tst_titan" / "train_configs" / "debug_tst.toml") in out.stdout + out.stderr
    assert not (elsewhere / "tst_titan").exists()
