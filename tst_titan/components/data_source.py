"""Where a config's token store lives (``training.dataset`` / ``training.dataset_path``), and its
build on first use for the embedded corpus and local folders."""

from __future__ import annotations

import os

from tst_titan.datastore.build import ensure_store


def store_dir_of(job_config, vocab_size: int) -> str:
    """The token store directory of this config (see ``tst_titan.job_config.DATASETS``);
    ``vocab_size`` is the model flavor's, which names the embedded corpus's default folder."""
    dataset, path = job_config.training.dataset, job_config.training.dataset_path
    if dataset == "embedded":
        return path or os.path.join("data", f"embedded_v{vocab_size}")
    if dataset == "folder":
        return os.path.join(path, ".tst_store")
    return path


def ensure_store_of(job_config, vocab_size: int) -> str:
    """Build the store on first use (embedded corpus, local folder); return its directory."""
    dataset, path = job_config.training.dataset, job_config.training.dataset_path
    out = store_dir_of(job_config, vocab_size)
    if dataset == "embedded":
        ensure_store(out, vocab_size)
    elif dataset == "folder":
        ensure_store(out, vocab_size, folder=path)
    return out
