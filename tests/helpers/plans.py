"""The shared runs of the reliability and ablation tests, as families of plans
(``tests/helpers/trainer.py``), each trained once per pytest session by a fixture of
``tests/conftest.py``:

* ``one`` (:func:`one_process_plans`): an uninterrupted run saving every step, the baseline, resumes
  from steps 2, 4, 6 (with and without the dataloader state), resumes with other settings, a new run
  from weights, a NaN loss -- read by the resume, data-fault, bad-input and export tests;
* ``fsdp`` (:func:`fsdp_plans`): the uninterrupted run and its resumes under FSDP2 on 2 processes;
* ``twins`` (:func:`twin_plans`): the same configs in another process (determinism), qwen3, and the
  data faults (short documents, a store too small, missing/empty data, too many validation steps);
* ``ablations`` (:func:`ablation_plans`): ``tst.mode`` and ``tst.optimizer_at_switch``, with the spy.
"""

from __future__ import annotations

import os
import random

from tests.helpers.trainer import Plan
from tst_titan.datastore.build import build_store

#: 8 steps, switch after step 4 (r = 0.5), 2 microbatches of 2 samples per step on one process.
RESUME = ["--training.steps", "8", "--tst.superposition_fraction", "0.5",
          "--training.local_batch_size", "2", "--training.global_batch_size", "4",
          "--validation.freq", "4"]
#: The same under FSDP2 on 2 processes: global batch 8 = 2 (local) x 2 (dp) x 2 (accumulation).
RESUME_FSDP = ["--training.steps", "8", "--tst.superposition_fraction", "0.5",
               "--training.local_batch_size", "2", "--training.global_batch_size", "8",
               "--parallelism.data_parallel_shard_degree", "2", "--validation.freq", "4"]
SAVE_EVERY_STEP = ["--checkpoint.enable", "--checkpoint.interval", "1", "--checkpoint.keep_latest_k", "0",
                   "--checkpoint.no-last-save-model-only"]
#: Mid phase 1, exactly at the switch (the last bag step), after it.
RESUME_STEPS = (2, 4, 6)


def resume_args(base: str, run: str, step: int, common: list[str], *extra: str) -> list[str]:
    """Load every state of ``run``'s step-``step`` checkpoint into a fresh dump folder."""
    return [*common, "--checkpoint.enable",
            "--checkpoint.initial_load_path", os.path.join(base, run, "checkpoint", f"step-{step}"),
            "--checkpoint.no-initial-load-model-only", "--checkpoint.load_only", *extra]


def one_process_plans(base: str):
    plans = [Plan("full", RESUME + SAVE_EVERY_STEP),
             Plan("baseline", RESUME, config="debug_baseline.toml")]
    plans += [Plan(f"resume-{k}", resume_args(base, "full", k, RESUME)) for k in RESUME_STEPS]
    no_dl = ["--checkpoint.exclude_from_loading", "dataloader"]
    plans += [
        Plan("no-dataloader-2", resume_args(base, "full", 2, RESUME, *no_dl)),
        Plan("no-dataloader-6", resume_args(base, "full", 6, RESUME, *no_dl)),
        Plan("no-dataloader-no-scheduler-6", expect_error=True, args=resume_args(
            base, "full", 6, RESUME, "--checkpoint.exclude_from_loading", "dataloader,lr_scheduler")),
        Plan("other-bag-size", resume_args(base, "full", 4, RESUME, "--tst.bag_size", "2"),
             expect_error=True),
        Plan("other-fraction", resume_args(base, "full", 4, RESUME, "--tst.superposition_fraction", "0.25"),
             expect_error=True),
        # A new run from step-6 weights only: step 0, so phase 1 again.
        Plan("from-weights", ["--training.steps", "4", "--tst.superposition_fraction", "0.5",
                              "--checkpoint.enable", "--checkpoint.load_only",
                              "--checkpoint.initial_load_path", os.path.join(base, "full", "checkpoint", "step-6")],
             spy=True),
        Plan("nan", ["--training.steps", "3", "--optimizer.lr", "1e30"], expect_error=True),
    ]
    return [(plans, 1)]


