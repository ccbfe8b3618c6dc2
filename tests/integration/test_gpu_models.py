"""The GPU tests' hand-built model (tests/helpers/models.py), checked on CPU: it must be the model
training builds, or every GPU figure measures something else."""

import torch

from tests.helpers.models import small_llama3


def test_the_hand_built_model_keeps_its_complex_rope_table():
    # a `model.to(float32)` once turned the complex64 RoPE table into its real part: every GPU
    # test then measured a model with broken position encoding, consistently enough to pass
    model = small_llama3(device="cpu")
    assert model.freqs_cis.dtype == torch.complex64
    assert torch.equal(model.freqs_cis, model._precompute_freqs_cis())
    assert {p.dtype for p in model.parameters()} == {torch.float32}
