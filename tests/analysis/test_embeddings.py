"""tst_titan.analysis.embeddings: each statistic against a naive computation on small tensors, the
phase-1 batch against the TST dataset, and token frequencies against the tiny run's store."""

import math

import numpy as np
import pytest
import torch

from tst_titan.analysis import embeddings, runs
from tst_titan.components.dataloader import TokenWindowDataset
from tst_titan.datastore.store import TokenStore
from tst_titan.method.schedule import PhaseSchedule


def test_norms_cosine_and_drift_match_a_row_by_row_computation():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    for i in range(7):
        ra, rb = a[i].tolist(), b[i].tolist()
        na, nb = math.sqrt(sum(x * x for x in ra)), math.sqrt(sum(x * x for x in rb))
        dot = sum(x * y for x, y in zip(ra, rb))
        diff = math.sqrt(sum((y - x) ** 2 for x, y in zip(ra, rb)))
        assert embeddings.embedding_norms(a)[i].item() == pytest.approx(na, rel=1e-6)
        assert embeddings.row_cosine(a, b)[i].item() == pytest.approx(dot / (na * nb), rel=1e-5, abs=1e-6)
        assert embeddings.embedding_drift(a, b)[i].item() == pytest.approx(diff, rel=1e-6)
        assert embeddings.embedding_drift(a, b, "relative")[i].item() == pytest.approx(diff / na, rel=1e-6)
        assert embeddings.embedding_drift(a, b, "cosine")[i].item() == pytest.approx(1 - dot / (na * nb), abs=1e-6)
    assert torch.allclose(embeddings.row_cosine(a, 3 * a), torch.ones(7))
    assert torch.equal(embeddings.embedding_drift(a, a), torch.zeros(7))
    with pytest.raises(ValueError, match="kind"):
        embeddings.embedding_drift(a, b, "angle")

def test_pca_finds_the_two_directions_of_largest_variance():
    g = torch.Generator().manual_seed(1)
    basis, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    scales = torch.tensor([5.0, 3.0, 0.5, 0.3, 0.2, 0.1], dtype=torch.float64)
    x = (torch.randn(400, 6, generator=g, dtype=torch.float64) * scales) @ basis.T + 2.0
    pca = embeddings.pca_2d(x.float())
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
    sub = embeddings.pca_2d(x, rows=rows)
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
    assert embeddings.bag_decodability(emb, torch.tensor([[0, 1]]))["recovered"] == 1
    # a duplicate counts once per occurrence: {0, 0} -> nearest {0, 2} -> 2 of 2
    assert embeddings.bag_decodability(emb, torch.tensor([[0, 0]]))["recovered"] == 2
    # {3, 4}: mean (-.5, 0, .5): nearest 3 and 4 (cos .707 each), everything else below
    assert embeddings.bag_decodability(emb, torch.tensor([[3, 4]]))["recovered"] == 2
    out = embeddings.bag_decodability(emb, torch.tensor([[0, 1], [0, 0], [3, 4]]))
    assert out == {"s": 2, "recovered": pytest.approx(5 / 3), "fraction": pytest.approx(5 / 6),
                   "chance": pytest.approx(2 / 5), "bags": 3}
    # without token 2 among the candidates, {0, 1} is read back whole
    mask = torch.tensor([True, True, False, True, True])
    out = embeddings.bag_decodability(emb, torch.tensor([[0, 1]]), candidates=mask)
    assert out["recovered"] == 2 and out["chance"] == pytest.approx(2 / 4)
    # s = 1: a token is its own nearest neighbour
    assert embeddings.bag_decodability(emb, torch.arange(5)[:, None])["fraction"] == 1.0

def test_bag_decodability_matches_a_naive_loop_on_random_embeddings():
    g = torch.Generator().manual_seed(2)
    emb = torch.randn(30, 4, generator=g)
    tokens = torch.randint(0, 30, (500,), generator=g).numpy()
    mask = torch.rand(30, generator=g) > 0.2
    for s in (1, 3, 5):
        bags = embeddings.sample_bags(tokens, s, 40, seed=s)
        assert bags.shape == (40, s)
        got = embeddings.bag_decodability(emb, bags)["recovered"]
        assert got == pytest.approx(_naive_decodability(emb.tolist(), bags))
        bags = bags[mask[bags].all(1)]
        got = embeddings.bag_decodability(emb, bags, candidates=mask)["recovered"]
        assert got == pytest.approx(_naive_decodability(emb.tolist(), bags, mask.tolist()))
    curve = embeddings.decodability_curve(emb, tokens, [1, 2], n=10)
    assert [c["s"] for c in curve] == [1, 2] and curve[0]["fraction"] == 1.0

