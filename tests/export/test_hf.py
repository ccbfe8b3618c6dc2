"""A TST model is an ordinary model: its final checkpoint loads into torchtitan's stock model with no
tst_titan code at all, and ``python -m tst_titan.tools.export`` writes a Hugging Face model that
``transformers`` loads offline and that gives our logits.

The checkpoints are those of the shared runs (tests/helpers/plans.py): the tiny llama3 TST run
(8 steps, switch after 4) and a tiny qwen3 TST run (4 steps).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.helpers.trainer import CONFIGS, EMBEDDED_STORE
from tst_titan.export.hf import load_model
from tst_titan.tools.export import main

# No hub: huggingface_hub reads this when first imported, so set it before any test imports it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytestmark = pytest.mark.usefixtures("embedded_store")

PROMPT = "def greet(name):\n    return 'hello ' + name\n"


@pytest.fixture(scope="module")
def runs(one, twins):
    return {"llama3": (one, "full", 8), "qwen3": (twins, "qwen3", 4)}


def _prompt_ids():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(EMBEDDED_STORE, "tokenizer.json"))
    return [0] + tok.encode(PROMPT).ids  # bos first, as training samples have it


def _our_logits(run_dir, ids):
    model, _ = load_model(run_dir)
    with torch.no_grad():
        return model(torch.tensor([ids]))


# Runs in a fresh interpreter: only torch and torchtitan, the model shape given as numbers.
STOCK_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    import torch.distributed.checkpoint as dcp

    jobs = json.loads(sys.argv[1])
    for job in jobs:
        if job["family"] == "llama3":
            from torchtitan.models.llama3 import TransformerModelArgs as Args
            from torchtitan.models.llama3.model.model import Transformer as Model
        else:
            from torchtitan.models.qwen3 import Qwen3ModelArgs as Args
            from torchtitan.models.qwen3.model.model import Qwen3Model as Model
        model = Model(Args(**job["shape"]))
        state = model.state_dict()
        dcp.load(state, checkpoint_id=job["checkpoint"])
        model.load_state_dict(state)
        with torch.no_grad():
            torch.save(model.eval()(torch.tensor([job["ids"]])), job["out"])
    leaked = sorted(m for m in sys.modules if m.split(".")[0] == "tst_titan")
    assert not leaked, leaked
    print("STOCK OK")
""")

SHAPES = {
    # the tst_llama3 / tst_qwen3 "tiny" flavors, written out; max_seq_len = training.seq_len
    "llama3": dict(dim=64, n_layers=2, n_heads=4, vocab_size=2048, multiple_of=64, rope_theta=10000,
                   max_seq_len=32),
    "qwen3": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, hidden_dim=192,
                  vocab_size=2048, max_seq_len=32, rope_theta=10000, qk_norm=True),
}


def test_final_checkpoint_loads_into_the_stock_models_without_tst_titan(runs, tmp_path):
    ids = _prompt_ids()
    jobs = []
    for family, (results, name, step) in runs.items():
        jobs.append({"family": family, "shape": SHAPES[family], "ids": ids,
                     "checkpoint": results.checkpoint(name, step), "out": str(tmp_path / f"{family}.pt")})
    env = dict(os.environ, PYTHONPATH="")
    proc = subprocess.run([sys.executable, "-c", STOCK_SCRIPT, json.dumps(jobs)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "STOCK OK" in proc.stdout, proc.stderr[-3000:]
    for job, (family, (results, name, _)) in zip(jobs, runs.items()):
        stock = torch.load(job["out"])
        ours = _our_logits(results.dump(name), ids)
        assert stock.shape == ours.shape == (1, len(ids), 2048)
        assert torch.allclose(stock, ours, rtol=0, atol=1e-5), (family, (stock - ours).abs().max())


@pytest.mark.parametrize("family", ["llama3", "qwen3"])
def test_exported_hugging_face_model_gives_our_logits_and_generates(runs, tmp_path, family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    results, name, step = runs[family]
    out = tmp_path / "hf"
    assert main([results.dump(name), str(out)]) == 0
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json"} <= set(os.listdir(out))
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [{"llama3": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}[family]]
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (64, 2, 2048)
    assert config["tie_word_embeddings"] is False and config["rope_theta"] == 10000.0

    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    assert ids[0].tolist() == _prompt_ids()  # same tokens as training, bos first
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = model(ids).logits
    ours = _our_logits(results.dump(name), ids[0].tolist())
    assert torch.allclose(theirs, ours, rtol=0, atol=1e-4), (theirs - ours).abs().max()

    generated = model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert generated.shape == (1, ids.shape[1] + 8)
    assert tokenizer.decode(generated[0]).startswith("<|begin_of_text|>" + PROMPT)


def test_export_from_a_toml_config_and_a_chosen_step(runs, tmp_path):
    from safetensors.torch import load_file

    results, name, _ = runs["llama3"]
    from_run = tmp_path / "from_run"
    from_toml = tmp_path / "from_toml"
    assert main([results.dump(name), str(from_run), "--step", "4"]) == 0
    assert main([results.dump(name), str(from_toml), "--step", "4",
                 "--config", os.path.join(CONFIGS, "debug_tst.toml"), "--model.flavor", "tiny",
                 "--training.seq_len", "32", "--training.dataset_path", EMBEDDED_STORE,
                 "--model.hf_assets_path", EMBEDDED_STORE]) == 0
    a, b = load_file(from_run / "model.safetensors"), load_file(from_toml / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((from_run / "tst_export.json").read_text())["checkpoint"].endswith("step-4")


def test_export_errors_are_clear(tmp_path, capsys):
    assert main([str(tmp_path), str(tmp_path / "out")]) == 2
    assert "tst_run.json not found" in capsys.readouterr().err