def fsdp_plans(base: str):
    plans = [Plan("full", RESUME_FSDP + SAVE_EVERY_STEP)]
    plans += [Plan(f"resume-{k}", resume_args(base, "full", k, RESUME_FSDP)) for k in RESUME_STEPS]
    plans.append(Plan("no-dataloader-4", resume_args(
        base, "full", 4, RESUME_FSDP, "--checkpoint.exclude_from_loading", "dataloader")))
    return [(plans, 2)]


#: Documents of 1-3 words (1-3 tokens each); a few empty ones the store must count as skipped.
def short_documents(n: int = 1000, empty: int = 5) -> list[str]:
    words = ["cat", "dog", "the", "a", "tree", "sun", "red", "blue", "run", "sat", "on", "mat"]
    rng = random.Random(0)
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 3))) for _ in range(n)]
    for i in range(empty):
        docs[i * 97] = ""
    return docs


def twin_plans(base: str):
    short = os.path.join(base, "stores", "short_docs")
    build_store(short, short_documents(), vocab_size=2048)
    # enough text for a next-token sample (33 tokens), not for one phase-1 sample (4 x 33)
    tiny = os.path.join(base, "stores", "tiny")
    build_store(tiny, ["one two three four five six seven"] * 2 + ["eight nine ten eleven"] * 3
                + ["twelve thirteen", "fourteen"], vocab_size=2048, val_fraction=0.0)
    empty = os.path.join(base, "stores", "empty_folder")
    os.makedirs(empty)
    store = ["--training.dataset", "store", "--training.dataset_path"]
    plans = [
        # the same configs as the one-process family's, in another process: determinism
        Plan("full", RESUME + SAVE_EVERY_STEP),
        Plan("baseline", RESUME, config="debug_baseline.toml"),
        Plan("qwen3", ["--model.name", "tst_qwen3", "--training.steps", "4",
                       "--tst.superposition_fraction", "0.5", "--checkpoint.enable",
                       "--checkpoint.interval", "100"]),
        # 1-3-token documents; a small corpus, so phase 1 (4 steps x 8 samples x 132 tokens)
        # runs out of text: new epochs
        Plan("short-docs", [*store, short, "--model.hf_assets_path", short, "--training.local_batch_size", "8",
                            "--tst.superposition_fraction", "0.5", "--validation.no-enable",
                            "--metrics.enable-tensorboard"]),
        Plan("too-small", [*store, tiny, "--model.hf_assets_path", tiny], expect_error=True),
        Plan("missing-store", [], expect_error=True,
             set_config={"training.dataset": "store",
                         "training.dataset_path": os.path.join(base, "stores", "no_such_store")}),
        Plan("empty-folder", [], expect_error=True,
             set_config={"training.dataset": "folder", "training.dataset_path": empty}),
        Plan("validation-steps", ["--validation.steps", "100000"], expect_error=True),
    ]
    return [(plans, 1)]


#: The ablation runs: 8 steps, switch after step 4, 2 microbatches of 2 samples per step.
RESET = [*RESUME, "--tst.optimizer_at_switch", "reset_moments"]


def ablation_plans(base: str):
    plans = [
        Plan("input_only", [*RESUME, "--tst.mode", "input_only"], spy=True),
        Plan("output_only", [*RESUME, "--tst.mode", "output_only"], spy=True),
        Plan("keep", RESUME, spy=True),
        Plan("reset", RESET + SAVE_EVERY_STEP, spy=True),
        # resumed from the last bag step (the reset is still to come) and after the switch
        Plan("reset-resume-4", resume_args(base, "reset", 4, RESET), spy=True),
        Plan("reset-resume-6", resume_args(base, "reset", 6, RESET), spy=True),
        # the reset, and the learning rate warmed up again over 3 steps (steps 5, 6, 7)
        Plan("rewarm", [*RESUME, "--tst.optimizer_at_switch", "reset_rewarm", "--tst.rewarm_steps", "3"], spy=True),
    ]
    return [(plans, 1)]
