"""Readers of finished runs: run folders and checkpoints (runs), loss curves (compare, curves),
embedding statistics (embeddings), run summaries (report). May import every layer below it, never experiments or tools."""
