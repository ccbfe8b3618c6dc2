"""``python -m tst_titan.tools.generate``: prints the continuation and the greedy check against
torchtitan's model; bad input exits 2."""

import json

from tokenizers import Tokenizer

from tst_titan.tools.generate import main


def test_prints_samples_and_the_greedy_check(pair, embedded_store, capsys):
    assert main([pair["tst"], "--prompt", "import os\n", "--max-new-tokens", "6", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    tok = Tokenizer.from_file(f"{embedded_store}/tokenizer.json")
    assert result["prompt_ids"] == [0] + tok.encode("import os\n", add_special_tokens=False).ids
    assert result["samples"][0]["text"] == tok.decode(result["samples"][0]["ids"])
    assert result["greedy_check"]["equal"] and result["greedy_check"]["steps"] == 6

    assert main([pair["baseline"], "--prompt", "import os\n", "--max-new-tokens", "4", "--temperature", "0.9",
                 "--top-k", "5", "--num-samples", "2"]) == 0
    text = capsys.readouterr().out
    assert text.count("import os\n") == 2 and "--- sample 2 (seed 1)" in text
    assert "Hugging Face export vs torchtitan model: same tokens" in text


def test_bad_input_exits_2(pair, tmp_path, capsys):
    assert main([pair["tst"], "--prompt", "x", "--step", "99"]) == 2
    assert "--step 99" in capsys.readouterr().err
    assert main([str(tmp_path), "--prompt", "x"]) == 2
    assert "has no tst_run.json" in capsys.readouterr().err
    assert main([pair["tst"], "--prompt", "x", "--top-k", "3"]) == 2
    assert "--top-k needs --temperature" in capsys.readouterr().err
