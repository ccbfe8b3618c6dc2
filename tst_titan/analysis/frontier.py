"""The statistics of the honest benchmark: a TST run against a *baseline frontier*, over seeds.

A frontier (one per seed) is a set of fully trained baselines of different lengths, each with its
own complete warmup-stable-decay schedule, so that each gives one point ``(training FLOPs, final
validation loss)``. A treatment (a TST arm, or the A/A control: one more baseline run) gives one
point ``(FLOPs, final val loss)`` per seed. For each seed the frontier answers two questions:

* equal-FLOPs loss difference: treatment loss − frontier loss at the treatment's FLOPs;
* iso-loss speedup: frontier FLOPs needed to reach the treatment's loss ÷ the treatment's FLOPs.

The frontier between its runs is read in one of two ways (``method``):

* ``"interpolate"``: loss piecewise linear in log FLOPs between the two bracketing runs (local,
  no model assumed);
* ``"fit"``: ``L(C) = E + A·C^-α`` fitted to the seed's runs by least squares (smooths the noise of
  single runs, assumes the power law).

Neither extrapolates. A treatment loss outside the frontier's range gives a *bound*, never a number
read off a curve where no run was: a per-seed speedup is ``{"value": x, "bound": b}`` with ``b``
``None`` (x is the estimate), ``">"`` (the treatment beat the longest baseline: the speedup is at
least x = longest baseline's FLOPs / treatment FLOPs) or ``"<"`` (it lost to the shortest: at most
x = shortest baseline's FLOPs / treatment FLOPs). The aggregate over seeds is a bound as soon as one
seed is (see :func:`iso_loss_speedup`).

Statistics over seeds (the unit of replication: a seed changes init and data order, and has its own
frontier and its own treatment runs; pairing is by seed):

* equal-FLOPs difference: mean of the per-seed differences with a Student-t 95% interval
  (df = seeds − 1), :func:`t_interval`;
* iso-loss speedup: the per-seed log speedups, averaged (so the point statistic is the geometric
  mean of the per-seed speedups, which treats 2× and 0.5× symmetrically). Seeds are resampled with
  replacement, ``n_resamples`` times, from ``numpy.random.default_rng(bootstrap_seed)``
  (deterministic); ``median`` is the median of that bootstrap distribution. ``ci95`` is the
  *expanded* percentile interval (Hesterberg 2015, "What teachers should know about the
  bootstrap", The American Statistician 69(4)): the bootstrap quantiles at Φ(∓√(n/(n−1))·t_{.975,n−1})
  instead of 2.5% / 97.5%, which corrects the plain percentile interval's narrowness with few
  seeds; ``ci95_percentile`` is the plain one, kept for comparison; ``ci95_t`` is the Student-t
  interval of the mean log speedup, exponentiated. Coverage of a mean of normal values, simulated
  by :func:`interval_coverage` (``python -m tst_titan.tools.bench coverage``,
  results/interval_coverage.json): plain percentile 84% at 5 seeds and 90% at 10; expanded 92% at 5
  and 95% at 10; Student t 95% throughout. No bootstrap interval can be wider than the
  per-seed values' range: with 3 seeds both bootstrap intervals are that range (the resample of one
  seed thrice has probability 1/27 > 2.5%), which covers the centre of a symmetric per-seed
  distribution 75% of the time. With few seeds ``ci95_t`` is the interval to trust.

Plain numpy on plain Python data (scipy is not a dependency of this package: the power-law fit and
the t quantiles are computed here, see :func:`fit_power_law` and :func:`t_quantile`). A module of
the analysis layer: imports only :mod:`tst_titan.analysis.compare`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from tst_titan.analysis.compare import first_crossing

METHODS = ("interpolate", "fit")
#: The aggregate bound when some seeds are ">" and others "<": the frontier grid is too narrow.
BOTH_BOUNDS = "<>"
MIN_SEEDS = 2
MIN_RESAMPLES = 1000
#: The arm name of the A/A control in summary rows (its iso-loss speedup gains ``ci95_contains_1``).
AA_ARM = "aa"


class FitError(ValueError):
    """The power law is not determined by these points (its best α lies on the searched range's
    edge): read the frontier with ``method="interpolate"`` or add runs."""


# -- input checks ------------------------------------------------------------------------------
def _finite(x, name: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number, got {x!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {x!r}")
    return v


def _positive(x, name: str) -> float:
    v = _finite(x, name)
    if v <= 0:
        raise ValueError(f"{name} must be > 0, got {x!r}")
    return v


def _point(p, name: str) -> tuple[float, float]:
    """A ``(flops, loss)`` pair: flops > 0, loss finite."""
    if not isinstance(p, (tuple, list, np.ndarray)) or len(p) != 2:
        raise ValueError(f"{name} must be a (flops, loss) pair, got {p!r}")
    return _positive(p[0], f"{name} flops"), _finite(p[1], f"{name} loss")


def frontier_arrays(points: Sequence, name: str = "frontier", monotone: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A frontier's ``(flops, loss)`` points checked and sorted by FLOPs: at least 2 runs, FLOPs
    > 0 and distinct, losses finite and, with ``monotone``, strictly falling as FLOPs grow (what
    inverting the runs' own interpolation needs). Reading the loss at given FLOPs and fitting the
    power law do not need it: noisy frontiers (one run ending above a shorter one) still give those."""
    if isinstance(points, (str, bytes)) or not isinstance(points, Sequence) or len(points) < 2:
        raise ValueError(f"{name} must be a list of at least 2 (flops, loss) points, got {points!r}")
    pts = sorted(_point(p, f"{name}[{i}]") for i, p in enumerate(points))
    flops = np.array([p[0] for p in pts])
    loss = np.array([p[1] for p in pts])
    if np.any(np.diff(flops) == 0):
        raise ValueError(f"{name}: two runs with the same FLOPs ({flops.tolist()}); allowed: distinct FLOPs")
    if monotone and np.any(np.diff(loss) >= 0):
        raise ValueError(f"{name}: final losses must strictly fall as FLOPs grow; got "
                         f"{[(float(c), float(v)) for c, v in zip(flops, loss)]}")
    return flops, loss


