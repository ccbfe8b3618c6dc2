"""Model flavors added to torchtitan's own: the paper's shapes and CPU-sized models.

``llama3`` (used by ``tst_llama3``), all with untied embeddings and torchtitan's llama3 defaults
otherwise (rope_theta 500000, llama3.1 RoPE scaling, sdpa causal attention):

============  ===========================================================  ==========  =========
flavor        shape                                                        vocab       params
============  ===========================================================  ==========  =========
``270M``      SmolLM2-135M: dim 576, 30 layers, 9 heads, 3 KV heads, FFN 1536   128256   254.0 M
``600M``      SmolLM2-360M: dim 960, 32 layers, 15 heads, 5 KV heads, FFN 2560  128320*  561.0 M
``3B``        SmolLM3-3B: dim 2048, 36 layers, 16 heads, 4 KV heads, FFN 11008  128256   3.338 B
``tiny``      dim 64, 2 layers, 4 heads (CPU)                                    2048     0.37 M
``debug``     dim 128, 4 layers, 4 heads (CPU)                                   2048     1.38 M
``micro``     dim 32, 2 layers, 2 heads (CPU, ``bench regime``)                  512      0.06 M
``mini``      dim 64, 4 layers, 4 heads (CPU, ``bench frontier``: 4.7x micro)   512      0.28 M
``small``     dim 512, 6 layers, 8 heads (GPU, ``bench frontier --device cuda``) 2048    22.5 M
============  ===========================================================  ==========  =========

The names are the paper's; the counts are torchtitan's (``get_nparams_and_flops``). "270M" is
254 M, "600M" is 561 M, "3B" is 3.34 B: SmolLM3-3B is 3.08 B with *tied* embeddings,
the paper's models are untied (+263 M). llama3's ``TransformerModelArgs`` derives the FFN width
as ``multiple_of * ceil(int(ffn_dim_multiplier * int(8 * dim / 3)) / multiple_of)``:
576 -> 1536 and 960 -> 2560 with no multiplier and ``multiple_of = 256``; 2048 -> 11008 with
``ffn_dim_multiplier = 2.0`` (int(2 * 5461) = 10922, rounded up to 43 * 256).

\\* ``600M`` pads the Llama-3 vocabulary (128256) to 128320 = 5 * 25664: with 15 query / 5 KV
heads the only tensor-parallel degree is 5, and tensor parallelism shards the vocabulary evenly
(TST's vocab-parallel bag loss needs equal shards). The 64 padding rows are never a target; the
Llama-3 tokenizer fits (the store's vocab may be smaller than the model's). +123 k parameters.

``qwen3`` (used by ``tst_qwen3``):

* ``10B-A1B``: a Qwen3-MoE shape of 10.10 B total and 1.04 B active parameters per token
  (torchtitan's count: embeddings, attention, norms, router, and top_k/num_experts of the routed
  experts). It is Qwen3-30B-A3B's expert design (128 experts of width 768, top-8, softmax router
  with normalised top-k weights, no shared expert, QK-norm, head_dim 128, 4 KV heads) at
  dim 1024 with 32 layers and 16 query heads, untied embeddings with the Llama-3 vocabulary
  (128256), every layer MoE. Experts: 9.66 B; embeddings + head: 263 M; attention: 168 M.
  The paper gives only "Qwen3 MoE, ~10B total, ~1B active": this is our choice.
* ``debug_moe``: a tiny Qwen3-style MoE for CPU (0.48 M parameters, 0.34 M active: dim 64,
  2 layers, 8 experts of width 64, top-2), experts computed with a for-loop (``use_grouped_mm = False``): bf16
  grouped_mm on CPU is ~100x slower. ``debug_moe_gmm`` is the same model with grouped_mm, for GPU.
* ``tiny``: a dense qwen3 for the CPU tests of the qwen3 code path.
"""

from __future__ import annotations

from torchtitan.models.llama3 import TransformerModelArgs
from torchtitan.models.moe import MoEArgs
from torchtitan.models.qwen3 import Qwen3ModelArgs

#: Llama-3 tokenizer vocabulary (the paper's tokenizer for the dense models).
LLAMA3_VOCAB = 128256


