"""scripts/gpu_check.sh: its mechanics on CPU (--cpu-smoke), since this machine has no GPU."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.trainer import ROOT
from tst_titan.experiments.gpucheck import parse_log, plan

pytestmark = pytest.mark.usefixtures("embedded_store")


def test_gpu_plan_uses_the_paper_configs_with_compile_and_float8():
    runs = {r.name: r for r in plan(cpu_smoke=False)}
    assert runs["270m_tst"].config == "270m_tst.toml" and runs["270m_baseline"].config == "270m_baseline.toml"
    for name in ("270m_tst", "270m_baseline"):  # as configured: compile on, float8 converter kept
        assert not runs[name].drop_converters and "--compile.no-enable" not in runs[name].overrides
    assert runs["270m_baseline_bf16"].drop_converters
    assert "debug_moe_gmm" in runs["debug_moe_gmm"].overrides
    assert "tst.quantize.grouped_mm.float8" in runs["debug_moe_gmm_float8"].overrides
    assert sum(r.timeout_s for r in runs.values()) <= 480  # < 8 minutes of runs on one GPU


def test_console_lines_are_parsed():
    line = ("[titan] 2026-01-01 - root - INFO - step: 12  loss:  3.21000  grad_norm:  0.5000  "
            "memory: 41.60GiB(29.74%)  tps: 123,456  tflops: 180.20  mfu: 18.22%")
    assert parse_log(line) == [{"step": 12, "memory_gib": 41.6, "memory_pct": 29.74, "tps": 123456, "mfu_pct": 18.22}]


@pytest.mark.slow
def test_cpu_smoke_writes_a_report(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_check.sh"), "--cpu-smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "gpu_check.json") as f:
        report = json.load(f)
    assert report["mode"] == "cpu-smoke"
    status = {r["name"]: r["status"] for r in report["runs"]}
    assert status == {"270m_tst": "ok", "270m_baseline": "ok", "270m_baseline_bf16": "skipped",
                      "debug_moe_gmm": "ok", "debug_moe_gmm_float8": "skipped"}
    runs = {r["name"]: r for r in report["runs"]}
    for name in ("270m_tst", "270m_baseline", "debug_moe_gmm"):
        run = runs[name]
        assert run["steps_logged"] == 4 and run["peak_reserved_gib"] > 0
        assert set(run["phases"]) == ({"1", "2"} if name != "270m_baseline" else {"2"})
        assert all(p["median_step_s"] > 0 for p in run["phases"].values())
    tst = runs["270m_tst"]["phases"]
    # phase 1 reads s = 6 tokens per position
    assert tst["1"]["text_tokens_per_s"] == pytest.approx(6 * tst["1"]["positions_per_s"], rel=1e-3)
    assert report["ratios"]["tst_phase1_step_over_baseline_step"] > 0


def _gpu_check(tmp_path, stages, *args):
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_STAGES": stages}
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_check.sh"), "--out", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=300, env=env)


def test_the_frontier_stage_runs_the_benchmarks_gpu_preset(tmp_path):
    # on this CPU machine the GPU preset refuses to start: the stage called it, and its status is the script's
    proc = _gpu_check(tmp_path, "frontier")
    assert proc.returncode != 0
    assert "device 'cuda': torch finds no CUDA device" in proc.stderr + proc.stdout
    assert "the frontier study failed" in proc.stderr
    assert not (tmp_path / "gpu_tests.xml").exists() and not (tmp_path / "gpu_check.json").exists()


def test_an_unknown_stage_is_refused_naming_the_allowed_ones(tmp_path):
    proc = _gpu_check(tmp_path, "tests speed")
    assert proc.returncode == 2
    assert "unknown stage 'speed' in GPU_CHECK_STAGES; allowed: tests, perf, frontier" in proc.stderr


def test_the_gpu_bundle_carries_the_pinned_versions_this_suite_runs_with():
    # scripts/gpu_bundle.sh packs torchtitan's stack for a GPU machine without it: the versions
    # pyproject.toml pins, and for the rest the ones installed here
    import importlib.metadata
    import tomllib
    listed = subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_bundle.sh"), "--list"], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PYTHON": sys.executable}, check=True)
    wheels = dict(line.split("==") for line in listed.stdout.split())
    project = tomllib.loads(open(os.path.join(ROOT, "pyproject.toml")).read())["project"]
    pins = dict(r.split("==") for r in project["dependencies"] + project["optional-dependencies"]["float8"] if "==" in r)
    assert {"torchtitan", "torchdata", "tyro", "torchao"} <= set(pins)
    assert {name: wheels[name] for name in pins} == pins
    assert all(importlib.metadata.version(name) == version for name, version in wheels.items())


FAKE_PYTHON = r"""#!/usr/bin/env bash
# stands in for a GPU machine's python3: torchtitan not importable until the bundle is installed
echo "$*" >> "$CALLS"
case "$*" in
    "-c import torchtitan") exit 1 ;;
    "-c import sys;"*) echo "$FAKE_VERSION" ;;
    "-m pip install"*) touch "$INSTALLED" ;;
    *"importlib.import_module"*) echo "PYTHONPATH=$PYTHONPATH" >> "$CALLS"
                                 if [[ -n "$FAKE_MISSING" ]]; then echo "$FAKE_MISSING"; exit 1; fi ;;
esac
"""


def _with_bundle(tmp_path, python_version="3.12", bundle=True, missing=""):
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    if bundle:
        (tmp_path / "bundle" / "wheels").mkdir(parents=True)
        (tmp_path / "bundle" / "wheels" / "torchtitan-0.2.2-py3-none-any.whl").write_text("")
        (tmp_path / "bundle" / "python_version").write_text(python_version + "\n")
    env = {**os.environ, "PYTHON": str(fake), "GPU_BUNDLE": str(tmp_path / "bundle"), "GPU_CHECK_STAGES": " ",
           "CALLS": str(tmp_path / "calls"), "INSTALLED": str(tmp_path / "installed"), "FAKE_VERSION": "3.12",
           "FAKE_MISSING": missing, "TST_GPU_SITE": str(tmp_path / "site")}
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_check.sh"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60, env=env)
    calls = (tmp_path / "calls").read_text() if (tmp_path / "calls").exists() else ""
    return proc, calls


def test_a_bundle_is_installed_where_torchtitan_is_missing(tmp_path):
    proc, calls = _with_bundle(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "installed").exists()
    pip = next(line for line in calls.splitlines() if line.startswith("-m pip install"))
    assert "--no-index --no-deps" in pip and f"--target {tmp_path / 'site'}" in pip
    assert str(tmp_path / "bundle" / "wheels" / "torchtitan-0.2.2-py3-none-any.whl") in pip
    # the check that the stack imports ran with the installed folder first on the path
    assert f"PYTHONPATH={tmp_path / 'site'}:{ROOT}" in calls


@pytest.mark.parametrize("case, message", [
    ({"bundle": False}, "cannot import torchtitan and there is no"),
    ({"python_version": "3.11"}, "was built for Python 3.11, this is Python 3.12: run GPU_PYTHON_VERSION=3.12"),
    ({"missing": "datasets (No module named 'pyarrow')"},
     "cannot run tst_titan: missing or wrong: datasets (No module named 'pyarrow')"),
])
def test_a_stack_that_cannot_run_stops_before_any_stage(tmp_path, case, message):
    proc, _ = _with_bundle(tmp_path, **case)
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "out").exists()