def _method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


def _paired(frontiers: Mapping, treatment: Mapping) -> list:
    """The seeds, checked: the same set on both sides, at least MIN_SEEDS, sorted."""
    if not isinstance(frontiers, Mapping) or not isinstance(treatment, Mapping):
        raise ValueError("frontiers and treatment must be mappings seed -> points / (flops, loss)")
    if set(frontiers) != set(treatment):
        raise ValueError(f"frontiers and treatment must have the same seeds (pairs are per seed); "
                         f"frontiers: {sorted(map(str, frontiers))}, treatment: {sorted(map(str, treatment))}")
    if len(frontiers) < MIN_SEEDS:
        raise ValueError(f"seeds: at least {MIN_SEEDS} are needed for an interval, got {len(frontiers)} "
                         f"({list(frontiers)})")
    try:
        return sorted(frontiers)
    except TypeError:
        raise ValueError(f"seeds must be all int or all str, got {list(frontiers)}") from None


# -- Student t -----------------------------------------------------------------------------------
def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with integer ``df``: the exact finite trigonometric series
    (Abramowitz & Stegun 26.7.3-4) in θ = atan(t/√df)."""
    if not isinstance(df, (int, np.integer)) or df < 1:
        raise ValueError(f"df must be an integer >= 1, got {df!r}")
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:  # odd: (2/π)·(θ + sinθ·cosθ·Σ_{k=0}^{(df-3)/2} a_k cos^{2k}θ), a_0 = 1, a_k = a_{k-1}·2k/(2k+1)
        term, total = 1.0, 0.0
        for k in range((df - 1) // 2):
            total += term
            term *= c2 * (2 * k + 2) / (2 * k + 3)
        two_sided = 2 / math.pi * (theta + s * math.cos(theta) * total)
    else:  # even: sinθ·Σ_{k=0}^{df/2-1} b_k cos^{2k}θ, b_0 = 1, b_k = b_{k-1}·(2k-1)/(2k)
        term, total = 1.0, 0.0
        for k in range(df // 2):
            total += term
            term *= c2 * (2 * k + 1) / (2 * k + 2)
        two_sided = s * total
    return 0.5 + math.copysign(0.5 * two_sided, t)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with integer ``df``: :func:`t_cdf` inverted by bisection
    to float precision."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    t_cdf(0.0, df)  # checks df
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


def t_interval(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean of ``values`` with its Student-t interval: mean ± t_{(1+level)/2, n-1}·sd/√n (sd with
    n − 1). ``{"mean", "ci95": [lo, hi], "sd", "n", "interval"}``."""
    x = np.array([_finite(v, f"values[{i}]") for i, v in enumerate(values)])
    if len(x) < MIN_SEEDS:
        raise ValueError(f"values: at least {MIN_SEEDS} are needed for an interval, got {len(x)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    half = t_quantile((1 + level) / 2, len(x) - 1) * sd / math.sqrt(len(x))
    return {"mean": mean, "ci95": [mean - half, mean + half], "sd": sd, "n": len(x),
            "interval": f"Student t, df = {len(x) - 1}"}


# -- bootstrap -----------------------------------------------------------------------------------
def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def expanded_tails(n: int, level: float = 0.95) -> tuple[float, float]:
    """The bootstrap quantiles of the expanded percentile interval of a mean of ``n`` values at
    ``level``: Φ(∓z) with z = √(n/(n−1))·t_{(1+level)/2, n−1} (Hesterberg 2015). The factor √(n/(n−1))
    undoes the bootstrap's plug-in standard deviation (divisor n), t for the normal its heavier
    tails: at n = 5, 0.095% and 99.905%; at n = 10, 0.86% and 99.14%; → 2.5% and 97.5% as n grows."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < MIN_SEEDS:
        raise ValueError(f"n must be an integer >= {MIN_SEEDS}, got {n!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    tail = normal_cdf(-math.sqrt(n / (n - 1)) * t_quantile((1 + level) / 2, n - 1))
    return tail, 1 - tail


def bootstrap_mean(values: Sequence[float], n_resamples: int = 10000, seed: int = 0) -> dict:
    """Bootstrap of the mean of ``values`` (one value per seed): the values resampled with
    replacement ``n_resamples`` times by ``numpy.random.default_rng(seed)``; returns the median of
    the resampled means, ``ci95``: their quantiles at :func:`expanded_tails` (the expanded
    percentile interval) and ``ci95_percentile``: at 2.5% / 97.5% (the plain one), numpy's linear
    rule."""
    x = np.array([_finite(v, f"values[{i}]") for i, v in enumerate(values)])
    if len(x) < MIN_SEEDS:
        raise ValueError(f"values: at least {MIN_SEEDS} are needed for an interval, got {len(x)}")
    if not isinstance(n_resamples, (int, np.integer)) or n_resamples < MIN_RESAMPLES:
        raise ValueError(f"n_resamples must be an integer >= {MIN_RESAMPLES}, got {n_resamples!r}")
    if not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_resamples, len(x)))].mean(axis=1)
    lo, hi = expanded_tails(len(x))
    q = np.quantile(means, [lo, 0.025, 0.5, 0.975, hi])
    return {"median": float(q[2]), "ci95": [float(q[0]), float(q[4])], "ci95_percentile": [float(q[1]), float(q[3])],
            "tails": [lo, hi]}


INTERVALS = ("ci95", "ci95_percentile", "ci95_t")


def interval_coverage(n_seeds: Sequence[int] = (3, 5, 10, 40), reps: int = 2000, n_resamples: int = 2000,
                      seed: int = 0) -> dict:
    """How often each 95% interval of a mean over seeds (as :func:`iso_loss_speedup` computes them
    on the log speedups) contains the true mean, when the per-seed values are normal: ``reps``
    draws of ``n`` values for each ``n`` of ``n_seeds``, each interval computed as the study does
    (bootstrap with ``n_resamples`` resamples, seeded by the draw's index). Deterministic in
    ``seed``. What a reader needs to know how far to trust an interval at a study's seed count."""
    sizes = [int(n) for n in n_seeds]
    if not sizes or any(n < MIN_SEEDS for n in sizes):
        raise ValueError(f"n_seeds must be seed counts >= {MIN_SEEDS}, got {list(n_seeds)}")
    if not isinstance(reps, int) or reps < 100:
        raise ValueError(f"reps must be an integer >= 100, got {reps!r}")
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        hits = dict.fromkeys(INTERVALS, 0)
        for r in range(reps):
            values = rng.normal(0.0, 1.0, n)  # the truth is 0; coverage does not depend on mean or scale
            boot, t = bootstrap_mean(values, n_resamples, seed=r), t_interval(values)
            for key, (lo, hi) in (("ci95", boot["ci95"]), ("ci95_percentile", boot["ci95_percentile"]),
                                  ("ci95_t", t["ci95"])):
                hits[key] += lo <= 0.0 <= hi
        rows.append({"n_seeds": n, "coverage": {k: v / reps for k, v in hits.items()},
                     "binomial_sd": math.sqrt(0.95 * 0.05 / reps), "expanded_tails": list(expanded_tails(n))})
    return {"reps": reps, "n_resamples": n_resamples, "seed": seed, "rows": rows,
            "model": "per-seed log speedups normal; nominal level 95%; ci95: expanded percentile bootstrap, "
                     "ci95_percentile: plain percentile bootstrap, ci95_t: Student t"}


# -- the frontier, read two ways -----------------------------------------------------------------
@dataclass(frozen=True)
class PowerLawFit:
    """``L(C) = E + A·C^-α``, least-squares over one frontier's runs. Internally C is measured in
    units of ``flops_scale`` (the runs' geometric-mean FLOPs) so that the numbers stay moderate;
    :attr:`A` is the coefficient for C in plain FLOPs."""

    E: float
    A_scaled: float
    alpha: float
    flops_scale: float
    flops_range: tuple[float, float]
    rmse: float

    @property
    def A(self) -> float:
        return self.A_scaled * self.flops_scale ** self.alpha

    def loss_at(self, flops: float) -> float:
        return self.E + self.A_scaled * (flops / self.flops_scale) ** -self.alpha

    def flops_for_loss(self, loss: float) -> float:
        """The inverse of :meth:`loss_at` (loss must be above E)."""
        if loss <= self.E:
            raise ValueError(f"loss {loss} is at or below the fit's floor E = {self.E}: never reached")
        return self.flops_scale * ((loss - self.E) / self.A_scaled) ** (-1 / self.alpha)


def _profile(x_log: np.ndarray, loss: np.ndarray, alphas) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a fixed α, L = E + A·u with u = C^-α is linear: its least-squares (E, A) in closed form
    (centred simple regression), for every α of ``alphas`` at once: (sums of squared residuals, E, A)."""
    u = np.exp(-np.outer(np.atleast_1d(alphas), x_log))
    du = u - u.mean(axis=1, keepdims=True)
    dl = loss - loss.mean()
    a = (du @ dl) / np.einsum("ij,ij->i", du, du)
    r = dl - a[:, None] * du
    return np.einsum("ij,ij->i", r, r), loss.mean() - a * u.mean(axis=1), a


def fit_power_law(points: Sequence, alpha_range: tuple[float, float] = (1e-3, 10.0),
                  name: str = "frontier") -> PowerLawFit:
    """Least-squares fit of ``L(C) = E + A·C^-α`` to a frontier's ``(flops, loss)`` points (at
    least 4: three parameters and one degree of freedom left).

    Variable projection: for a given α the model is linear in (E, A), solved exactly by linear
    least squares (closed form), which leaves a one-dimensional search over α: a log-spaced grid over
    ``alpha_range`` finds the best cell, golden-section search on log α refines it to 1e-11. A
    best α on the range's edge means the points do not determine the power law: :class:`FitError`.
    """
    flops, loss = frontier_arrays(points, name, monotone=False)
    if len(flops) < 4:
        raise ValueError(f"{name}: a power-law fit needs at least 4 runs, got {len(flops)}")
    lo, hi = (_positive(a, "alpha_range") for a in alpha_range)
    if not lo < hi:
        raise ValueError(f"alpha_range must be (low, high) with 0 < low < high, got {alpha_range!r}")
    scale = float(np.exp(np.log(flops).mean()))
    x_log = np.log(flops / scale)
    grid = np.geomspace(lo, hi, 400)
    i = int(np.argmin(_profile(x_log, loss, grid)[0]))
    if i in (0, len(grid) - 1):
        raise FitError(f"{name}: the best power-law exponent lies at the edge of alpha_range "
                       f"{alpha_range} (α = {grid[i]:.4g}): the runs do not determine the power law")
    # Golden-section search on log α inside the bracketing grid cells.
    a, b = math.log(grid[i - 1]), math.log(grid[i + 1])
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    dl = loss - loss.mean()

    def sse(log_alpha: float) -> float:  # _profile's residual for one α, without its batching
        u = np.exp(-math.exp(log_alpha) * x_log)
        du = u - u.mean()
        r = dl - (du @ dl) / (du @ du) * du
        return float(r @ r)

    fc, fd = sse(c), sse(d)
    for _ in range(200):
        if b - a < 1e-11:  # α to ~1e-11 relative: beyond what the points determine
            break
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = sse(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = sse(d)
    alpha = math.exp((a + b) / 2)
    s, e, amp = (float(v[0]) for v in _profile(x_log, loss, alpha))
    return PowerLawFit(E=e, A_scaled=amp, alpha=alpha, flops_scale=scale,
                       flops_range=(float(flops[0]), float(flops[-1])), rmse=math.sqrt(s / len(loss)))


def frontier_loss_at(points: Sequence, flops: float, method: str = "interpolate",
                     name: str = "frontier") -> float:
    """The frontier's final loss at ``flops`` (which must lie within the runs' FLOPs: no
    extrapolation): piecewise linear in log FLOPs between the bracketing runs, or the power-law fit."""
    _method(method)
    c = _positive(flops, "flops")
    f, loss = frontier_arrays(points, name, monotone=False)
    if not f[0] <= c <= f[-1]:
        raise ValueError(f"flops {c:.6g} lies outside the frontier's runs [{f[0]:.6g}, {f[-1]:.6g}] "
                         f"({name}): no extrapolation; add runs that bracket it")
    if method == "fit":
        return fit_power_law(points, name=name).loss_at(c)
    return float(np.interp(math.log(c), np.log(f), loss))


def frontier_flops_for_loss(points: Sequence, loss: float, method: str = "interpolate",
                            name: str = "frontier") -> dict:
    """FLOPs the frontier needs to reach ``loss``: ``{"flops": C, "bound": b}``. ``b`` is None when
    the runs bracket the loss, ``">"`` when the loss is below the longest run's (C is then that run's
    FLOPs: the frontier needs more), ``"<"`` when it is above the shortest run's (C is the shortest
    run's FLOPs: the frontier needs less). With ``method="fit"`` the bracket is the fitted curve
    over the runs' FLOPs range."""
    _method(method)
    target = _finite(loss, "loss")
    if method == "fit":  # the fitted curve is monotone even where the runs are not
        f, l = frontier_arrays(points, name, monotone=False)
        fit = fit_power_law(points, name=name)
        top, bottom = fit.loss_at(f[0]), fit.loss_at(f[-1])
        if target < bottom:
            return {"flops": float(f[-1]), "bound": ">"}
        if target > top:
            return {"flops": float(f[0]), "bound": "<"}
        return {"flops": float(min(max(fit.flops_for_loss(target), f[0]), f[-1])), "bound": None}
    f, l = frontier_arrays(points, name)
    if target < l[-1]:
        return {"flops": float(f[-1]), "bound": ">"}
    if target > l[0]:
        return {"flops": float(f[0]), "bound": "<"}
    # Losses strictly fall: reverse them to interpolate log FLOPs as a function of loss.
    return {"flops": float(np.exp(np.interp(target, l[::-1], np.log(f)[::-1]))), "bound": None}


