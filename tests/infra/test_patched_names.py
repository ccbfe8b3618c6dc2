"""Every torchtitan name tst_titan.infra replaces or reads still exists in the installed
torchtitan, so an upgrade that renames one fails here, not in a training.

The names are looked up in a fresh interpreter that never imports tst_titan (no patch applied:
what is checked is torchtitan's own), and the float8 check in the families' parallelize sources."""

import importlib
import inspect
import json
import subprocess
import sys

import pytest

from tst_titan.infra import config_hook, cpu, float8
from tst_titan.train_spec import FAMILIES

PATCHED = sorted(set(cpu.PATCHED_NAMES) | set(config_hook.PATCHED_NAMES))

_LOOKUP = """
import functools, importlib, json, sys
found = {}
for module, dotted in json.loads(sys.argv[1]):
    try:
        functools.reduce(getattr, dotted.split("."), importlib.import_module(module))
        found[f"{module}:{dotted}"] = True
    except (ImportError, AttributeError):
        found[f"{module}:{dotted}"] = False
assert not any(name.startswith("tst_titan") for name in sys.modules), "tst_titan was imported"
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def found_in_torchtitan() -> dict:
    proc = subprocess.run([sys.executable, "-c", _LOOKUP, json.dumps(PATCHED)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_lists_name_what_the_patches_replace():
    assert ("torchtitan.tools.utils", "device_type") in PATCHED
    assert ("torchtitan.config.manager", "ConfigManager._validate_config") in PATCHED
    assert ("torchao.float8.float8_ops", "FLOAT8_OPS_TABLE") in PATCHED
    assert all(module.split(".")[0] in ("torch", "torchtitan", "torchao") for module, _ in PATCHED)


@pytest.mark.parametrize("module, dotted", PATCHED, ids=[f"{m}:{d}" for m, d in PATCHED])
def test_patched_name_exists_in_torchtitan(found_in_torchtitan, module, dotted):
    assert found_in_torchtitan[f"{module}:{dotted}"], f"{module}.{dotted} is gone: update tst_titan.infra"


@pytest.mark.parametrize("family", FAMILIES)
def test_parallelize_still_checks_float8_the_way_we_work_around(family):
    source = inspect.getsource(importlib.import_module(f"torchtitan.models.{family}.infra.parallelize"))
    assert float8.TORCHTITAN_FLOAT8_TP_CHECK in source, (
        f"torchtitan.models.{family}.infra.parallelize no longer tests "
        f"{float8.TORCHTITAN_FLOAT8_TP_CHECK!r}: revisit tst_titan.infra.float8.float8_tp_plan_enabled")
