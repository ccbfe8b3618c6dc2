"""Small torchtitan llama3 models and batches for tests that build a model by hand (the GPU tests,
and the CPU test that checks what those build)."""

import torch
from torchtitan.models.llama3 import TransformerModelArgs

from tst_titan.method.embedding import install_bag_embedding
from tst_titan.train_spec import get_tst_train_spec


def small_llama3(vocab=2048, dim=128, layers=2, device="cuda"):
    """A small torchtitan llama3 with the bag embedding (as the TST specs install it), in float32
    on ``device``. No ``model.to(dtype)``: that would also cast the complex RoPE buffer
    ``freqs_cis`` to a real dtype (dropping its imaginary part), which training never does."""
    model_cls = get_tst_train_spec("tst_llama3").model_cls
    torch.manual_seed(0)
    with torch.device(device):
        model = model_cls(TransformerModelArgs(dim=dim, n_layers=layers, n_heads=4, vocab_size=vocab,
                                               multiple_of=64, rope_theta=10000))
        with torch.no_grad():
            model.init_weights()
    return install_bag_embedding(model)


def bag_batch(batch_size, seq_len, vocab, bag_size, device="cuda", seed=0):
    """(inputs, labels): ``[B, L, s]`` bags and next bags (bag_size > 1) or ``[B, L]`` tokens."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    stream = torch.randint(0, vocab, (batch_size, (seq_len + 1) * bag_size), generator=g)
    if bag_size == 1:
        return stream[:, :-1].to(device), stream[:, 1:].to(device)
    bags = stream.view(batch_size, seq_len + 1, bag_size)
    return bags[:, :-1].contiguous().to(device), bags[:, 1:].contiguous().to(device)
