"""torchtitan loss builder of the TST specs: next-token CE for 2-D labels, the bag loss for 3-D."""

from __future__ import annotations

import torch
from torchtitan.components.loss import cross_entropy_loss

from tst_titan.components.checks import tst_section
from tst_titan.method.loss import bag_cross_entropy, bag_weights


def build_bag_loss(job_config, **kwargs):
    """``TrainSpec.build_loss_fn``: ``tst.loss_weighting`` for 3-D labels, torchtitan's
    cross-entropy (compiled when ``compile.components`` has "loss") for 2-D ones."""
    del kwargs
    tst = tst_section(job_config)
    weighting = tst.loss_weighting if tst.enable else "uniform"
    bag_weights(1, weighting)  # fail at build time on an unknown weighting

    next_token_loss = cross_entropy_loss
    compile_cfg = job_config.compile
    if compile_cfg.enable and "loss" in compile_cfg.components:
        # Like torchtitan's build_cross_entropy_loss; only the plain path is compiled, the custom
        # Function (with its python chunk loop and collectives) stays eager.
        next_token_loss = torch.compile(cross_entropy_loss, backend=compile_cfg.backend)

    def loss_fn(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return bag_cross_entropy(pred, labels, weighting, next_token_loss=next_token_loss)

    return loss_fn
