"""TST train specs: torchtitan's own decoder specs with TST's data, embedding, loss and metrics.

``tst_<family>`` (``tst_llama3``, ``tst_qwen3``, ``tst_deepseek_v3``, ``tst_llama4``,
``tst_gpt_oss``) is the stock ``<family>`` spec with five pieces swapped, the same for every
family:

* tokenizer + dataloader: the token store and the phase-carrying dataset
  (``tst_titan.components.dataloader``);
* ``parallelize_fn``: the family's own, then the bag-mean embedding on ``tok_embeddings``
  (``tst_titan.method.embedding``) and the CPU fix-ups (``tst_titan.infra.cpu``, no-op with an accelerator);
* loss: ``bag_cross_entropy`` (3-D labels: next bag; 2-D: torchtitan's cross-entropy);
* validator: next-token loss on the same held-out tokens at every evaluation;
* metrics: positions-based throughput/MFU and ``metrics.jsonl``;

and two wrapped: the learning-rate schedulers report the step they resume at to the data, and
the optimizers reset their state at the switch with ``tst.optimizer_at_switch = "reset_moments"``
or ``"reset_rewarm"`` (which also re-warms the learning rate).

The model class is untouched, so a TST checkpoint loads into the stock spec. With
``[tst] enable = false`` the same spec is the exact baseline: same data, same model, plain
next-token samples throughout.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.resources
from functools import partial

from torchtitan.protocols import train_spec as torchtitan_train_specs
from torchtitan.protocols.train_spec import TrainSpec, register_train_spec

from tst_titan.components.checks import check_job_config
from tst_titan.components.dataloader import build_tst_dataloader, build_tst_tokenizer
from tst_titan.components.loss import build_bag_loss
from tst_titan.components.lr_scheduler import resume_aware_lr_schedulers
from tst_titan.components.metrics import build_tst_metrics_processor
from tst_titan.components.optimizer import switch_aware_optimizers
from tst_titan.components.validate import build_tst_validator
from tst_titan.flavors import EXTRA_FLAVORS
from tst_titan.infra import config_hook, cpu, float8
from tst_titan.method.embedding import install_bag_embedding

#: Decoder families of torchtitan 0.2.2 that get a TST spec.
FAMILIES = ("llama3", "qwen3", "deepseek_v3", "llama4", "gpt_oss")
TST_SPEC_NAMES = frozenset(f"tst_{family}" for family in FAMILIES)


def _tst_parallelize(base_parallelize):
    def parallelize_tst(model, parallel_dims, job_config):
        # torchtitan 0.2.2 never applies its float8 TP plan (it looks for "float8" in
        # model.converters); tst_titan.infra.float8 presents the converters the way it checks them.
        with float8.float8_tp_plan_enabled(model, job_config):
            model = base_parallelize(model, parallel_dims, job_config)
        cpu.prepare_parallelized_model(model)
        return install_bag_embedding(model)

    parallelize_tst.__name__ = f"tst_{getattr(base_parallelize, '__name__', 'parallelize')}"
    return parallelize_tst


def make_tst_spec(base: TrainSpec, extra_flavors: dict | None = None) -> TrainSpec:
    """The TST version of a torchtitan decoder spec (see the module docstring)."""
    flavors = {**base.model_args, **(extra_flavors or {})}
    return dataclasses.replace(
        base,
        model_args=flavors,
        parallelize_fn=_tst_parallelize(base.parallelize_fn),
        # the builders that need the flavor's vocab size (the embedded store's folder) get the table
        build_tokenizer_fn=partial(build_tst_tokenizer, flavors=flavors),
        build_dataloader_fn=partial(build_tst_dataloader, flavors=flavors),
        build_loss_fn=build_bag_loss,
        build_validator_fn=partial(build_tst_validator, flavors=flavors),
        build_metrics_processor_fn=build_tst_metrics_processor,
        # the data follows the resumed step even without its own state
        build_lr_schedulers_fn=resume_aware_lr_schedulers(base.build_lr_schedulers_fn),
        # tst.optimizer_at_switch = "reset_*": clear the optimizer state before the first phase-2 step
        build_optimizers_fn=switch_aware_optimizers(base.build_optimizers_fn),
    )


_specs: dict[str, TrainSpec] = {}


def get_tst_train_spec(name: str) -> TrainSpec:
    """The ``tst_<family>`` spec (built on first use: it imports the family's model code)."""
    if name not in TST_SPEC_NAMES:
        raise ValueError(f"{name!r} is not a TST spec; known: {', '.join(sorted(TST_SPEC_NAMES))}")
    if name not in _specs:
        family = name[len("tst_"):]
        base = importlib.import_module(f"torchtitan.models.{family}").get_train_spec()
        extra = EXTRA_FLAVORS.get(family, dict)()
        _specs[name] = make_tst_spec(base, extra)
    return _specs[name]


def flavors_of(name: str) -> dict:
    """Model args by flavor of the TST spec ``name``."""
    return get_tst_train_spec(name).model_args


def config_path(name: str) -> str:
    """Path of a packaged training config (``tst_titan/train_configs/<name>``), installed or not."""
    path = importlib.resources.files("tst_titan") / "train_configs" / name
    if not path.is_file():
        available = sorted(p.name for p in (importlib.resources.files("tst_titan") / "train_configs").iterdir()
                           if p.name.endswith(".toml"))
        raise FileNotFoundError(f"no packaged config {name!r}; available: {', '.join(available)}")
    return str(path)


def _check_config(job_config) -> None:
    check_job_config(job_config, tst_spec_names=TST_SPEC_NAMES, flavors_of=flavors_of)


def register() -> None:
    """Activate the extension in this process (idempotent): the CPU accommodations (no-op with an
    accelerator), the whole-config checks at parse time, the float8 MoE converter, and every
    ``tst_<family>`` train spec. ``tst_titan.config`` calls it when torchtitan imports it."""
    cpu.apply()
    config_hook.install(_check_config)
    float8.register_converters()
    for name in sorted(TST_SPEC_NAMES):
        if name not in torchtitan_train_specs._extra_train_specs:
            register_train_spec(name, get_tst_train_spec(name))
