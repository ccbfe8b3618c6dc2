"""The one state a TST trainer's builders share (tst_titan.components.run_context): the dataloader
starts the run, and the optimizers, learning-rate schedulers and metrics processor built after it
must belong to it; and the extension changes torchtitan only when activated.

The pieces are built straight from the ``tst_llama3`` spec, as torchtitan's Trainer calls them, with
a parsed tiny config and a tiny model (no Trainer)."""

import json
import subprocess
import sys

import pytest
import torch
from torchtitan.components.optimizer import OptimizersContainer
from torchtitan.config import ConfigManager
from torchtitan.distributed import ParallelDims

from tests.helpers.data import ArrayStore, job
from tests.helpers.trainer import job_args
from tst_titan.components import run_context
from tst_titan.components.dataloader import TokenWindowDataset, phase_schedule
from tst_titan.components.run_context import TrainingRun
from tst_titan.method.embedding import install_bag_embedding
from tst_titan.train_spec import get_tst_train_spec

pytestmark = pytest.mark.usefixtures("embedded_store")

#: 4 steps, the switch after step 2 (r = 0.5), one microbatch of 2 samples per step.
TINY = ["--training.steps", "4", "--tst.superposition_fraction", "0.5", "--training.local_batch_size", "2"]
#: (what the error names, how the piece is built from (spec, config, model, optimizers)).
PIECES = [
    ("optimizers", lambda spec, cfg, model, opts: spec.build_optimizers_fn([model], cfg.optimizer, _dims())),
    ("learning-rate schedulers",
     lambda spec, cfg, model, opts: spec.build_lr_schedulers_fn(opts, cfg.lr_scheduler, cfg.training.steps)),
    ("metrics processor",
     lambda spec, cfg, model, opts: spec.build_metrics_processor_fn(cfg, _dims(), spec.model_args["tiny"])),
]


def _dims():
    return ParallelDims(dp_shard=1, dp_replicate=1, cp=1, tp=1, pp=1, ep=1, etp=1, world_size=1)


def _config(tmp_path, *overrides):
    return ConfigManager().parse_args(job_args(str(tmp_path), *TINY, *overrides))


def _model(spec):
    torch.manual_seed(0)
    model = spec.model_cls(spec.model_args["tiny"])
    with torch.no_grad():
        model.init_weights()
    return install_bag_embedding(model)  # what the spec's parallelize_fn adds


def _dataloader(spec, cfg):
    tokenizer = spec.build_tokenizer_fn(cfg)
    return spec.build_dataloader_fn(dp_world_size=1, dp_rank=0, tokenizer=tokenizer, job_config=cfg)


@pytest.fixture
def spec():
    return get_tst_train_spec("tst_llama3")


def _plain_optimizers(model):
    return OptimizersContainer([model], torch.optim.AdamW, {"lr": 1e-3})


@pytest.mark.parametrize("what, build", PIECES, ids=[p[0] for p in PIECES])
def test_a_piece_built_before_the_dataloader_is_refused(spec, tmp_path, monkeypatch, what, build):
    monkeypatch.setattr(run_context, "_current", None)  # no TST dataloader built in this process
    cfg, model = _config(tmp_path), _model(spec)
    with pytest.raises(RuntimeError, match=rf"\[tst\] {what} of a TST train spec was built before the TST "
                                           "training dataloader of the same job config"):
        build(spec, cfg, model, _plain_optimizers(model))


@pytest.mark.parametrize("what, build", PIECES, ids=[p[0] for p in PIECES])
def test_a_piece_of_another_job_config_is_refused(spec, tmp_path, what, build):
    # the dataloader of an earlier trainer in this process: its run is stale for a new config
    _dataloader(spec, _config(tmp_path / "earlier"))
    cfg, model = _config(tmp_path / "now"), _model(spec)
    with pytest.raises(RuntimeError, match=rf"\[tst\] {what} of a TST train spec .* with the same job config object"):
        build(spec, cfg, model, _plain_optimizers(model))


