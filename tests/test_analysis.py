"""tst_titan.analysis: each statistic against a naive computation on small tensors, checkpoint
loading against a tiny real run, and the switch arithmetic on hand-made metrics rows."""

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.analysis_runs import TINY, tiny_pair
from tests.training import EMBEDDED_STORE
from tst_titan import analysis as A
from tst_titan import compare
from tst_titan.metrics import read_metrics


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return tiny_pair(tmp_path_factory)


# -- statistics on synthetic tensors ----------------------------------------------------------
def test_norms_cosine_and_drift_match_a_row_by_row_computation():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    for i in range(7):
        ra, rb = a[i].tolist(), b[i].tolist()
        na, nb = math.sqrt(sum(x * x for x in ra)), math.sqrt(sum(x * x for x in rb))
        dot = sum(x * y for x, y in zip(ra, rb))
        diff = math.sqrt(sum((y - x) ** 2 for x, y in zip(ra, rb)))
        assert A.embedding_norms(a)[i].item() == pytest.approx(na, rel=1e-6)
        assert A.row_cosine(a, b)[i].item() == pytest.approx(dot / (na * nb), rel=1e-5, abs=1e-6)
        assert A.embedding_drift(a, b)[i].item() == pytest.approx(diff, rel=1e-6)
        assert A.embedding_drift(a, b, "relative")[i].item() == pytest.approx(diff / na, rel=1e-6)
        assert A.embedding_drift(a, b, "cosine")[i].item() == pytest.approx(1 - dot / (na * nb), abs=1e-6)
    assert torch.allclose(A.row_cosine(a, 3 * a), torch.ones(7))
    assert torch.equal(A.embedding_drift(a, a), torch.zeros(7))
    with pytest.raises(ValueError, match="kind"):
        A.embedding_drift(a, b, "angle")


def test_pca_finds_the_two_directions_of_largest_variance():
    g = torch.Generator().manual_seed(1)
    basis, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    scales = torch.tensor([5.0, 3.0, 0.5, 0.3, 0.2, 0.1], dtype=torch.float64)
    x = (torch.randn(400, 6, generator=g, dtype=torch.float64) * scales) @ basis.T + 2.0
    pca = A.pca_2d(x.float())
    cov = np.cov(x.numpy(), rowvar=False)
    evals, evecs = np.linalg.eigh(cov)
    top = evecs[:, ::-1][:, :2]
    # the variance the 2-D projection keeps is the covariance's top-2 eigenvalues
    np.testing.assert_allclose(pca["explained_variance"].numpy(), evals[::-1][:2], rtol=1e-4)
    np.testing.assert_allclose(pca["coords"].var(0, unbiased=True).numpy(), evals[::-1][:2], rtol=1e-4)
    np.testing.assert_allclose(pca["explained_variance_ratio"].numpy(), evals[::-1][:2] / evals.sum(), rtol=1e-4)
    # same plane, unit orthogonal components, the sign convention holds
    comps = pca["components"].numpy()
    np.testing.assert_allclose(np.abs(comps @ top), np.eye(2), atol=1e-4)
    for c in comps:
        assert c[np.abs(c).argmax()] > 0
    # reconstruction from 2 components leaves exactly the other eigenvalues' variance
    recon = pca["coords"] @ pca["components"] + pca["mean"]
    resid = ((x.double() - recon) ** 2).sum(1).sum() / (len(x) - 1)
    assert resid.item() == pytest.approx(evals[:-2].sum(), rel=1e-4)
    # fitting on a subset of rows projects every row with that subset's axes
    rows = torch.arange(400) < 200
    sub = A.pca_2d(x, rows=rows)
    assert sub["coords"].shape == (400, 2)
    np.testing.assert_allclose(sub["mean"].numpy(), x[:200].mean(0).numpy())


def _naive_decodability(emb, bags, candidates=None):
    counts = []
    for bag in bags.tolist():
        mean = [sum(emb[t][d] for t in bag) / len(bag) for d in range(len(emb[0]))]
        nm = math.sqrt(sum(v * v for v in mean))
        sims = []
        for v, row in enumerate(emb):
            if candidates is not None and not candidates[v]:
                continue
            nr = math.sqrt(sum(r * r for r in row))
            sims.append((sum(m * r for m, r in zip(mean, row)) / (nm * nr), v))
        nearest = {v for _, v in sorted(sims, reverse=True)[: len(bag)]}
        counts.append(sum(t in nearest for t in bag))
    return sum(counts) / len(counts)