def llama3_flavors() -> dict:
    return {
        # CPU-sized models for laptops, tests and the benchmark (vocab of the embedded tokenizer).
        # 0.37 M parameters: trains at tens of thousands of tokens/s on 2 cores.
        "tiny": TransformerModelArgs(
            dim=64, n_layers=2, n_heads=4, vocab_size=2048, multiple_of=64, rope_theta=10000
        ),
        # 1.38 M parameters: the debug config's model.
        "debug": TransformerModelArgs(
            dim=128, n_layers=4, n_heads=4, vocab_size=2048, multiple_of=128, rope_theta=10000
        ),
        # 60 k parameters, vocab 512: the smallest model, for `bench regime` to reach hundreds of
        # training tokens per parameter on a laptop.
        "micro": TransformerModelArgs(
            dim=32, n_layers=2, n_heads=2, vocab_size=512, multiple_of=32, rope_theta=10000
        ),
        # 279 k parameters (4.7x micro), vocab 512: the larger CPU model of `bench frontier`'s
        # model-size axis (same store as micro; ~3x micro's step time on 2 cores).
        "mini": TransformerModelArgs(
            dim=64, n_layers=4, n_heads=4, vocab_size=512, multiple_of=64, rope_theta=10000
        ),
        # 22.5 M parameters: `bench frontier --device cuda`'s model, tens of millions of parameters
        # for one GPU (CPU-sized vocabulary, so that it trains on the embedded corpus).
        "small": TransformerModelArgs(
            dim=512, n_layers=6, n_heads=8, vocab_size=2048, multiple_of=256, rope_theta=10000
        ),
        # The paper's dense shapes (see the module docstring).
        "270M": TransformerModelArgs(
            dim=576, n_layers=30, n_heads=9, n_kv_heads=3, vocab_size=LLAMA3_VOCAB,
            multiple_of=256, rope_theta=500000,
        ),
        "600M": TransformerModelArgs(
            dim=960, n_layers=32, n_heads=15, n_kv_heads=5, vocab_size=128320,
            multiple_of=256, rope_theta=500000,
        ),
        "3B": TransformerModelArgs(
            dim=2048, n_layers=36, n_heads=16, n_kv_heads=4, vocab_size=LLAMA3_VOCAB,
            multiple_of=256, ffn_dim_multiplier=2.0, rope_theta=500000,
        ),
    }


def qwen3_flavors() -> dict:
    def tiny_moe(use_grouped_mm: bool) -> Qwen3ModelArgs:
        return Qwen3ModelArgs(
            dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, hidden_dim=192,
            vocab_size=2048, max_seq_len=4096, rope_theta=10000, qk_norm=True,
            moe_enabled=True, moe_inter_dim=64,
            moe_args=MoEArgs(
                num_experts=8, num_shared_experts=0, top_k=2, score_func="softmax",
                route_norm=True, route_scale=1.0, score_before_experts=False,
                use_grouped_mm=use_grouped_mm,
            ),
        )

    return {
        # 0.36 M parameters, untied embeddings, for CPU runs of the qwen3 code path.
        "tiny": Qwen3ModelArgs(
            dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, hidden_dim=192,
            vocab_size=2048, max_seq_len=4096, rope_theta=10000, qk_norm=True,
        ),
        "debug_moe": tiny_moe(use_grouped_mm=False),
        "debug_moe_gmm": tiny_moe(use_grouped_mm=True),
        "10B-A1B": Qwen3ModelArgs(
            dim=1024, n_layers=32, n_heads=16, n_kv_heads=4, head_dim=128, hidden_dim=3072,
            vocab_size=LLAMA3_VOCAB, max_seq_len=4096, rope_theta=1000000, qk_norm=True,
            enable_weight_tying=False, eos_id=128001,
            moe_enabled=True, moe_inter_dim=768,
            moe_args=MoEArgs(
                num_experts=128, num_shared_experts=0, top_k=8, score_func="softmax",
                route_norm=True, route_scale=1.0, score_before_experts=False,
            ),
        ),
    }


#: Extra flavors per torchtitan model family, merged into the ``tst_<family>`` specs.
EXTRA_FLAVORS = {"llama3": llama3_flavors, "qwen3": qwen3_flavors}