# -- per seed, then over seeds ---------------------------------------------------------------------
def equal_flops_delta(frontiers: Mapping, treatment: Mapping, method: str = "interpolate") -> dict:
    """Treatment final loss − frontier loss at the treatment's FLOPs, per seed (same seed on both
    sides), and their mean with a Student-t 95% interval over seeds (:func:`t_interval`).

    ``frontiers``: seed -> list of (flops, loss) runs; ``treatment``: seed -> (flops, loss).
    Negative means the treatment is better at equal FLOPs."""
    _method(method)
    seeds = _paired(frontiers, treatment)
    per_seed = []
    for s in seeds:
        c, loss = _point(treatment[s], f"treatment[{s!r}]")
        base = frontier_loss_at(frontiers[s], c, method, name=f"frontiers[{s!r}]")
        per_seed.append({"seed": s, "flops": c, "loss": loss, "frontier_loss": base, "delta": loss - base})
    out = t_interval([p["delta"] for p in per_seed])
    out.update(method=method, per_seed=per_seed)
    return out


def _geometric_mean(values: Sequence[float]) -> float:
    return float(np.exp(np.mean(np.log(values))))


def iso_loss_speedup(frontiers: Mapping, treatment: Mapping, method: str = "interpolate",
                     n_resamples: int = 10000, bootstrap_seed: int = 0) -> dict:
    """Frontier FLOPs needed to reach the treatment's final loss ÷ the treatment's FLOPs, per seed,
    and over seeds.

    ``frontiers``: seed -> list of (flops, loss) runs; ``treatment``: seed -> (flops, loss). Returns
    ``{"median", "ci95": [lo, hi], "ci95_t": [lo, hi], "geometric_mean", "bound", "value",
    "per_seed": [{"seed", "flops", "loss", "frontier_flops", "speedup", "bound"}], ...}``:

    * every seed bracketed (``bound`` None): ``geometric_mean`` = exp(mean log speedup) over the
      seeds; ``median`` / ``ci95`` / ``ci95_percentile`` = median / expanded percentile interval /
      plain 2.5–97.5% interval of the bootstrap of that statistic over seeds
      (:func:`bootstrap_mean` of the log speedups, exponentiated; deterministic in ``seed``);
      ``ci95_t`` = exp of the Student-t interval of the mean log speedup; ``value`` =
      ``geometric_mean``.
    * some seed not bracketed: no estimate and no interval (``median``, ``ci95``,
      ``ci95_percentile``, ``ci95_t``, ``geometric_mean`` None). ``bound`` is ``">"`` or ``"<"``
      when every unbracketed seed points the same way, and ``value`` is then the geometric mean of
      the per-seed values (bounds taken at their bound: the geometric mean rises with each, so it
      bounds the true one the same way);
      ``bound`` is ``"<>"`` with ``value`` None when they point both ways (widen the grid).
    """
    _method(method)
    seeds = _paired(frontiers, treatment)
    per_seed = []
    for s in seeds:
        c, loss = _point(treatment[s], f"treatment[{s!r}]")
        need = frontier_flops_for_loss(frontiers[s], loss, method, name=f"frontiers[{s!r}]")
        per_seed.append({"seed": s, "flops": c, "loss": loss, "frontier_flops": need["flops"],
                         "speedup": need["flops"] / c, "bound": need["bound"]})
    out = {"method": method, "n_seeds": len(seeds), "n_resamples": n_resamples, "bootstrap_seed": bootstrap_seed,
           "statistic": "geometric mean of per-seed speedups (mean log speedup); ci95: expanded percentile "
                        "bootstrap over seeds (Hesterberg 2015); ci95_percentile: plain percentile bootstrap; "
                        "ci95_t: Student t on the log speedups",
           "per_seed": per_seed}
    speedups = [p["speedup"] for p in per_seed]
    directions = {p["bound"] for p in per_seed} - {None}
    if directions:
        bound = directions.pop() if len(directions) == 1 else BOTH_BOUNDS
        out.update(median=None, ci95=None, ci95_percentile=None, ci95_t=None, geometric_mean=None, bound=bound,
                   value=None if bound == BOTH_BOUNDS else _geometric_mean(speedups))
        return out
    logs = np.log(speedups)
    boot = bootstrap_mean(logs, n_resamples, bootstrap_seed)
    t = t_interval(logs)
    out.update(median=math.exp(boot["median"]), ci95=[math.exp(v) for v in boot["ci95"]],
               ci95_percentile=[math.exp(v) for v in boot["ci95_percentile"]], bootstrap_tails=boot["tails"],
               ci95_t=[math.exp(v) for v in t["ci95"]], geometric_mean=_geometric_mean(speedups),
               bound=None)
    out["value"] = out["geometric_mean"]
    return out