def test_bag_decodability_counts_on_a_hand_made_embedding():
    emb = torch.tensor([[1.0, 0.0, 0.0],      # token 0
                        [0.0, 0.9, 0.0],      # token 1
                        [1.0, 1.0, 0.1],      # token 2: close to the mean of 0 and 1
                        [0.0, 0.0, 1.0],      # token 3
                        [-1.0, 0.0, 0.0]])    # token 4
    # mean of {0, 1} = (0.5, 0.45, 0): nearest two are 2 (cos .997) and 0 (.743), not 1 (.669)
    assert A.bag_decodability(emb, torch.tensor([[0, 1]]))["recovered"] == 1
    # a duplicate counts once per occurrence: {0, 0} -> nearest {0, 2} -> 2 of 2
    assert A.bag_decodability(emb, torch.tensor([[0, 0]]))["recovered"] == 2
    # {3, 4}: mean (-.5, 0, .5): nearest 3 and 4 (cos .707 each), everything else below
    assert A.bag_decodability(emb, torch.tensor([[3, 4]]))["recovered"] == 2
    out = A.bag_decodability(emb, torch.tensor([[0, 1], [0, 0], [3, 4]]))
    assert out == {"s": 2, "recovered": pytest.approx(5 / 3), "fraction": pytest.approx(5 / 6),
                   "chance": pytest.approx(2 / 5), "bags": 3}
    # without token 2 among the candidates, {0, 1} is read back whole
    mask = torch.tensor([True, True, False, True, True])
    out = A.bag_decodability(emb, torch.tensor([[0, 1]]), candidates=mask)
    assert out["recovered"] == 2 and out["chance"] == pytest.approx(2 / 4)
    # s = 1: a token is its own nearest neighbour
    assert A.bag_decodability(emb, torch.arange(5)[:, None])["fraction"] == 1.0


def test_bag_decodability_matches_a_naive_loop_on_random_embeddings():
    g = torch.Generator().manual_seed(2)
    emb = torch.randn(30, 4, generator=g)
    tokens = torch.randint(0, 30, (500,), generator=g).numpy()
    mask = torch.rand(30, generator=g) > 0.2
    for s in (1, 3, 5):
        bags = A.sample_bags(tokens, s, 40, seed=s)
        assert bags.shape == (40, s)
        got = A.bag_decodability(emb, bags)["recovered"]
        assert got == pytest.approx(_naive_decodability(emb.tolist(), bags))
        bags = bags[mask[bags].all(1)]
        got = A.bag_decodability(emb, bags, candidates=mask)["recovered"]
        assert got == pytest.approx(_naive_decodability(emb.tolist(), bags, mask.tolist()))
    curve = A.decodability_curve(emb, tokens, [1, 2], n=10)
    assert [c["s"] for c in curve] == [1, 2] and curve[0]["fraction"] == 1.0


