"""The [tst] section: parsing and command-line overrides (bad inputs: tests/test_bad_inputs.py)."""

import os

import pytest
from torchtitan.config import ConfigManager


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
                "--tst.loss_weighting", "power", "--tst.no-enable", "--tst.mode", "output_only",
                "--tst.optimizer_at_switch", "reset")
    assert (cfg.tst.enable, cfg.tst.bag_size, cfg.tst.superposition_fraction, cfg.tst.loss_weighting) == (
        False, 6, 0.25, "power")
    assert (cfg.tst.mode, cfg.tst.optimizer_at_switch) == ("output_only", "reset")
    assert (parse().tst.mode, parse().tst.optimizer_at_switch) == ("full", "keep")  # the defaults


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


# Bad inputs (refused at parse time or before step 1) are gathered in tests/test_bad_inputs.py.


def test_stock_spec_without_tst_still_parses():
    cfg = parse("--model.name", "llama3", "--model.flavor", "debugmodel", "--tst.no-enable")
    assert cfg.model.name == "llama3"