def aa_control(frontiers: Mapping, replicates: Mapping, method: str = "interpolate",
               n_resamples: int = 10000, bootstrap_seed: int = 0) -> dict:
    """The A/A control: baseline replicates (one more fully scheduled baseline per seed, at the TST
    runs' length, with a different init/data seed, keyed by the frontier seed it is compared with)
    read as a treatment. Its iso-loss speedup should be 1: :func:`iso_loss_speedup` plus
    ``ci95_contains_1`` / ``ci95_percentile_contains_1`` / ``ci95_t_contains_1`` (None when a seed
    is unbracketed)."""
    out = iso_loss_speedup(frontiers, replicates, method, n_resamples, bootstrap_seed)
    out.update(_contains_one(out))
    return out


def _contains_one(iso: dict) -> dict:
    return {f"{key}_contains_1": None if iso.get(key) is None else bool(iso[key][0] <= 1.0 <= iso[key][1])
            for key in ("ci95", "ci95_percentile", "ci95_t")}


# -- the old metric, and wall-clock --------------------------------------------------------------
def first_crossing_speedup(xs: Sequence[float], losses: Sequence[float], target_loss: float,
                           tst_x: float) -> dict:
    """The old, biased metric, for comparison: where one long baseline curve *still in its stable
    phase* (no LR decay yet) first reaches ``target_loss`` (TST's final loss), linearly
    interpolated between evaluations, divided by TST's length ``tst_x`` (steps or FLOPs, the same
    unit as ``xs``). Biased in TST's favour: TST's final loss is measured after its decay, the
    baseline's before.

    ``{"value": x, "bound": b}``: b None when the curve crosses between two evaluations; ``">"``
    (x = last evaluation / tst_x) when it never gets there; ``"<"`` (x = first evaluation / tst_x)
    when it is already there at its first evaluation."""
    if len(xs) != len(losses) or not len(xs):
        raise ValueError(f"xs and losses must be non-empty and of equal length, got {len(xs)} and {len(losses)}")
    pts = [(_finite(x, f"xs[{i}]"), _finite(y, f"losses[{i}]")) for i, (x, y) in enumerate(zip(xs, losses))]
    if any(b[0] <= a[0] for a, b in zip(pts, pts[1:])):
        raise ValueError("xs must be strictly increasing")
    target, tx = _finite(target_loss, "target_loss"), _positive(tst_x, "tst_x")
    if pts[0][1] <= target:
        return {"value": pts[0][0] / tx, "bound": "<"}
    reached = first_crossing(pts, target)
    if reached is None:
        return {"value": pts[-1][0] / tx, "bound": ">"}
    return {"value": reached / tx, "bound": None}


