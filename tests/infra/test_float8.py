"""float8: the tensor-parallel plan torchtitan 0.2.2 never applied, and the MoE expert converter.

Runs on CPU with torchao's emulated float8 (``quantize.linear.float8.emulate``)."""

import copy

import pytest
import torch
from torch.distributed.tensor import DTensor, Shard
from torch.distributed.tensor.parallel import loss_parallel
from torchtitan.distributed.parallel_dims import ParallelDims
from torchtitan.models.llama3 import parallelize_llama
from torchtitan.protocols.model_converter import _registry_model_converter_cls, build_model_converters
from torchtitan.protocols.train_spec import get_train_spec

from tests.helpers.distributed import run_on_processes
from tests.helpers.trainer import EMBEDDED_STORE, parse
from tst_titan.experiments.dryrun import parse_config
from tst_titan.infra.float8 import (
    FLOAT8_GROUPED_MM,
    Float8GroupedExpertsConverter,
    convert_grouped_experts_to_float8,
    decide_float8_tp,
    is_float8_weight,
)
from tst_titan.train_spec import config_path, get_tst_train_spec

FLOAT8_TP = [
    "--model.flavor", "tiny", "--training.seq_len", "32", "--validation.seq_len", "32",
    "--parallelism.data_parallel_shard_degree", "1", "--parallelism.tensor_parallel_degree", "2",
    "--model.converters", "quantize.linear.float8", "--quantize.linear.float8.emulate",
    "--training.dataset_path", EMBEDDED_STORE, "--model.hf_assets_path", EMBEDDED_STORE,
]
PLANNED = ["attention.wq", "attention.wk", "attention.wv", "attention.wo",
           "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"]


def _build(cfg, parallel_dims, parallelize):
    spec = get_train_spec(cfg.model.name)
    args = copy.deepcopy(spec.model_args[cfg.model.flavor])
    args.update_from_config(cfg)
    with torch.device("meta"):
        model = spec.model_cls(args)
    build_model_converters(cfg, parallel_dims).convert(model)
    model = parallelize(model, parallel_dims, cfg)
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        model.init_weights()
    inputs = {}  # what each planned linear of every block receives, after the TP hooks

    def record(key):
        def hook(mod, args):
            inputs[key] = args[0]  # returns None: the input is not replaced

        return hook

    for i, block in model.layers.items():
        for name in PLANNED:
            block.get_submodule(name).register_forward_pre_hook(record(f"layers.{i}.{name}"))
    return model, spec, inputs


def _float8_tp_body(rank, world_size):
    # optional: the [float8] extra
    from torchao.float8.distributed_utils import tensor_already_casted_to_fp8
    from torchao.float8.float8_linear import Float8Linear

    cfg = parse(*FLOAT8_TP)
    dims = ParallelDims(dp_replicate=1, dp_shard=1, cp=1, tp=2, pp=1, ep=1, etp=1, world_size=2)
    dims.build_mesh()
    g = torch.Generator().manual_seed(1)
    bags = torch.randint(0, 2048, (2, 32, 4), generator=g)  # a phase-1 batch: [B, L, s]
    labels = torch.randint(0, 2048, (2, 32, 4), generator=g)

    # torchtitan 0.2.2's own parallelize: the bug -- plain TP, inputs reach the linears in high precision.
    stock, _, stock_inputs = _build(cfg, dims, parallelize_llama)
    tokens = bags[..., 0]
    with torch.no_grad():
        stock_logits = stock(tokens)
    assert isinstance(stock.layers["0"].attention.wq, Float8Linear)
    assert not any(tensor_already_casted_to_fp8(x) for x in stock_inputs.values())

    # The TST spec's parallelize: the float8 TP plan applies.
    model, spec, inputs = _build(cfg, dims, get_train_spec("tst_llama3").parallelize_fn)
    assert cfg.model.converters == ["quantize.linear.float8"]  # restored after parallelize
    block = model.layers["0"]
    for name in PLANNED:
        weight = block.get_submodule(name).weight
        assert isinstance(weight, DTensor), name
        colwise = name.split(".")[1] in ("wq", "wk", "wv", "w1", "w3")
        assert weight.placements == ((Shard(0),) if colwise else (Shard(1),)), name
    with torch.no_grad():  # same weights, same float8 scales (global amax): same logits
        torch.testing.assert_close(model(tokens).full_tensor(), stock_logits.full_tensor(), rtol=1e-4, atol=1e-4)
    loss_fn = spec.build_loss_fn(cfg, parallel_dims=dims)
    logits = model(bags)
    with loss_parallel():
        loss = loss_fn(logits, labels)
        loss.backward()
    # Float8ColwiseParallel / Float8RowwiseParallel / PrepareFloat8ModuleInput cast every input of
    # a planned linear to float8 (before the TP all-gather, for the colwise ones).
    assert len(inputs) == len(PLANNED) * len(model.layers)
    for name, x in inputs.items():
        assert tensor_already_casted_to_fp8(x), name
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        grad = p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
        assert torch.isfinite(grad).all(), name


