"""Export of a trained run as a Hugging Face model folder (hf: weights, config, tokenizer).
May import every layer below it (job configs, method, components, train_spec); transformers/safetensors only inside functions (the [export] extra)."""