def wall_clock_speedup(iso: dict, baseline_step_s: float, tst_mean_step_s: float) -> dict:
    """An iso-loss speedup (from :func:`iso_loss_speedup`) turned into wall-clock: every figure
    (estimate, interval ends, bound value) × baseline step time / mean TST step time. The step
    times are measured once; their noise is not propagated into the interval."""
    ratio = _positive(baseline_step_s, "baseline_step_s") / _positive(tst_mean_step_s, "tst_mean_step_s")

    def scaled(v):
        return None if v is None else (
            [x * ratio for x in v] if isinstance(v, list) else v * ratio)

    return {"median": scaled(iso["median"]), "ci95": scaled(iso["ci95"]),
            "ci95_percentile": scaled(iso.get("ci95_percentile")), "ci95_t": scaled(iso["ci95_t"]),
            "bound": iso["bound"], "value": scaled(iso["value"]), "step_time_ratio": ratio,
            "baseline_step_s": baseline_step_s, "tst_mean_step_s": tst_mean_step_s}


def mean_tst_step_s(phase1_step_s: float, phase2_step_s: float, superposition_fraction: float) -> float:
    """A TST run's mean step time: a fraction r of phase-1 steps, the rest ordinary steps."""
    r = _finite(superposition_fraction, "superposition_fraction")
    if not 0 <= r <= 1:
        raise ValueError(f"superposition_fraction must be in [0, 1], got {superposition_fraction!r}")
    return r * _positive(phase1_step_s, "phase1_step_s") + (1 - r) * _positive(phase2_step_s, "phase2_step_s")