def test_pieces_built_after_their_dataloader_share_its_run(spec, tmp_path):
    cfg, model = _config(tmp_path), _model(spec)
    loader = _dataloader(spec, cfg)
    run = run_context.training_run_of(cfg, "test")
    assert run.job_config is cfg and run.datasets == [loader.dataset]
    assert run_context.training_run_of(cfg.optimizer, "test") is run  # a section of the config
    assert run.settings["switch_step"] == 2 and run.settings["samples_per_step"] == 2
    opts = PIECES[0][1](spec, cfg, model, None)
    assert not opts._optimizer_step_pre_hooks  # tst.optimizer_at_switch = "keep": no reset hook
    schedulers = PIECES[1][1](spec, cfg, model, opts)
    processor = PIECES[2][1](spec, cfg, model, opts)
    assert processor.run is run
    # the schedulers' checkpointed state tells the run the step it resumes at
    schedulers.load_state_dict({**schedulers.state_dict(), "last_epoch": 3})
    assert run.resume_step == 3
    processor.close()


def test_reset_at_the_switch_in_a_correctly_built_run(spec, tmp_path):
    cfg, model = _config(tmp_path, "--tst.optimizer_at_switch", "reset_moments"), _model(spec)
    loader = _dataloader(spec, cfg)
    opts = PIECES[0][1](spec, cfg, model, None)
    schedulers = PIECES[1][1](spec, cfg, model, opts)
    assert opts._optimizer_step_pre_hooks
    loss_fn = spec.build_loss_fn(cfg)
    inner = opts.optimizers[0]
    first = next(p for group in inner.param_groups for p in group["params"])
    adam_steps, shapes = [], []
    batches = iter(loader)
    for _ in range(cfg.training.steps):  # what the trainer does per step, with one microbatch
        inputs, labels = next(batches)
        shapes.append(tuple(labels.shape))
        loss_fn(model(inputs["input"]), labels).backward()
        opts.step()
        schedulers.step()
        opts.zero_grad()
        adam_steps.append(int(inner.state[first]["step"].item()))
    assert shapes == [(2, 32, 4)] * 2 + [(2, 32)] * 2
    assert adam_steps == [1, 2, 1, 2]  # a fresh AdamW from step 3, the first next-token step
    assert run_context.training_run_of(cfg, "test").optimizer_resets == [3]


def test_position_check_names_the_step_and_phases():
    cfg = job(steps=10, r=0.3, s=2)
    run = TrainingRun(cfg, {})
    run.datasets.append(TokenWindowDataset(ArrayStore(list(range(3000))), phase_schedule(cfg, 1), 0))
    with pytest.raises(RuntimeError, match=r"after step 5 .* at sample 0 \(phase 1\).*sample 10 \(phase 2"):
        run.check_position(5)
    assert run.epoch == 0


# -- activation --------------------------------------------------------------------------------
_STATE = """
import json, torch, torchtitan.tools.utils as tools_utils
from torchtitan.config.manager import ConfigManager
from torchtitan.protocols import train_spec
import {module}
print(json.dumps({{
    "device_type": tools_utils.device_type,
    "hooked": hasattr(ConfigManager._validate_config, "_tst_titan"),
    "registered": "tst_llama3" in train_spec._extra_train_specs,
    "cuda": torch.cuda.is_available(),
}}))
"""


def _state_after_import(module: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _STATE.format(module=module)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_the_package_changes_nothing_in_torchtitan():
    state = _state_after_import("tst_titan")
    assert state == _state_after_import("torchtitan.train")  # torchtitan alone
    assert not state["hooked"] and not state["registered"]
    assert state["device_type"] == "cuda"  # torchtitan 0.2.2's value, with or without CUDA


def test_importing_tst_titan_config_activates_the_extension():
    state = _state_after_import("tst_titan.config")
    assert state["hooked"] and state["registered"]
    assert state["device_type"] == ("cuda" if state["cuda"] else "cpu")
