"""Next-token validation on the same held-out tokens at every evaluation.

torchtitan 0.2.2's ``Validator`` keeps one validation dataloader for the whole run and never rewinds
it, so each evaluation reads the next slice of text and val losses are not comparable over time.
Ours builds the loader from the start of the held-out split before every evaluation. Validation
samples are always plain ``[L]`` next-token samples, in both phases (the paper never shows NTP
loss during phase 1; this makes it visible and comparable across the switch).
"""

from __future__ import annotations

import torch
from torchtitan.components.dataloader import ParallelAwareDataloader
from torchtitan.components.validate import Validator

from tst_titan.components.dataloader import build_validation_dataset


class TSTValidator(Validator):
    def __init__(
        self,
        job_config,
        dp_world_size,
        dp_rank,
        tokenizer,
        parallel_dims,
        loss_fn,
        validation_context,
        maybe_enable_amp,
        metrics_processor,
        pp_schedule=None,
        pp_has_first_stage=None,
        pp_has_last_stage=None,
        *,
        vocab_size: int,
    ):
        # Not calling Validator.__init__: it builds torchtitan's HF text dataloader.
        self.job_config = job_config
        self.tokenizer = tokenizer
        self.parallel_dims = parallel_dims
        self.loss_fn = loss_fn
        self.validation_context = validation_context
        self.maybe_enable_amp = maybe_enable_amp
        self.metrics_processor = metrics_processor
        self.pp_schedule = pp_schedule
        self.pp_has_first_stage = pp_has_first_stage
        self.pp_has_last_stage = pp_has_last_stage
        self.dp_world_size = dp_world_size
        self.dp_rank = dp_rank
        self.vocab_size = vocab_size  # names the embedded store's default folder
        # Build once now so that a too-small split fails before step 1.
        self.validation_dataloader = self._fresh_dataloader()

    def _fresh_dataloader(self) -> ParallelAwareDataloader:
        dataset = build_validation_dataset(self.job_config, self.dp_world_size, self.dp_rank, self.vocab_size)
        return ParallelAwareDataloader(
            dataset,
            dp_rank=self.dp_rank,
            dp_world_size=self.dp_world_size,
            batch_size=self.job_config.validation.local_batch_size,
        )

    @torch.no_grad()
    def validate(self, model_parts, step: int) -> None:
        self.validation_dataloader = self._fresh_dataloader()
        super().validate(model_parts, step)


def build_tst_validator(*, flavors: dict, **kwargs) -> TSTValidator:
    """``TrainSpec.build_validator_fn``; ``flavors`` (the spec's model args by flavor) is bound
    by ``tst_titan.train_spec``."""
    vocab_size = flavors[kwargs["job_config"].model.flavor].vocab_size
    return TSTValidator(**kwargs, vocab_size=vocab_size)