def test_rank_correlation_and_frequency_bins():
    x = [1, 2, 3, 4, 5]
    assert A.rank_correlation(x, [10, 20, 30, 40, 50]) == pytest.approx(1.0)
    assert A.rank_correlation(x, [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties get average ranks: Spearman = Pearson of the ranks [1, 2.5, 2.5, 4] and [1, 2, 3, 4]
    r1, r2 = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4.0])
    assert A.rank_correlation([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(np.corrcoef(r1, r2)[0, 1])
    assert math.isnan(A.rank_correlation([1, 1, 1], [1, 2, 3]))
    freq = np.array([0, 5, 1, 3, 9, 7, 0])
    vals = np.array([100.0, 5, 1, 3, 9, 7, 100])
    bins = A.frequency_bins(vals, freq, n_bins=2)  # unseen tokens (freq 0) are left out
    assert [b["tokens"] for b in bins] == [3, 2]
    assert bins[0]["mean"] == pytest.approx(3.0) and (bins[0]["freq_lo"], bins[0]["freq_hi"]) == (1, 5)
    assert bins[1]["mean"] == pytest.approx(8.0) and bins[1]["freq_median"] == 8.0


def test_sample_bags_are_consecutive_tokens():
    tokens = np.arange(100, 200)
    bags = A.sample_bags(tokens, 4, 50, seed=3)
    assert torch.equal(bags[:, 1:] - bags[:, :-1], torch.ones(50, 3, dtype=torch.long))
    assert bags.min() >= 100 and bags.max() < 200


def test_entropy_of_uniform_peaked_and_random_distributions():
    assert A.entropy_from_logits(torch.zeros(3, 11)).tolist() == pytest.approx([math.log(11)] * 3)
    peaked = torch.full((1, 11), -1e4)
    peaked[0, 3] = 0.0
    assert A.entropy_from_logits(peaked).item() == pytest.approx(0.0, abs=1e-6)
    # uniform over s of V entries: log s (the phase-1 optimum for a bag of distinct tokens)
    half = torch.full((1, 16), -1e4)
    half[0, :4] = 0.0
    assert A.entropy_from_logits(half).item() == pytest.approx(math.log(4), abs=1e-5)
    z = torch.randn(2, 5, 7)
    p = [[[math.exp(v) for v in row] for row in b] for b in z.tolist()]
    naive = [[-sum(x / sum(r) * math.log(x / sum(r)) for x in r) for r in b] for b in p]
    assert A.entropy_from_logits(z).tolist() == [pytest.approx(n, rel=1e-5) for n in naive]


def test_bagged_batch_cuts_samples_like_the_tst_dataset():
    from tst_titan.data import PhaseSchedule, TokenWindowDataset

    class ArrayStore:
        path = "array"

        def __init__(self, a):
            self.a = a

        def __len__(self):
            return len(self.a)

        def slice(self, i, j):
            return self.a[i:j]

    tokens = np.arange(5000, dtype=np.uint32)
    x, y = A.bagged_batch(tokens, 3, 10, 4)
    assert x.shape == y.shape == (4, 10, 3)
    it = iter(TokenWindowDataset(ArrayStore(tokens), PhaseSchedule(True, 3, 100, 10, 4, 1), 0))
    for b in range(4):
        inp, lab = next(it)
        assert torch.equal(x[b], inp["input"]) and torch.equal(y[b], lab)
    with pytest.raises(ValueError, match="fewer"):
        A.bagged_batch(tokens[:100], 3, 10, 4)


# -- checkpoints ------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_checkpoint_round_trip_with_prefixes_and_optimizer_state(tmp_path):
    import torch.distributed.checkpoint as dcp

    model = A.build_model("tst_llama3", "tiny", 32)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # what a torchtitan full checkpoint holds besides the weights, and wrapper prefixes
    saved = {f"model._orig_mod.{k}": v for k, v in sd.items()}
    saved["optimizer.state.tok_embeddings.weight.exp_avg"] = torch.ones(3)
    saved["train_state.step"] = torch.tensor(5)
    dcp.save(saved, checkpoint_id=str(tmp_path / "step-5"), no_dist=True)
    loaded = A.load_checkpoint_tensors(str(tmp_path / "step-5"))
    assert sorted(loaded) == sorted(sd)
    for k in sd:
        assert torch.equal(loaded[k], sd[k]), k
    only = A.load_checkpoint_tensors(str(tmp_path / "step-5"), ["output.weight"])
    assert list(only) == ["output.weight"] and torch.equal(only["output.weight"], sd["output.weight"])
    with pytest.raises(KeyError, match="no tensor"):
        A.load_checkpoint_tensors(str(tmp_path / "step-5"), ["nope.weight"])


def test_tiny_run_info_checkpoints_and_stages(pair):
    switch = round(TINY["fraction"] * TINY["steps"])
    # from tst_run.json when the run wrote one, and from train.log + metrics.jsonl without it
    for use_record in (True, False):
        info = A.run_info(pair["tst"], use_record=use_record)
        assert (info.enabled, info.bag_size, info.switch_step, info.steps, info.flavor, info.seq_len) == (
            True, 4, switch, TINY["steps"], "tiny", TINY["seq_len"])
        assert info.superposition_fraction == pytest.approx(TINY["fraction"])
        assert os.path.samefile(info.store_dir, EMBEDDED_STORE)
        base = A.run_info(pair["baseline"], use_record=use_record)
        assert (base.enabled, base.switch_step, base.bag_size, base.steps) == (False, 0, 1, 30)
    plan = A.demo_checkpoint_plan(TINY["steps"], TINY["fraction"])
    assert A.checkpoint_steps(pair["tst"]) == [1, switch, plan["after switch"], TINY["steps"]]
    assert A.stage_checkpoints(pair["tst"]) == {"start": 1, "end of phase 1": switch,
                                                "after switch": plan["after switch"], "end": TINY["steps"]}
    assert A.checkpoint_steps(pair["baseline"])[-1] == 30
    # the switch as metrics.jsonl logs it
    rows = read_metrics(pair["tst"])
    assert max(r["step"] for r in rows if r["phase"] == 1) == switch


def test_demo_checkpoint_plan_saves_the_switch():
    assert A.demo_checkpoint_plan(300, 0.3) == {"interval": 10, "start": 1, "end of phase 1": 90,
                                                "after switch": 100, "end": 300}
    plan = A.demo_checkpoint_plan(1000, 0.25)
    assert plan["end of phase 1"] % plan["interval"] == 0 and plan["interval"] <= 40
    with pytest.raises(ValueError):
        A.demo_checkpoint_plan(10, 0.0)


def test_loaded_final_checkpoint_reproduces_the_logged_val_loss(pair):
    """The model rebuilt from the last checkpoint gives the val loss the trainer logged there."""
    from tst_titan.store import TokenStore

    info = A.run_info(pair["tst"])
    rows = read_metrics(pair["tst"])
    last = rows[-1]
    model = A.load_model(pair["tst"], last["step"], info)
    n = TINY["val_steps"] * TINY["batch"]
    L = TINY["seq_len"]
    val = TokenStore(info.store_dir, "val")
    x = torch.from_numpy(val.slice(0, n * (L + 1)).astype(np.int64)).view(n, L + 1)
    with torch.no_grad():
        logits = model(x[:, :-1])
    ce = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
    assert ce.item() == pytest.approx(last["val_loss"], abs=2e-4)
    # and the full mid-run checkpoints (with optimizer state) load into the same model
    emb, head = A.load_embeddings(pair["tst"], 1)
    assert emb.shape == head.shape == (2048, 64)
    assert not torch.equal(emb, model.tok_embeddings.weight.detach())
    out = A.phase1_entropy(model, val.slice(0, len(val)), 4, seq_len=L, batch=2)
    assert out["log_s"] == pytest.approx(math.log(4)) and 0 < out["entropy"] <= math.log(2048) + 1e-4
    assert out["bag_loss"] > 0 and out["positions"] == 2 * L


def test_token_frequencies_count_the_store(pair):
    from tst_titan.store import TokenStore

    info = A.run_info(pair["tst"])
    freq = A.token_frequencies(info.store_dir, 2048)
    tokens = TokenStore(info.store_dir, "train")
    values, counts = np.unique(tokens.slice(0, len(tokens)), return_counts=True)
    assert freq.shape == (2048,) and freq.sum() == len(tokens)
    assert np.array_equal(freq[values], counts) and freq[np.setdiff1d(np.arange(2048), values)].sum() == 0


# -- the switch, on hand-made rows ------------------------------------------------------------
def _rows(points, **extra):
    return [dict(step=s, flops_seen=10.0 * s, wall_time_s=0.5 * s, raw_tokens_seen=4 * s, **extra,
                 **({"val_loss": v} if v is not None else {}), loss=l) for s, l, v in points]


TST_ROWS = _rows([(2, 3.0, 5.0), (4, 2.0, 4.8), (5, 1.9, None), (6, 4.5, 4.9), (8, 4.0, 4.0), (10, 3.6, 3.5)])
BASE_ROWS = _rows([(2, 5.0, 5.0), (4, 4.6, 4.6), (6, 4.4, 4.4), (8, 4.2, 4.2), (10, 4.0, 4.0),
                   (12, 3.8, 3.8), (16, 3.4, 3.4)])


def test_loss_jump_reads_the_last_value_before_and_the_first_after_the_switch():
    j = A.loss_jump(TST_ROWS, 5, "loss")
    assert j == {"key": "loss", "before_step": 5, "before": 1.9, "after_step": 6, "after": 4.5,
                 "jump": pytest.approx(2.6)}
    v = A.loss_jump(TST_ROWS, 5, "val_loss")  # step 5 has no val loss: step 4's counts
    assert (v["before_step"], v["after_step"], v["jump"]) == (4, 6, pytest.approx(0.1))
    assert A.loss_jump(TST_ROWS, 0) is None and A.loss_jump(TST_ROWS, 10) is None


def test_recovery_length_compares_at_equal_flops():
    rec = A.recovery_length(TST_ROWS, BASE_ROWS, 5)
    # step 6: 4.9 > 4.4; step 8: 4.0 <= 4.2 -> recovered 3 steps after the switch
    assert (rec["step"], rec["steps_after_switch"], rec["tst_val_loss"], rec["baseline_val_loss"]) == (
        8, 3, 4.0, pytest.approx(4.2))
    # against a baseline that is better by 0.6 everywhere, TST never gets there
    better = [dict(r, val_loss=r["val_loss"] - 0.6) for r in BASE_ROWS]
    assert A.recovery_length(TST_ROWS, better, 5)["step"] is None
    # interpolation: baseline flops 50..70 (steps 5, 7) only through value_at
    sparse = _rows([(5, 4.5, 4.5), (7, 4.1, 4.1), (9, 3.9, 3.9)])
    rec = A.recovery_length(TST_ROWS, sparse, 5)
    assert rec["step"] == 8 and rec["baseline_val_loss"] == pytest.approx(4.0)
    assert A.recovery_to_level(TST_ROWS, 5, 4.8) == 3 and A.recovery_to_level(TST_ROWS, 5, 1.0) is None


def test_speedups_and_equal_flops_use_the_benchmark_arithmetic():
    sp = A.speedups(TST_ROWS, BASE_ROWS)
    assert set(sp) == {"step", "flops_seen", "wall_time_s"}
    for metric, result in sp.items():
        assert result == compare.matched_loss_speedup(TST_ROWS, BASE_ROWS, x=metric)
    # TST ends at 3.5 at step 10; the baseline reaches 3.5 at step 15 (between 3.8@12 and 3.4@16)
    assert sp["step"]["baseline"] == pytest.approx(15.0) and sp["step"]["speedup"] == pytest.approx(1.5)
    assert sp["wall_time_s"]["speedup"] == pytest.approx(1.5)
    assert A.equal_flops_val(TST_ROWS, BASE_ROWS) == {"flops": 100.0, "tst": 3.5, "baseline": 4.0}


def test_summary_table_of_the_tiny_pair(pair):
    table = A.summary_table(pair["tst"], pair["baseline"])
    values = {r["quantity"]: r["value"] for r in table}
    assert values["bag size s, superposition fraction r"] == "4, 0.3"
    assert values["switch: last phase-1 step / TST steps"] == "6 / 20"
    tst_rows, base_rows = read_metrics(pair["tst"]), read_metrics(pair["baseline"])
    assert values["speedup to TST's final val loss, steps"] == compare.format_speedup(
        compare.matched_loss_speedup(tst_rows, base_rows))
    assert values["final val loss TST"] == f"{compare.curve(tst_rows)[-1][1]:.4f}"
    assert any(q.startswith("next-token val loss at step 6") for q in values)
    assert "recovery" in A.format_table(table)


def test_find_runs_order(tmp_path, monkeypatch, pair):
    def fake(folder, checkpoints=()):
        for arm in ("tst", "baseline"):
            os.makedirs(folder / arm, exist_ok=True)
            (folder / arm / "metrics.jsonl").write_text("")
        for step in checkpoints:
            os.makedirs(folder / "tst" / "checkpoint" / f"step-{step}")
            (folder / "tst" / "checkpoint" / f"step-{step}" / ".metadata").write_text("")
        return folder

    monkeypatch.delenv(A.RUNS_ENV, raising=False)
    bench = fake(tmp_path / "bench", checkpoints=[20])
    monkeypatch.setattr(A, "BENCH_DIRS", (str(bench), str(tmp_path / "missing")))
    monkeypatch.setattr(A, "switch_step", lambda run: 6)
    got = A.find_runs(demo_dir=str(tmp_path / "demo"), make_demo=False)
    assert got["tst"] == str(bench / "tst") and got["source"].startswith("benchmark")
    # the benchmark keeps only its last checkpoint: the embedding notebook needs the switch bracketed
    with pytest.raises(FileNotFoundError):
        A.find_runs(need_checkpoints=True, demo_dir=str(tmp_path / "demo"), make_demo=False)
    demo = fake(tmp_path / "demo")
    (demo / "demo.json").write_text(json.dumps({}))
    got = A.find_runs(need_checkpoints=True, demo_dir=str(demo), make_demo=False)
    assert got["tst"] == str(demo / "tst") and got["source"].startswith("demo")
    monkeypatch.setenv(A.RUNS_ENV, pair["dir"])
    assert A.find_runs()["tst"] == pair["tst"]
    assert A.find_runs("a/tst", "a/baseline")["source"] == "given"
    with pytest.raises(ValueError):
        A.find_runs("a/tst")
