"""The [tst] section: parsing, command-line overrides, the packaged configs, and the model checks
(bad inputs, each naming its key: tests/integration/test_bad_inputs.py)."""

import os
import tomllib
from types import SimpleNamespace

import pytest

from tests.helpers.trainer import CONFIGS, parse
from tst_titan.components.checks import check_parallel_shapes
from tst_titan.job_config import ConfigError


def test_debug_config_parses_with_tst_section():
    cfg = parse()
    assert cfg.model.name == "tst_llama3"
    assert (cfg.tst.enable, cfg.tst.bag_size, cfg.tst.superposition_fraction, cfg.tst.loss_weighting) == (
        True, 4, 0.3, "uniform")


def test_command_line_overrides_every_key():
    cfg = parse("--tst.bag_size", "6", "--tst.superposition_fraction", "0.25",
                "--tst.loss_weighting", "power", "--tst.no-enable", "--tst.mode", "output_only",
                "--tst.optimizer_at_switch", "reset_moments")
    assert (cfg.tst.enable, cfg.tst.bag_size, cfg.tst.superposition_fraction, cfg.tst.loss_weighting) == (
        False, 6, 0.25, "power")
    assert (cfg.tst.mode, cfg.tst.optimizer_at_switch) == ("output_only", "reset_moments")
    assert (parse().tst.mode, parse().tst.optimizer_at_switch) == ("full", "keep")  # the defaults


TWINS = sorted(name[: -len("_tst.toml")] for name in os.listdir(CONFIGS) if name.endswith("_tst.toml"))


def _toml(name: str) -> dict:
    with open(os.path.join(CONFIGS, name), "rb") as f:
        return tomllib.load(f)


def test_every_tst_config_has_a_baseline_twin():
    assert {"debug", "debug_moe", "270m", "600m", "3b", "10b_a1b_moe"} <= set(TWINS)
    for stem in TWINS:
        assert os.path.isfile(os.path.join(CONFIGS, f"{stem}_baseline.toml")), stem


@pytest.mark.parametrize("stem", TWINS)
def test_tst_and_baseline_configs_differ_only_in_tst_keys_and_names(stem):
    tst, base = _toml(f"{stem}_tst.toml"), _toml(f"{stem}_baseline.toml")
    assert tst["tst"].pop("enable") is True and base["tst"].pop("enable") is False
    for cfg in (tst, base):
        cfg["job"].pop("dump_folder")
        cfg["job"].pop("description")
    assert tst == base


def test_stock_spec_without_tst_still_parses():
    cfg = parse("--model.name", "llama3", "--model.flavor", "debugmodel", "--tst.no-enable")
    assert cfg.model.name == "llama3"


def test_tp_must_divide_the_vocabulary_for_the_bag_loss():
    job = SimpleNamespace(
        parallelism=SimpleNamespace(tensor_parallel_degree=5, context_parallel_degree=1, expert_parallel_degree=1),
        model=SimpleNamespace(flavor="x"), training=SimpleNamespace(seq_len=2040))
    args = SimpleNamespace(n_heads=15, n_kv_heads=5, vocab_size=128256)
    with pytest.raises(ConfigError, match=r"does not divide the vocabulary \(128256\)"):
        check_parallel_shapes(job, args)
    args.vocab_size = 128320  # the 600M flavor's padded vocabulary
    check_parallel_shapes(job, args)
