"""Text from a checkpoint: the Hugging Face export's greedy tokens are those of a greedy loop over
torchtitan's own model; sampled tokens are always among the top k of that model; seeds repeat;
a Llama-3-style tokenizer folder (special tokens at the end of the vocabulary) works the same."""

import json
import os

import pytest
import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from tst_titan.analysis.runs import load_model
from tst_titan.evaluation.checkpoint import EvaluationError, resolve
from tst_titan.evaluation.sampling import SamplingSettings, generate, hf_generate, load_hf

PROMPT = "def main(args):\n    "


def _greedy(model, ids, n):
    ids = list(ids)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids


@pytest.mark.parametrize("which", ["tst", "baseline"])
def test_greedy_tokens_equal_torchtitans(pair, tmp_path, which):
    ckpt = resolve(pair[which])
    result = generate(ckpt, PROMPT, SamplingSettings(max_new_tokens=12), cache_dir=str(tmp_path), check_steps=8)
    prompt_ids = result["prompt_ids"]
    assert prompt_ids[0] == 0  # bos first
    reference = _greedy(load_model(pair[which], ckpt.step), prompt_ids, ckpt.seq_len - len(prompt_ids))
    n = min(12, ckpt.seq_len - len(prompt_ids))
    assert result["samples"][0]["ids"][:n] == reference[len(prompt_ids):][:n]
    assert result["greedy_check"] == {"steps": 8, "hf": reference[len(prompt_ids):][:8],
                                      "torchtitan": reference[len(prompt_ids):][:8], "equal": True}
    assert len(result["samples"][0]["ids"]) == 12


def test_top_k_samples_stay_in_the_top_k_and_repeat_with_the_seed(pair, tmp_path):
    ckpt = resolve(pair["tst"])
    model, tokenizer = load_hf(ckpt, str(tmp_path))
    settings = SamplingSettings(max_new_tokens=10, temperature=1.5, top_k=3, seed=7, num_samples=3)
    samples = hf_generate(model, tokenizer, PROMPT, settings)
    assert samples == hf_generate(model, tokenizer, PROMPT, settings)
    assert len({tuple(s) for s in samples}) > 1  # different seeds per sample
    reference = load_model(pair["tst"], ckpt.step)
    n_prompt = len(tokenizer(PROMPT).input_ids)
    with torch.no_grad():
        for s in samples:
            logits = reference(torch.tensor([s[:-1]]))[0]
            for pos in range(n_prompt, len(s)):
                assert s[pos] in logits[pos - 1].topk(3).indices.tolist()


def _llama3_style_tokenizer(folder, store_dir, vocab):
    """A byte-level BPE shaped like Llama-3's tokenizer.json: regex split + byte level without
    regex, and its special tokens (bos <|begin_of_text|>, eos <|end_of_text|>, reserved ones) at the
    end of the vocabulary. Trained here on the store's text: no download."""
    tok = Tokenizer(models.BPE())
    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    n_special = 16
    trainer = trainers.BpeTrainer(vocab_size=vocab - n_special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    texts = [Tokenizer.from_file(os.path.join(store_dir, "tokenizer.json")).decode(list(range(2, 2048)))] * 3
    tok.train_from_iterator(texts, trainer=trainer)
    base = tok.get_vocab_size()
    specials = ["<|begin_of_text|>", "<|end_of_text|>"] + [f"<|reserved_special_token_{i}|>" for i in range(n_special - 2)]
    tok.add_special_tokens([AddedToken(t, special=True) for t in specials])
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}, f)
    return base, tok.get_vocab_size()


def test_a_llama3_style_tokenizer_folder(pair, embedded_store, tmp_path):
    folder = str(tmp_path / "llama3_style")
    bos_id, size = _llama3_style_tokenizer(folder, embedded_store, 2048)
    assert bos_id > 1000 and size <= 2048
    ckpt = resolve(pair["tst"], tokenizer=folder)
    result = generate(ckpt, "import os", SamplingSettings(max_new_tokens=6), cache_dir=str(tmp_path / "c"))
    ids = result["prompt_ids"]
    assert ids[0] == bos_id and ids[1:] == Tokenizer.from_file(f"{folder}/tokenizer.json").encode(
        "import os", add_special_tokens=False).ids
    reference = _greedy(load_model(pair["tst"], ckpt.step), ids, 6)
    assert result["samples"][0]["ids"] == reference[len(ids):] and result["greedy_check"]["equal"]


def test_bad_settings_name_the_argument():
    for settings, arg in [(SamplingSettings(max_new_tokens=0), "--max-new-tokens"),
                          (SamplingSettings(temperature=-1), "--temperature"),
                          (SamplingSettings(temperature=1, top_k=0), "--top-k"),
                          (SamplingSettings(top_k=5), "--top-k needs --temperature"),
                          (SamplingSettings(num_samples=0), "--num-samples")]:
        with pytest.raises(EvaluationError, match=arg):
            settings.check()
