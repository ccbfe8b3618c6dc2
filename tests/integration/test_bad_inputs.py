"""Every bad input we know of, in one place: each stops before step 1 with a message naming the key.

Most are caught when torchtitan parses the config (``tst_titan.components.checks``, run at parse
time by ``tst_titan.infra.config_hook``); the rest when the trainer starts or loads a checkpoint,
before any step -- those are read from the shared runs (the ``one`` and ``twins`` families of
tests/helpers/plans.py). Add new bad inputs here.
"""

import glob
import os
import re
import sysconfig

import pytest

from tests.helpers.trainer import CONFIGS, parse
from tst_titan.datastore.build import build_store
from tst_titan.datastore.sources import folder_documents
from tst_titan.job_config import ConfigError


@pytest.fixture(scope="module")
def big_vocab_store(tmp_path_factory):
    """A token store whose tokenizer has more tokens (3000) than the debug flavors embed (2048)."""
    base = tmp_path_factory.mktemp("big_vocab")
    folder = base / "text"
    folder.mkdir()
    stdlib = sysconfig.get_paths()["stdlib"]
    for path in sorted(glob.glob(f"{stdlib}/*.py"))[:150]:
        (folder / os.path.basename(path)).write_text(open(path, encoding="utf-8", errors="replace").read())
    manifest = build_store(str(base / "store"), folder_documents(str(folder)), vocab_size=3000)
    assert manifest["vocab_size"] > 2048
    return str(base / "store")


def _toml_with(tmp_path, old, new):
    with open(os.path.join(CONFIGS, "debug_tst.toml")) as f:
        text = f.read()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new))
    return str(path)


#: (id, how it is given, the key the message must name). "parse": command-line overrides of
#: debug_tst.toml; "toml": a replaced TOML line; "store"/"folder": a data path made by a fixture;
#: "run": the error a shared run stopped with.
CASES = [
    ("bag-size-zero", ("parse", ["--tst.bag_size", "0"]), "tst.bag_size"),
    ("bag-size-negative", ("parse", ["--tst.bag_size", "-3"]), "tst.bag_size"),
    ("bag-size-float", ("toml", ("bag_size = 4", "bag_size = 2.5")), "tst.bag_size"),
    ("bag-size-string", ("toml", ("bag_size = 4", 'bag_size = "4"')), "tst.bag_size"),
    ("fraction-one", ("parse", ["--tst.superposition_fraction", "1.0"]), "tst.superposition_fraction"),
    ("fraction-negative", ("parse", ["--tst.superposition_fraction", "-0.1"]), "tst.superposition_fraction"),
    ("unknown-weighting", ("parse", ["--tst.loss_weighting", "cubic"]), "tst.loss_weighting"),
    ("unknown-mode", ("parse", ["--tst.mode", "both"]), "tst.mode"),
    ("ablation-mode-with-bag-size-one", ("parse", ["--tst.mode", "input_only", "--tst.bag_size", "1"]), "tst.mode"),
    ("unknown-optimizer-at-switch", ("parse", ["--tst.optimizer_at_switch", "zero"]), "tst.optimizer_at_switch"),
    ("rewarm-without-steps", ("parse", ["--tst.optimizer_at_switch", "reset_rewarm"]), "tst.rewarm_steps"),
    ("rewarm-steps-without-rewarm", ("parse", ["--tst.rewarm_steps", "3"]), "tst.rewarm_steps"),
    ("rewarm-steps-negative", ("parse", ["--tst.optimizer_at_switch", "reset_rewarm", "--tst.rewarm_steps", "-1"]),
     "tst.rewarm_steps"),
    ("rewarm-longer-than-phase-2", ("parse", ["--tst.optimizer_at_switch", "reset_rewarm", "--tst.rewarm_steps",
                                              "100000"]), "tst.rewarm_steps"),
    ("optimizer-reset-in-backward", ("parse", ["--tst.optimizer_at_switch", "reset_moments",
                                               "--optimizer.early_step_in_backward"]), "tst.optimizer_at_switch"),
    ("tst-with-stock-spec", ("parse", ["--model.name", "llama3", "--model.flavor", "debugmodel"]), "model.name"),
    ("pipeline-parallel", ("parse", ["--parallelism.pipeline_parallel_degree", "2"]),
     "parallelism.pipeline_parallel_degree"),
    ("context-parallel", ("parse", ["--parallelism.context_parallel_degree", "2"]),
     "parallelism.context_parallel_degree"),
    ("flex-attention-flavor", ("parse", ["--model.flavor", "debugmodel_flex_attn"]), "model.flavor"),
    ("unknown-flavor", ("parse", ["--model.flavor", "no_such_flavor"]), "model.flavor"),
    ("dataloader-workers", ("parse", ["--training.dataloader.num_workers", "2"]), "training.dataloader.num_workers"),
    ("unknown-dataset", ("parse", ["--training.dataset", "c4"]), "training.dataset"),
    ("missing-store-path", ("parse", ["--training.dataset", "store", "--training.dataset_path",
                                      "/nonexistent/store"]), "training.dataset_path"),
    ("empty-folder", ("folder", "empty"), "training.dataset_path"),
    ("folder-not-a-store", ("folder", "not-a-store"), "training.dataset_path"),
    ("tokenizer-larger-than-vocab", ("store", "big_vocab"), "model.flavor"),
    ("compile-other-val-seq-len", ("parse", ["--compile.enable", "--validation.seq_len", "64"]),
     "validation.seq_len"),
    ("resume-other-bag-size", ("run", ("one", "other-bag-size")), "tst.bag_size"),
    ("resume-other-fraction", ("run", ("one", "other-fraction")), "tst.superposition_fraction"),
    ("validation-steps-beyond-split", ("run", ("twins", "validation-steps")), "validation.steps"),
    ("store-deleted-after-parsing", ("run", ("twins", "missing-store")), "training.dataset_path"),
    ("corpus-too-small", ("run", ("twins", "too-small")), "training.seq_len"),
]


@pytest.mark.parametrize("how, key", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_stops_before_step_one_naming_the_key(how, key, tmp_path, request):
    kind, payload = how
    if kind == "run":
        family, plan = payload
        runs = request.getfixturevalue(family)  # the session fixture of tests/conftest.py
        message = runs.error(plan).split("\n\n")[0]
        assert not runs.rows(plan), "it must stop before step 1"
        assert key in message, message
        return
    config = "debug_tst.toml"
    if kind == "parse":
        args = payload
    elif kind == "toml":
        config, args = _toml_with(tmp_path, *payload), []
    elif kind == "folder":
        if payload == "not-a-store":
            (tmp_path / "a.txt").write_text("hello")
        args = ["--training.dataset", "folder" if payload == "empty" else "store",
                "--training.dataset_path", str(tmp_path)]
    else:
        store = request.getfixturevalue("big_vocab_store")
        args = ["--training.dataset", "store", "--training.dataset_path", store]
    with pytest.raises(ConfigError, match=re.escape(key)):
        parse(*args, config=config)
