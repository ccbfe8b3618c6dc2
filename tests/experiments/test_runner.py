"""A finished run is reused only when the code that would train it again is the code that trained it."""

import json
import os
import shutil

import tst_titan
from tst_titan.experiments import runner
from tst_titan.experiments.runner import (BASE_CONFIG, RUN_RECORD, finished_run, run_settings, same_settings,
                                          training_source_sha256)

PACKAGE = os.path.dirname(tst_titan.__file__)


def _copy_package(tmp_path):
    copy = tmp_path / "tst_titan"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return str(copy)


def _edit(path):
    with open(path, "a") as f:
        f.write("\n# edited\n")


def test_the_source_hash_follows_the_training_code_only(tmp_path):
    package = _copy_package(tmp_path)
    config = str(tmp_path / "config.toml")
    shutil.copy(BASE_CONFIG, config)
    first = training_source_sha256(config, package)
    # code a training process runs: every edit changes the hash
    trained = []
    for part in ("method/loss.py", "components/dataloader.py", "datastore/store.py", "infra/cpu.py",
                 "train_spec.py", "job_config.py"):
        runner._source_sha256.cache_clear()
        _edit(os.path.join(package, part))
        trained.append(training_source_sha256(config, package))
    assert len({first, *trained}) == 1 + len(trained)
    # a new module of the method counts too
    runner._source_sha256.cache_clear()
    open(os.path.join(package, "method", "extra.py"), "w").write("X = 1\n")
    with_new = training_source_sha256(config, package)
    assert with_new != trained[-1]
    # measurement, analysis and commands do not: they never run inside a training process
    for part in runner.NOT_TRAINING_CODE:
        runner._source_sha256.cache_clear()
        _edit(os.path.join(package, part, "__init__.py"))
        assert training_source_sha256(config, package) == with_new, part
    # the config file's content does
    runner._source_sha256.cache_clear()
    _edit(config)
    assert training_source_sha256(config, package) != with_new


def test_the_hash_is_of_the_files_not_of_where_they_lie(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    package_a = _copy_package(a)
    package_b = _copy_package(b)
    assert training_source_sha256(BASE_CONFIG, package_a) == training_source_sha256(BASE_CONFIG, package_b)


def _record(tmp_path, **changes):
    dump = tmp_path / "run"
    dump.mkdir(exist_ok=True)
    (dump / "metrics.jsonl").write_text(json.dumps({"step": 10, "loss": 2.0, "val_loss": 2.5}) + "\n")
    record = {**run_settings(["--x", "1"], BASE_CONFIG, 10), **changes}
    (dump / RUN_RECORD).write_text(json.dumps(record))
    return str(dump / RUN_RECORD)


def test_a_run_trained_by_other_code_is_not_reused(tmp_path):
    path = _record(tmp_path)
    assert finished_run(path, ["--x", "1"], BASE_CONFIG, 10)["rows"][-1]["val_loss"] == 2.5
    # the same command line, another source: trained again, not read back
    assert finished_run(_record(tmp_path, source_sha256="0" * 64), ["--x", "1"], BASE_CONFIG, 10) is None
    # a record from before the hash existed
    record = run_settings(["--x", "1"], BASE_CONFIG, 10)
    del record["source_sha256"]
    assert not same_settings(record, ["--x", "1"], BASE_CONFIG, 10)
    # and the other settings still count
    path = _record(tmp_path)
    assert finished_run(path, ["--x", "2"], BASE_CONFIG, 10) is None
    assert finished_run(path, ["--x", "1"], BASE_CONFIG, 20) is None