# -- one row of frontier.json ----------------------------------------------------------------------
def summary_row(flavor: str, tokens_per_param: float, arm: str, frontiers: Mapping, treatment: Mapping, *,
                parameters: int | None = None, n_resamples: int = 10000, bootstrap_seed: int = 0,
                baseline_step_s: float | None = None, tst_mean_step_s: float | None = None) -> dict:
    """One row of ``frontier.json``: one arm (a TST setting, or the A/A control) of one model size.

    Keys: ``flavor``, ``tokens_per_param``, ``arm``, ``parameters``; ``equal_flops_delta``
    ({mean, ci95: [lo, hi], ...}, interpolated frontier, Student t); ``iso_loss_speedup``
    ({median, ci95: [lo, hi], ci95_t, bound, value, per_seed, ...}, interpolated frontier, bootstrap);
    ``iso_loss_speedup_fit`` (the same with the power-law fit, or ``{"error": why}`` when a seed's
    runs do not determine the fit); ``wall_clock_speedup`` when both step times are given (else
    None); ``frontiers`` (every run, for the plot and for re-analysis)."""
    if not isinstance(flavor, str) or not flavor:
        raise ValueError(f"flavor must be a non-empty string, got {flavor!r}")
    if not isinstance(arm, str) or not arm:
        raise ValueError(f"arm must be a non-empty string (e.g. 's6_r0.3', 's4_r0.3', {AA_ARM!r}), got {arm!r}")
    tpp = _positive(tokens_per_param, "tokens_per_param")
    if parameters is not None and (not isinstance(parameters, (int, np.integer)) or parameters <= 0):
        raise ValueError(f"parameters must be a positive integer or None, got {parameters!r}")
    if (baseline_step_s is None) != (tst_mean_step_s is None):
        raise ValueError("baseline_step_s and tst_mean_step_s: give both (for the wall-clock speedup) or neither")
    def not_computed(method: str, why: str) -> dict:
        return {"method": method, "median": None, "ci95": None, "ci95_percentile": None, "ci95_t": None,
                "geometric_mean": None,
                "bound": None, "value": None, "error": why}

    try:
        iso = iso_loss_speedup(frontiers, treatment, "interpolate", n_resamples, bootstrap_seed)
    except ValueError as e:  # e.g. a seed's runs do not fall with FLOPs: the interpolation has no inverse
        iso = not_computed("interpolate", str(e))
    try:
        iso_fit = iso_loss_speedup(frontiers, treatment, "fit", n_resamples, bootstrap_seed)
    except FitError as e:  # recorded in the row, not hidden: the interpolated figure stands alone
        iso_fit = not_computed("fit", str(e))
    row = {
        "flavor": flavor, "tokens_per_param": tpp, "arm": arm, "parameters": parameters,
        "equal_flops_delta": equal_flops_delta(frontiers, treatment, "interpolate"),
        "iso_loss_speedup": iso,
        "iso_loss_speedup_fit": iso_fit,
        "wall_clock_speedup": None if baseline_step_s is None or "error" in iso else
        wall_clock_speedup(iso, baseline_step_s, tst_mean_step_s),
        "frontiers": [{"seed": s, "runs": [[float(c), float(v)]
                                           for c, v in zip(*frontier_arrays(frontiers[s], monotone=False))]}
                      for s in sorted(treatment)],
        "treatment": [{"seed": s, "flops": float(treatment[s][0]), "loss": float(treatment[s][1])}
                      for s in sorted(treatment)],
    }
    if arm == AA_ARM and "error" not in iso:  # the control's pass mark, beside its figures
        iso.update(_contains_one(iso))
    return row


