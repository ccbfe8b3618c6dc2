"""Bag embedding: the fp32 mean of s token embeddings, in the stock embedding module.

(Under tensor parallelism: test_embedding_tensor_parallel.py; under torch.compile and activation
checkpointing: tests/integration/test_train.py.)"""

import torch
from torch import nn

from tst_titan.method.embedding import bag_mean, install_bag_embedding


class Tiny(nn.Module):
    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.tok_embeddings = nn.Embedding(50, 8, dtype=dtype)

    def forward(self, tokens):
        return self.tok_embeddings(tokens)


def _loop_mean(e: torch.Tensor) -> torch.Tensor:
    """The mean of every bag, one Python float64 sum at a time (independent of bag_mean's code)."""
    *lead, s, d = e.shape
    flat = e.reshape(-1, s, d).double().tolist()
    out = [[sum(bag[i][j] for i in range(s)) / s for j in range(d)] for bag in flat]
    return torch.tensor(out, dtype=torch.float64).reshape(*lead, d)


def test_bag_mean_matches_a_float64_loop_in_float32():
    torch.manual_seed(0)
    e = torch.randn(2, 3, 6, 8)
    got = bag_mean(e)
    assert got.dtype == torch.float32 and got.shape == (2, 3, 8)
    torch.testing.assert_close(got.double(), _loop_mean(e), rtol=1e-6, atol=1e-7)


def test_bag_mean_of_bf16_is_within_one_bf16_rounding_of_the_exact_mean():
    # the sum runs in float32 (16 bf16 embeddings summed in bf16 lose bits), then one cast back
    torch.manual_seed(0)
    e = torch.randn(2, 3, 16, 8).bfloat16()
    got = bag_mean(e)
    assert got.dtype == torch.bfloat16 and got.shape == (2, 3, 8)
    torch.testing.assert_close(got.double(), _loop_mean(e), rtol=2**-8, atol=0)


def test_embedding_averages_bags_and_leaves_plain_tokens_alone():
    torch.manual_seed(0)
    model = install_bag_embedding(Tiny())
    install_bag_embedding(model)  # idempotent
    tokens = torch.randint(0, 50, (2, 5, 4))
    table = model.tok_embeddings.weight
    naive = torch.stack([torch.stack([table[b].mean(0) for b in row]) for row in tokens])
    torch.testing.assert_close(model(tokens), naive)
    plain = torch.randint(0, 50, (2, 5))
    assert torch.equal(model(plain), table[plain])
    # bag of size 1 is the plain embedding, exactly
    assert torch.equal(model(plain[..., None]), table[plain])


def test_gradient_reaches_every_token_of_a_bag():
    model = install_bag_embedding(Tiny())
    tokens = torch.tensor([[[1, 2, 2, 3]]])
    model(tokens).sum().backward()
    grad_rows = model.tok_embeddings.weight.grad.abs().sum(-1)
    assert grad_rows[1] > 0 and grad_rows[3] > 0
    torch.testing.assert_close(grad_rows[2], 2 * grad_rows[1])  # a repeated token counts twice
    assert grad_rows[[0, 4]].sum() == 0