def test_rank_correlation_and_frequency_bins():
    x = [1, 2, 3, 4, 5]
    assert embeddings.rank_correlation(x, [10, 20, 30, 40, 50]) == pytest.approx(1.0)
    assert embeddings.rank_correlation(x, [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties get average ranks: Spearman = Pearson of the ranks [1, 2.5, 2.5, 4] and [1, 2, 3, 4]
    r1, r2 = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4.0])
    assert embeddings.rank_correlation([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(np.corrcoef(r1, r2)[0, 1])
    assert math.isnan(embeddings.rank_correlation([1, 1, 1], [1, 2, 3]))
    freq = np.array([0, 5, 1, 3, 9, 7, 0])
    vals = np.array([100.0, 5, 1, 3, 9, 7, 100])
    bins = embeddings.frequency_bins(vals, freq, n_bins=2)  # unseen tokens (freq 0) are left out
    assert [b["tokens"] for b in bins] == [3, 2]
    assert bins[0]["mean"] == pytest.approx(3.0) and (bins[0]["freq_lo"], bins[0]["freq_hi"]) == (1, 5)
    assert bins[1]["mean"] == pytest.approx(8.0) and bins[1]["freq_median"] == 8.0

def test_sample_bags_are_consecutive_tokens():
    tokens = np.arange(100, 200)
    bags = embeddings.sample_bags(tokens, 4, 50, seed=3)
    assert torch.equal(bags[:, 1:] - bags[:, :-1], torch.ones(50, 3, dtype=torch.long))
    assert bags.min() >= 100 and bags.max() < 200

def test_entropy_of_uniform_peaked_and_random_distributions():
    assert embeddings.entropy_from_logits(torch.zeros(3, 11)).tolist() == pytest.approx([math.log(11)] * 3)
    peaked = torch.full((1, 11), -1e4)
    peaked[0, 3] = 0.0
    assert embeddings.entropy_from_logits(peaked).item() == pytest.approx(0.0, abs=1e-6)
    # uniform over s of V entries: log s (the phase-1 optimum for a bag of distinct tokens)
    half = torch.full((1, 16), -1e4)
    half[0, :4] = 0.0
    assert embeddings.entropy_from_logits(half).item() == pytest.approx(math.log(4), abs=1e-5)
    z = torch.randn(2, 5, 7)
    p = [[[math.exp(v) for v in row] for row in b] for b in z.tolist()]
    naive = [[-sum(x / sum(r) * math.log(x / sum(r)) for x in r) for r in b] for b in p]
    assert embeddings.entropy_from_logits(z).tolist() == [pytest.approx(n, rel=1e-5) for n in naive]

def test_bagged_batch_cuts_samples_like_the_tst_dataset():
    class ArrayStore:
        path = "array"

        def __init__(self, a):
            self.a = a

        def __len__(self):
            return len(self.a)

        def slice(self, i, j):
            return self.a[i:j]

    tokens = np.arange(5000, dtype=np.uint32)
    x, y = embeddings.bagged_batch(tokens, 3, 10, 4)
    assert x.shape == y.shape == (4, 10, 3)
    it = iter(TokenWindowDataset(ArrayStore(tokens), PhaseSchedule(bag_size=3, switch_step=100, seq_len=10,
                                                                   samples_per_step=4, dp_world_size=1), 0))
    for b in range(4):
        inp, lab = next(it)
        assert torch.equal(x[b], inp["input"]) and torch.equal(y[b], lab)
    with pytest.raises(ValueError, match="fewer"):
        embeddings.bagged_batch(tokens[:100], 3, 10, 4)

def test_token_frequencies_count_the_store(pair):
    info = runs.run_info(pair["tst"])
    freq = embeddings.token_frequencies(info.store_dir, 2048)
    tokens = TokenStore(info.store_dir, "train")
    values, counts = np.unique(tokens.slice(0, len(tokens)), return_counts=True)
    assert freq.shape == (2048,) and freq.sum() == len(tokens)
    assert np.array_equal(freq[values], counts) and freq[np.setdiff1d(np.arange(2048), values)].sum() == 0
