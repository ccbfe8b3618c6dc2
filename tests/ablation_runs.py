"""Short real trainings of the ablation settings (``tst.mode``, ``tst.optimizer_at_switch``), all
in one process (starting one costs ~10 s on 2 cores, a tiny training ~2 s), once per session.

Each run leaves in its dump folder ``metrics.jsonl``, ``spy.json`` -- per training microbatch the
shapes of the model's input and of the labels, and after every optimizer step AdamW's step count
of the first parameter (1 right after a reset) -- and the ``[tst]`` log lines (``tst_log.txt``).
"""

from __future__ import annotations

import json
import logging
import os

from tests.distributed import run_on_processes
from tests.reliability_runs import RESUME, SAVE_EVERY_STEP, Results, resume_args
from tests.training import job_args


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        if "[tst]" in record.getMessage():
            self.lines.append(record.getMessage())


def _run(name: str, args: list[str], base: str) -> None:
    import torch
    from torchtitan.config import ConfigManager
    from torchtitan.train import Trainer

    dump = os.path.join(base, name)
    os.makedirs(dump, exist_ok=True)
    handler = _Lines()
    root = logging.getLogger()  # torchtitan's logger; INFO as torchtitan.train's init_logger sets it
    level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    spy = {"inputs": [], "labels": [], "adam_steps": []}
    trainer = Trainer(ConfigManager().parse_args(job_args(dump, *args)))
    try:
        model = trainer.model_parts[0]
        loss_fn = trainer.loss_fn

        def record_input(module, inputs):
            if torch.is_grad_enabled():  # training microbatches (validation runs under no_grad)
                spy["inputs"].append(list(inputs[0].shape))

        model.tok_embeddings.register_forward_pre_hook(record_input)

        def record_labels(pred, labels):
            if pred.requires_grad:  # training microbatches, not validation
                spy["labels"].append(list(labels.shape))
            return loss_fn(pred, labels)

        trainer.loss_fn = record_labels
        inner = trainer.optimizers.optimizers[0]
        first = next(p for group in inner.param_groups for p in group["params"])
        trainer.optimizers.register_step_post_hook(
            lambda *a: spy["adam_steps"].append(int(inner.state[first]["step"].item())))
        trainer.train()
    finally:
        trainer.close()
        root.removeHandler(handler)
        root.setLevel(level)
    with open(os.path.join(dump, "spy.json"), "w") as f:
        json.dump(spy, f)
    with open(os.path.join(dump, "tst_log.txt"), "w") as f:
        f.write("\n".join(handler.lines))


def _body(rank, world_size, plans, base):
    for name, args in plans:
        _run(name, args, base)


#: 8 steps, switch after step 4, 2 microbatches of 2 samples per step (tests/reliability_runs.py).
RESET = [*RESUME, "--tst.optimizer_at_switch", "reset"]


def plans(base: str) -> list[tuple[str, list[str]]]:
    return [
        ("input_only", [*RESUME, "--tst.mode", "input_only"]),
        ("output_only", [*RESUME, "--tst.mode", "output_only"]),
        ("keep", RESUME),
        ("reset", RESET + SAVE_EVERY_STEP),
        # resumed from the last bag step (the reset is still to come) and after the switch
        ("reset-resume-4", resume_args(base, "reset", 4, RESET)),
        ("reset-resume-6", resume_args(base, "reset", 6, RESET)),
    ]


class AblationResults(Results):
    def spy(self, name: str) -> dict:
        with open(os.path.join(self.base, name, "spy.json")) as f:
            return json.load(f)


_done: dict[str, AblationResults] = {}


def ablation_runs(tmp_path_factory) -> AblationResults:
    if "runs" not in _done:
        base = str(tmp_path_factory.mktemp("ablation_runs"))
        run_on_processes(_body, 1, plans(base), base)
        _done["runs"] = AblationResults(base)
    return _done["runs"]