@pytest.mark.slow
@pytest.mark.usefixtures("embedded_store")
def test_float8_tensor_parallel_plan_is_applied():
    run_on_processes(_float8_tp_body, 2)


def test_float8_tp_decision_needs_every_planned_linear_in_float8():
    cfg = parse_config(config_path("debug_tst.toml"), FLOAT8_TP)
    planned = ["layers.0.attention.wq", "layers.0.feed_forward.w1"]
    assert decide_float8_tp(cfg, planned, set(planned)).enabled
    partial = decide_float8_tp(cfg, planned, {"layers.0.feed_forward.w1"})
    assert not partial.enabled and partial.unconverted == ["layers.0.attention.wq"]
    cfg.quantize.linear.float8.recipe_name = "rowwise"  # torchtitan: plain TP for rowwise
    assert not decide_float8_tp(cfg, planned, set(planned)).enabled


def _tiny_moe(flavor="debug_moe"):
    spec = get_tst_train_spec("tst_qwen3")
    torch.manual_seed(0)
    model = spec.model_cls(copy.deepcopy(spec.model_args[flavor]))
    with torch.no_grad():
        model.init_weights()
    return model


def test_grouped_mm_converter_converts_the_experts():
    from torchao.prototype.moe_training.tensor import Float8TrainingWeightWrapperTensor  # optional: [float8]

    model = _tiny_moe()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    converted = convert_grouped_experts_to_float8(model, ["experts"])
    assert converted == ["layers.0.moe.experts", "layers.1.moe.experts"]
    for name, p in model.named_parameters():
        if ".moe.experts." in name:
            assert isinstance(p, Float8TrainingWeightWrapperTensor) and is_float8_weight(p), name
            assert torch.equal(p._data, before[name])  # same values, new type
        else:  # router gate, attention, embeddings, head: untouched
            assert type(p) is torch.nn.Parameter and not is_float8_weight(p), name
    # The for-loop experts (CPU flavor) still train; the float8 grouped GEMMs need an SM89+ GPU.
    model(torch.randint(0, 2048, (2, 16))).float().mean().backward()
    assert model.layers["0"].moe.experts.w1.grad is not None


def test_grouped_mm_converter_is_registered_and_needs_a_recent_gpu():
    assert _registry_model_converter_cls[FLOAT8_GROUPED_MM] is Float8GroupedExpertsConverter
    cfg = parse_config(config_path("debug_moe_tst.toml"), [
        "--model.flavor", "debug_moe_gmm", "--model.converters", FLOAT8_GROUPED_MM,
        "--quantize.grouped_mm.float8.fqns", "experts"])
    if torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9):
        build_model_converters(cfg, None)
    else:
        with pytest.raises(ValueError, match=r"SM89"):
            build_model_converters(cfg, None)
