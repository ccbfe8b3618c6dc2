"""The token store layer: document sources, the tokenizer, building and reading token stores.
Imports numpy, tokenizers, filelock, datasets (optional: hub sources); nothing else of tst_titan."""
