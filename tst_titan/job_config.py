"""The ``[tst]`` config section: its dataclasses, the values each key allows, and ``ConfigError``.

A leaf: imports nothing of tst_titan. torchtitan merges :class:`JobConfig` into its own job config
when a TOML names ``[job] custom_config_module = "tst_titan.config"``; every key can be overridden
on the command line (``--tst.bag_size 4``). The checks that use these choices are in
``tst_titan.components.checks``.
"""

# No `from __future__ import annotations`: torchtitan merges these dataclasses into its own
# JobConfig and resolves the field types from the merged class's module.
from dataclasses import dataclass, field

#: ``tst.mode``: which side of a phase-1 sample is superposed (the paper's section 5.2).
MODES = ("full", "input_only", "output_only")

#: ``tst.loss_weighting``: weight of target i of the next bag (``tst_titan.method.loss``).
LOSS_WEIGHTINGS = ("uniform", "power", "mi", "mi_decay", "exponential")

#: ``tst.optimizer_at_switch``: what happens to the optimizer state at the first phase-2 step.
OPTIMIZER_AT_SWITCH = ("keep", "reset_moments", "reset_rewarm")

#: ``tst.window_order``: in which order training samples are cut from the token stream.
WINDOW_ORDERS = ("stream", "shuffled")

#: ``training.dataset`` values the TST specs understand.
DATASETS = {
    "embedded": "the Python standard library's sources, tokenized on first use into "
    "training.dataset_path (default ./data/embedded_v<vocab>)",
    "folder": "a local folder of .txt/.md/.rst/.py/.jsonl files at training.dataset_path, "
    "tokenized on first use into <dataset_path>/.tst_store",
    "store": "a token store prepared by `python -m tst_titan.tools.prepare` at training.dataset_path",
}


class ConfigError(ValueError):
    """A bad configuration value; the message names the key and what is allowed."""


@dataclass
class TST:
    enable: bool = False
    """Train the first ``superposition_fraction`` of the steps on bags of ``bag_size`` tokens."""

    bag_size: int = 4
    """s: tokens per bag (>= 1). A bag's input is the mean of its s embeddings; each position is
    trained to predict every token of the next bag. s = 1 is exactly ordinary training."""

    superposition_fraction: float = 0.3
    """r in [0, 1): the first round(r * training.steps) optimizer steps use bags."""

    loss_weighting: str = "uniform"
    """Weight of target i of the next bag: "uniform", "power" (1/i), "mi" (the paper's fitted
    mutual-information curve 3.63 + 1.35 i^-1.25, plateau included: nearly uniform), "mi_decay"
    (its decaying part alone, 1.35 i^-1.25) or "exponential" (e^-i); normalised to mean 1."""

    mode: str = "full"
    """Which side of phase 1 is superposed (the paper's section 5.2 ablation): "full" (bag input,
    next-bag target), "input_only" (bag input, target the next single token after the bag) or
    "output_only" (ordinary token input, each position predicts its next s tokens with the bag loss).
    Phase 2 is ordinary next-token training in every mode."""

    optimizer_at_switch: str = "keep"
    """At the first phase-2 step, "keep" the optimizer state (AdamW moments; what a torchtitan
    resume does), "reset_moments" (clear it: a fresh AdamW's first step, at the scheduled learning
    rate) or "reset_rewarm" (clear it and warm the learning rate up again from 0 over
    ``rewarm_steps`` steps: what patch-level training did)."""

    rewarm_steps: int = 0
    """With ``optimizer_at_switch = "reset_rewarm"``: phase-2 step j (1 = the first) runs at
    min(1, j / rewarm_steps) x the scheduled learning rate. Must be 0 with the other settings."""

    data_seed: int = 0
    """Order of the training documents (an integer >= 0): 0 reads the token store's documents in
    their stored order; any other value reads them in an order shuffled by that seed (documents
    kept whole, the same on every machine). TST and baseline runs with the same value read the same
    token stream. Validation data is never reordered. A seed study varies it together with
    ``debug.seed`` (the initialisation). With ``window_order = "shuffled"`` it also seeds the
    window order."""

    window_order: str = "stream"
    """"stream" cuts consecutive samples from consecutive windows of the (``data_seed``-ordered)
    token stream, as torchtitan's own datasets read text; "shuffled" draws every sample's window in
    a random order seeded by ``data_seed``, without replacement in each epoch, so each step sees text
    from the whole corpus (``tst_titan.datastore.window_order``: phase 2 does not read again, in
    the epoch where phase 1 ended, the windows phase 1 read). The benchmark trains shuffled."""


@dataclass
class JobConfig:
    tst: TST = field(default_factory=TST)
