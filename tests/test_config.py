"""The [tst] section: parsing, command-line overrides, and bad inputs stopped at parse time."""

import os

import pytest
from torchtitan.config import ConfigManager

from tst_titan.config import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEBUG_TST = os.path.join(ROOT, "train_configs", "debug_tst.toml")


def parse(*overrides, config=DEBUG_TST):
    return ConfigManager().parse_args(["--job.config_file", config, *overrides])


def test_debug_config_parses_with_tst_section():
    cfg = parse()
    assert cfg.model.name == "tst_llama3"
    assert (cfg.tst.enable, cfg.tst.bag_size, cfg.tst.superposition_fraction, cfg.tst.loss_weighting) == (
        True, 4, 0.3, "uniform")


def test_command_line_overrides_every_key():
    cfg = parse("--tst.bag_size", "6", "--tst.superposition_fraction", "0.25",
                "--tst.loss_weighting", "power", "--tst.no-enable")
    assert (cfg.tst.enable, cfg.tst.bag_size, cfg.tst.superposition_fraction, cfg.tst.loss_weighting) == (
        False, 6, 0.25, "power")


TWINS = sorted(
    name[: -len("_tst.toml")]
    for name in os.listdir(os.path.join(ROOT, "train_configs"))
    if name.endswith("_tst.toml")
)


def test_every_tst_config_has_a_baseline_twin():
    assert {"debug", "debug_moe", "270m", "600m", "3b", "10b_a1b_moe"} <= set(TWINS)
    for stem in TWINS:
        assert os.path.isfile(os.path.join(ROOT, "train_configs", f"{stem}_baseline.toml")), stem


@pytest.mark.parametrize("stem", TWINS)
def test_tst_and_baseline_configs_differ_only_in_tst_keys_and_names(stem):
    import tomllib

    with open(os.path.join(ROOT, "train_configs", f"{stem}_tst.toml"), "rb") as f:
        tst = tomllib.load(f)
    with open(os.path.join(ROOT, "train_configs", f"{stem}_baseline.toml"), "rb") as f:
        base = tomllib.load(f)
    assert tst["tst"].pop("enable") is True and base["tst"].pop("enable") is False
    for cfg in (tst, base):
        cfg["job"].pop("dump_folder")
        cfg["job"].pop("description")
    assert tst == base


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["--tst.bag_size", "0"], "tst.bag_size"),
        (["--tst.bag_size", "-3"], "tst.bag_size"),
        (["--tst.superposition_fraction", "1.0"], "tst.superposition_fraction"),
        (["--tst.superposition_fraction", "-0.1"], "tst.superposition_fraction"),
        (["--tst.loss_weighting", "cubic"], "tst.loss_weighting"),
        (["--model.name", "llama3", "--model.flavor", "debugmodel"], "model.name"),
        (["--parallelism.pipeline_parallel_degree", "2"], "pipeline_parallel_degree"),
        (["--parallelism.context_parallel_degree", "2"], "context_parallel_degree"),
        (["--model.flavor", "debugmodel_flex_attn"], "model.flavor"),
        (["--model.flavor", "no_such_flavor"], "model.flavor"),
        (["--training.dataloader.num_workers", "2"], "training.dataloader.num_workers"),
        (["--training.dataset", "c4"], "training.dataset"),
        (["--compile.enable", "--validation.seq_len", "64"], "validation.seq_len"),
        (["--training.dataset", "store", "--training.dataset_path", "/nonexistent/store"], "training.dataset_path"),
    ],
)
def test_bad_input_is_refused_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse(*overrides)


def test_bad_toml_values_are_refused(tmp_path):
    with open(DEBUG_TST) as f:
        text = f.read()
    for bad, key in [("bag_size = 4", "bag_size = 2.5"), ("bag_size = 4", 'bag_size = "4"')]:
        path = tmp_path / "bad.toml"
        path.write_text(text.replace(bad, key))
        with pytest.raises(ConfigError, match=r"tst\.bag_size"):
            parse(config=str(path))


def test_empty_dataset_folder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"training\.dataset_path"):
        parse("--training.dataset", "folder", "--training.dataset_path", str(tmp_path))


def test_stock_spec_without_tst_still_parses():
    cfg = parse("--model.name", "llama3", "--model.flavor", "debugmodel", "--tst.no-enable")
    assert cfg.model.name == "llama3"


def test_tokenizer_larger_than_the_model_vocab_is_refused(tmp_path):
    import glob
    import sysconfig

    from tst_titan.corpus import folder_documents
    from tst_titan.store import build_store

    stdlib = sysconfig.get_paths()["stdlib"]
    folder = tmp_path / "text"
    folder.mkdir()
    for path in sorted(glob.glob(f"{stdlib}/*.py"))[:150]:
        (folder / path.split("/")[-1]).write_text(open(path, encoding="utf-8", errors="replace").read())
    store = tmp_path / "store"
    manifest = build_store(str(store), folder_documents(str(folder)), vocab_size=3000)
    assert manifest["vocab_size"] > 2048
    with pytest.raises(ConfigError, match=r"model\.flavor.*2048|2048.*model\.flavor"):
        parse("--training.dataset", "store", "--training.dataset_path", str(store))


def test_a_folder_that_is_not_a_store_is_refused(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(ConfigError, match=r"training\.dataset_path.*not a token store"):
        parse("--training.dataset", "store", "--training.dataset_path", str(tmp_path))
