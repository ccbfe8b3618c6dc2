"""Readers of finished runs: run folders and checkpoints (runs), loss curves (compare, curves),
embedding statistics (embeddings), run summaries (report), the benchmark's statistics against a
frontier of fully trained baselines (frontier). May import every layer below it, never experiments or tools."""
