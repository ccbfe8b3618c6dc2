"""Downstream use of a trained run: lm-eval-harness accuracy (harness), the local multiple-choice
task built from a run's own held-out tokens (continuation_task), and text sampled from a
checkpoint (sampling), all through the Hugging Face export. May import run_files, datastore,
train_spec, analysis and export; only tools import it. lm-eval and transformers (the [eval] and
[export] extras) are imported inside functions."""