# -- the figure ---------------------------------------------------------------------------------------
def _speedup_marks(ax, x, est: dict, color, label):
    """One iso-loss speedup at ``x``: the median with its bootstrap ci95 (thick bar) and the
    Student-t ci95_t (thin, pale bar), or a triangle at a bound."""
    if est.get("bound") in (">", "<"):
        ax.plot([x], [est["value"]], "^" if est["bound"] == ">" else "v", color=color, label=f"{label} (bound)")
    elif est.get("median") is not None:
        m = est["median"]
        (lo, hi), (tlo, thi) = est["ci95"], est["ci95_t"]
        ax.errorbar([x], [m], yerr=[[m - tlo], [thi - m]], fmt="none", ecolor=color, alpha=0.4, lw=1, capsize=2)
        ax.errorbar([x], [m], yerr=[[m - lo], [hi - m]], fmt="o", color=color, lw=2.5, capsize=3, label=label)


def _size_panel(ax, by_params: bool, flavors: list, no_effect: float) -> None:
    """What the two panels against model size share: one legend entry per label, the line of no
    effect, and the size axis (parameters on a log scale, or the flavors as categories)."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7)
    ax.axhline(no_effect, color="k", lw=0.8)
    if by_params:
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
    else:
        ax.set_xticks(range(len(flavors)), flavors)
        ax.set_xlabel("model")


def plot_frontier(result: dict, path: str) -> None:
    """:func:`frontier_figure` saved to ``path``."""
    frontier_figure(result).savefig(path, dpi=110)


def frontier_figure(result: dict) -> Figure:
    """``result["rows"]`` (rows of :func:`summary_row`) drawn: per model size, every frontier run
    (one grey line per seed) with each arm's per-seed points and its mean ± t-interval in FLOPs and
    loss; then each arm's iso-loss speedup (median, bootstrap ci95; triangles for bounds)
    against model size, with the Student-t ci95_t as a thin pale bar; last, each arm's equal-FLOPs
    loss difference (mean and Student-t ci95, the seeds as dots) against model size."""
    rows = result.get("rows") if isinstance(result, Mapping) else None
    if not rows:
        raise ValueError("result must be a mapping with a non-empty 'rows' list of summary_row() rows")
    flavors = list(dict.fromkeys(r["flavor"] for r in rows))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    colors = {a: f"C{i}" for i, a in enumerate(arms)}
    names = {a: "A/A control" if a == AA_ARM else a for a in arms}
    fig = Figure(figsize=(4.5 * (len(flavors) + 2), 4.2))
    axes = fig.subplots(1, len(flavors) + 2, squeeze=False)[0]
    for ax, flavor in zip(axes, flavors):
        these = [r for r in rows if r["flavor"] == flavor]
        for k, fr in enumerate(these[0]["frontiers"]):
            c, l = zip(*fr["runs"])
            ax.plot(c, l, "o-", color="0.55", alpha=0.7, ms=3, lw=1, label="baseline runs (one line a seed)" if k == 0 else None)
        for r in these:
            pts = r["treatment"]
            cs, ls = [p["flops"] for p in pts], [p["loss"] for p in pts]
            ax.plot(cs, ls, ".", color=colors[r["arm"]], alpha=0.5)
            loss_ci = t_interval(ls)
            ax.errorbar([float(np.mean(cs))], [loss_ci["mean"]],
                        yerr=[[loss_ci["mean"] - loss_ci["ci95"][0]], [loss_ci["ci95"][1] - loss_ci["mean"]]],
                        fmt="s", color=colors[r["arm"]], capsize=3, label=f"{names[r['arm']]} (mean, 95% t)")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # a grid spanning < 10× labels its minor ticks: they collide
        ax.set_xlabel("training FLOPs")
        ax.set_ylabel("final validation loss")
        ax.set_title(f"{flavor}, {these[0]['tokens_per_param']:.1f} tokens/param")
        ax.legend(fontsize=7)
    ax = axes[-2]
    # by parameters on a log axis when there is a size axis; one size: a category
    by_params = len(flavors) > 1 and all(r.get("parameters") for r in rows)
    for k, arm in enumerate(arms):
        shift = (k - (len(arms) - 1) / 2) * 0.08  # arms side by side, not on top of each other
        for r in (r for r in rows if r["arm"] == arm):
            x = r["parameters"] * math.exp(shift) if by_params else flavors.index(r["flavor"]) + shift
            # the interpolated speedup; where a seed's runs do not fall with FLOPs, the fitted one
            est = next((e for e in (r["iso_loss_speedup"], r.get("iso_loss_speedup_fit"))
                        if e and not e.get("error")), None)
            if est is not None:
                _speedup_marks(ax, x, est, colors[arm], names[arm] if est is r["iso_loss_speedup"] else f"{names[arm]} (fit)")
    _size_panel(ax, by_params, flavors, no_effect=1.0)
    ax.set_yscale("log")  # ratios; with few seeds a t-interval can span a decade
    ax.set_ylabel("iso-loss speedup (bootstrap 95%; pale: t 95%)")
    ax.set_title("frontier FLOPs to TST's loss / TST FLOPs")
    # the equal-FLOPs difference: defined for every seed, even where a frontier cannot be inverted
    ax = axes[-1]
    for k, arm in enumerate(arms):
        shift = (k - (len(arms) - 1) / 2) * 0.08
        for r in (r for r in rows if r["arm"] == arm):
            d = r.get("equal_flops_delta") or {}
            if d.get("mean") is None:
                continue
            x = r["parameters"] * math.exp(shift) if by_params else flavors.index(r["flavor"]) + shift
            lo, hi = d["ci95"]
            ax.errorbar([x], [d["mean"]], yerr=[[d["mean"] - lo], [hi - d["mean"]]], fmt="o", color=colors[arm],
                        capsize=3, label=names[arm])
            ax.plot([x] * len(d["per_seed"]), [p["delta"] for p in d["per_seed"]], ".", color=colors[arm], alpha=0.5)
    _size_panel(ax, by_params, flavors, no_effect=0.0)
    ax.set_ylabel("TST - frontier val loss at equal FLOPs (nats)")
    ax.set_title("equal-FLOPs difference (t 95%; dots: seeds)")
    fig.tight_layout()
    return fig
