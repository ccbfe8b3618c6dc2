"""Bag embedding: the fp32 mean of s token embeddings, as a hook on the stock embedding.

(The hook under torch.compile and activation checkpointing: tests/integration/test_train.py.)"""

import torch
from torch import nn

from tst_titan.method.embedding import bag_mean, install_bag_embedding


class Tiny(nn.Module):
    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.tok_embeddings = nn.Embedding(50, 8, dtype=dtype)

    def forward(self, tokens):
        return self.tok_embeddings(tokens)


def test_bag_mean_is_fp32_mean_cast_back():
    torch.manual_seed(0)
    e = torch.randn(2, 3, 6, 8).bfloat16()
    expected = (e.double().sum(-2) / 6).float().bfloat16()
    got = bag_mean(e)
    assert got.dtype == torch.bfloat16 and got.shape == (2, 3, 8)
    assert torch.equal(got, (e.float().sum(-2) / 6).bfloat16())
    torch.testing.assert_close(got, expected, atol=1e-2, rtol=1e-2)


def test_hook_averages_bags_and_leaves_plain_tokens_alone():
    torch.manual_seed(0)
    model = install_bag_embedding(Tiny())
    install_bag_embedding(model)  # idempotent: one hook only
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
