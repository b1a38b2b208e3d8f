"""Small-sample statistics shared by every stage: bootstrap CIs, correlations, effect sizes.

Every effect the toolkit reports carries a 95% interval from here, and every :class:`Estimate` says how its interval
was made (``ci``). The resampling is :func:`scipy.stats.bootstrap`'s:

* one sample (a mean over 20-200 items), two samples, paired differences: BCa (bias-corrected and accelerated;
  on skewed 20-40 item sets it covers a little closer to 95% than the percentile interval, see
  ``perf/bench_stats.py --coverage``; percentile when BCa is undefined);
* correlations: scipy's paired percentile bootstrap, enveloped with a Fisher-z interval (:func:`correlation`);
* designs scipy has no function for (runs as clusters of checkpoints, arms x runs x paired items, bases on top):
  the *unit indices* are bootstrapped by scipy (each unit set on its own) and a statistic pools the drawn units
  (:func:`_index_replicates`); the interval is then built from that bootstrap distribution;
* point correlations from :func:`scipy.stats.pearsonr` / :func:`scipy.stats.spearmanr`; proportions from
  ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``; the permutation p of a correlation from
  :func:`scipy.stats.permutation_test` (:func:`permutation_p`).

Resampling is seeded, so reports are reproducible.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

ArrayLike = Sequence[float] | np.ndarray

# How each interval is made (``Estimate.ci``).
CI_BCA = "BCa bootstrap"
CI_PERCENTILE = "percentile bootstrap"
CI_NONE = "none (too few distinct values for an interval)"
CI_CORRELATION = "envelope of a percentile pairs bootstrap and a Fisher-z interval"
CI_CLUSTER = "cluster bootstrap, Fisher-z with t on clusters - 1 df"
CI_WILSON = "Wilson score"
CI_ARMS = "percentile bootstrap: runs within arm, items paired"
CI_NESTED = "percentile bootstrap: bases, then runs within arm and items paired"


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval, the sample size behind it and how the interval was made."""

    value: float
    lo: float
    hi: float
    n: int
    ci: str = ""

    def as_dict(self, prefix: str = "", with_ci: bool = False) -> dict[str, float | int | str]:
        """``{"value", "lo", "hi", "n"}`` (plus ``"ci"`` with ``with_ci``), keys optionally prefixed."""
        fields: dict[str, float | int | str] = {
            "value": self.value,
            "lo": self.lo,
            "hi": self.hi,
            "n": self.n,
        }
        if with_ci:
            fields["ci"] = self.ci
        return {f"{prefix}{k}": v for k, v in fields.items()}

    def __str__(self) -> str:
        return f"{self.value:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}] (n={self.n})"


def _nan(n: int = 0, ci: str = CI_NONE) -> Estimate:
    return Estimate(float("nan"), float("nan"), float("nan"), n, ci)


def _clean(x: ArrayLike) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    return a[np.isfinite(a)]


def _takes_axis(stat: Callable) -> bool:
    """Whether ``stat`` can be called with ``axis=`` (then scipy evaluates it on all resamples at once)."""
    try:
        return "axis" in inspect.signature(stat).parameters
    except (TypeError, ValueError):
        return False


def _scipy_interval(
    samples: tuple[np.ndarray, ...],
    statistic: Callable,
    n_boot: int,
    level: float,
    seed: int,
    paired: bool = False,
    vectorized: bool | None = None,
    method: str = "BCa",
) -> tuple[float, float, str]:
    """``scipy.stats.bootstrap`` interval (BCa by default); the percentile interval of the same draws where BCa
    is undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # BCa's acceleration on a degenerate jackknife
        res = sps.bootstrap(
            samples,
            statistic,
            n_resamples=n_boot,
            confidence_level=level,
            method=method,
            paired=paired,
            vectorized=vectorized,
            rng=np.random.default_rng(seed),
        )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if math.isfinite(lo) and math.isfinite(hi):
        return lo, hi, CI_BCA if method == "BCa" else CI_PERCENTILE
    boots = np.asarray(res.bootstrap_distribution, dtype=float)
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        return float("nan"), float("nan"), CI_NONE
    plo, phi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(plo), float(phi), CI_PERCENTILE


def bootstrap(
    values: ArrayLike,
    stat: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """BCa bootstrap CI of ``stat`` over one sample (``scipy.stats.bootstrap``).

    NaNs are dropped. Fewer than 2 values, or all values equal, give the degenerate interval ``[value, value]``
    (``ci`` says so). ``stat`` may take ``axis=`` (evaluated on all resamples at once) or not (one call each).
    """
    a = _clean(values)
    if a.size == 0:
        return _nan()
    value = float(stat(a))
    if a.size < 2 or np.all(a == a[0]):
        return Estimate(value, value, value, int(a.size), CI_NONE)
    lo, hi, how = _scipy_interval((a,), stat, n_boot, level, seed, vectorized=_takes_axis(stat))
    return Estimate(value, lo, hi, int(a.size), how)


def bootstrap_diff(
    a: ArrayLike,
    b: ArrayLike,
    stat: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 2000,
    seed: int = 0,
) -> Estimate:
    """CI of ``stat(a) - stat(b)`` for two independent samples (each resampled on its own; BCa)."""
    x, y = _clean(a), _clean(b)
    if x.size == 0 or y.size == 0:
        return _nan()
    value = float(stat(x) - stat(y))
    n = int(min(x.size, y.size))
    if x.size < 2 or y.size < 2 or (np.all(x == x[0]) and np.all(y == y[0])):
        return Estimate(value, value, value, n, CI_NONE)
    if _takes_axis(stat):

        def diff(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
            return stat(u, axis=axis) - stat(v, axis=axis)

        lo, hi, how = _scipy_interval((x, y), diff, n_boot, 0.95, seed, vectorized=True)
    else:
        lo, hi, how = _scipy_interval(
            (x, y), lambda u, v: stat(u) - stat(v), n_boot, 0.95, seed, vectorized=False
        )
    return Estimate(value, lo, hi, n, how)


def paired_diff(a: ArrayLike, b: ArrayLike, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """CI of the mean of ``a - b`` over paired items (same inputs under two models)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in shape: {x.shape} vs {y.shape}")
    return bootstrap(x - y, n_boot=n_boot, seed=seed)


# --------------------------------------------------------------------------------------------- correlation
def _constant(v: np.ndarray) -> bool:
    return v.size == 0 or bool(np.all(v == v[0]))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r (``scipy.stats.pearsonr``); NaN for fewer than 2 points or a constant variable."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 2 or _constant(x) or _constant(y):
        return float("nan")
    return float(sps.pearsonr(x, y).statistic)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rho (``scipy.stats.spearmanr``); NaN for fewer than 2 points or a constant variable."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 2 or _constant(x) or _constant(y):
        return float("nan")
    return float(sps.spearmanr(x, y).statistic)


def _rowwise_r(x: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    """Correlation along the last axis of each row (NaN where a row is constant)."""
    if method == "spearman":
        x, y = sps.rankdata(x, axis=-1), sps.rankdata(y, axis=-1)
    xc = x - x.mean(-1, keepdims=True)
    yc = y - y.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(-1) / np.sqrt((xc**2).sum(-1) * (yc**2).sum(-1))
    return np.clip(r, -1.0, 1.0)


def _fisher_interval(r: float, n: int, method: str, z: float = 1.96) -> tuple[float, float]:
    """Fisher-z interval (Bonett-Wright standard error for Spearman); |r| = 1 is treated as 0.999."""
    rc = float(np.clip(r, -0.999, 0.999))
    se = math.sqrt((1 + rc**2 / 2) / (n - 3)) if method == "spearman" else 1 / math.sqrt(n - 3)
    return math.tanh(math.atanh(rc) - z * se), math.tanh(math.atanh(rc) + z * se)


def _method(method: str) -> Callable[[np.ndarray, np.ndarray], float]:
    if method not in ("pearson", "spearman"):
        raise ValueError(f"correlation method must be pearson or spearman, not {method!r}")
    return pearson if method == "pearson" else spearman


def correlation(
    x: ArrayLike, y: ArrayLike, method: str = "spearman", n_boot: int = 2000, seed: int = 0
) -> Estimate:
    """Pearson or Spearman correlation with a 95% CI: the envelope of a pairs bootstrap and a Fisher-z interval.

    On few points the bootstrap alone is overconfident (4 perfectly ordered points resample to r = 1 every
    time); the Fisher-z interval keeps it honest. The bootstrap part is scipy's percentile interval, not BCa:
    on a bounded, discrete statistic near +-1 and 8-10 points BCa's bias correction jumps (a Spearman of -0.90
    over 8 points got an upper end of +0.23 against Fisher's -0.43). Fewer than 4 points give [-1, 1]; a constant variable gives
    NaN throughout. Points with a missing x or y are dropped.
    """
    fn = _method(method)
    xa, ya = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    value = fn(xa, ya)
    if not np.isfinite(value):  # a constant variable: no correlation to speak of, and no interval
        return _nan(int(xa.size))
    if xa.size < 4:
        return Estimate(value, -1.0, 1.0, int(xa.size), CI_NONE)  # too few points for any interval: say so

    def r(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return _rowwise_r(u, v, method)

    lo, hi, _ = _scipy_interval((xa, ya), r, n_boot, 0.95, seed, True, True, "percentile")
    flo, fhi = _fisher_interval(value, int(xa.size), method)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = flo, fhi
    return Estimate(value, float(min(lo, flo)), float(max(hi, fhi)), int(xa.size), CI_CORRELATION)


def permutation_p(
    x: ArrayLike, y: ArrayLike, method: str = "spearman", n_resamples: int = 400_000, seed: int = 0
) -> float:
    """Two-sided p of the correlation under random pairing (``scipy.stats.permutation_test`` over pairings).

    Exact over all n! pairings when there are no more than ``n_resamples`` of them (n <= 9 at the default),
    else Monte Carlo (scipy's ``(hits + 1) / (draws + 1)``, never 0). Two-sided as ``P(|r*| >= |r|)``. Points
    with a missing x or y are dropped; fewer than 3 points, or a constant variable, give NaN.
    """
    _method(method)
    xa, ya = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    if xa.size < 3 or _constant(xa) or _constant(ya):
        return float("nan")
    if method == "spearman":  # ranks do not change under re-pairing: rank once
        xa, ya = sps.rankdata(xa), sps.rankdata(ya)

    def abs_r(yp: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.abs(_rowwise_r(np.broadcast_to(xa, yp.shape), yp, "pearson"))

    res = sps.permutation_test(
        (ya,),
        abs_r,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="greater",
        rng=np.random.default_rng(seed),
    )
    return float(res.pvalue)


def cohens_d(a: ArrayLike, b: ArrayLike) -> float:
    """Standardised mean difference (pooled SD) of ``a`` over ``b``."""
    x, y = _clean(a), _clean(b)
    if x.size < 2 or y.size < 2:
        return float("nan")
    pooled = np.sqrt(((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / (x.size + y.size - 2))
    return float((x.mean() - y.mean()) / pooled) if pooled > 0 else float("nan")


def wilson(successes: int, n: int, level: float = 0.95) -> Estimate:
    """Wilson score interval for a proportion (``scipy.stats.binomtest``; well-behaved at 0, 1 and small n)."""
    if n == 0:
        return _nan(0, CI_WILSON)
    ci = sps.binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return Estimate(successes / n, float(ci.low), float(ci.high), int(n), CI_WILSON)


# ------------------------------------------------------------------------ resampling units (clusters, arms)
def _counts(idx: np.ndarray, n_units: int) -> np.ndarray:
    """``[rows, n_units]`` counts: how often each unit appears in each row of drawn unit indices."""
    idx = np.atleast_2d(idx).astype(np.int64)
    rows = idx.shape[0]
    flat = (idx + n_units * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n_units).reshape(rows, n_units).astype(float)


def _index_replicates(
    sizes: Sequence[int], statistic: Callable[..., np.ndarray], n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap distribution (``[n_boot]``) of ``statistic(*drawn)``, the unit indices drawn by scipy.

    Unit set k (runs of an arm, items, clusters, bases) has ``sizes[k]`` units; ``scipy.stats.bootstrap`` resamples
    each set's indices with replacement, on its own, and ``statistic`` receives, per set, the ``[n_boot, sizes[k]]``
    drawn indices and pools the units they name (:func:`_counts` turns them into weights). A set of one unit is
    drawn (index 0) in every replicate.
    """
    many = [s >= 2 for s in sizes]

    def pooled(*drawn: np.ndarray, axis: int = -1) -> np.ndarray:
        it = iter(drawn)
        rows = np.atleast_2d(drawn[0]).shape[0] if drawn else n_boot
        full = [np.atleast_2d(next(it)) if m else np.zeros((rows, 1), np.int64) for m in many]
        return statistic(*full)

    if not any(many):
        return np.asarray(pooled(), dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)  # NaN replicates: handled by the callers
        res = sps.bootstrap(
            tuple(np.arange(s) for s, m in zip(sizes, many, strict=True) if m),
            pooled,
            n_resamples=n_boot,
            vectorized=True,
            paired=False,
            method="percentile",
            rng=rng,
        )
    return np.asarray(res.bootstrap_distribution, dtype=float)


def _percentile(boots: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def _resampled_means(m: np.ndarray, runs: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``nanmean(m[resampled runs][:, resampled items])`` for each row of run and item counts."""
    ok = np.isfinite(m)
    num = np.einsum("br,ri,bi->b", runs, np.where(ok, m, 0.0), items)
    den = np.einsum("br,ri,bi->b", runs, ok.astype(float), items)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def _paired_arm_boots(a: np.ndarray, b: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Replicates of ``mean(a) - mean(b)``: runs resampled within each arm, the shared items resampled once for
    both arms (paired)."""

    def diff(runs_a: np.ndarray, runs_b: np.ndarray, items: np.ndarray) -> np.ndarray:
        ra, rb, it = _counts(runs_a, a.shape[0]), _counts(runs_b, b.shape[0]), _counts(items, a.shape[1])
        return _resampled_means(a, ra, it) - _resampled_means(b, rb, it)

    return _index_replicates((a.shape[0], b.shape[0], a.shape[1]), diff, n_boot, rng)


def arm_difference(a: ArrayLike, b: ArrayLike, n_boot: int = 4000, seed: int = 0) -> Estimate:
    """Mean of arm ``a`` minus arm ``b``; each is a ``[runs, items]`` array over the same items.

    The 95% interval resamples both sources of noise: the runs (fine-tune seeds, with replacement, within each
    arm) and the items (the same resampled item indices for both arms, since the items are shared); a percentile
    interval of that two-level bootstrap (scipy has no function for this design; the draws are scipy's, see
    :func:`_index_replicates`). ``n`` is the smaller number of runs.
    """
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"arms were measured on different item sets ({a.shape[1]} vs {b.shape[1]} items)")
    value = float(np.nanmean(a) - np.nanmean(b))
    lo, hi = _percentile(_paired_arm_boots(a, b, n_boot, np.random.default_rng(seed)))
    return Estimate(value, lo, hi, int(min(a.shape[0], b.shape[0])), CI_ARMS)


# ------------------------------------------------------------------------------------ clustered data
def _weighted_ranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mid-ranks of ``x`` in each row's resample, where point j appears ``w[:, j]`` times (ties averaged).

    Equal to ``scipy.stats.rankdata`` of the resample with its repeated points written out, without writing them
    out (clusters may differ in size, so the resamples differ in length).
    """
    order = np.argsort(x, kind="stable")
    xs = x[order]
    ends = np.r_[np.flatnonzero(np.diff(xs)), xs.size - 1]  # last position of each group of tied values
    group = np.empty(x.size, dtype=int)
    group[order] = np.repeat(np.arange(ends.size), np.diff(np.r_[-1, ends]))
    upto = np.cumsum(w[:, order], axis=1)[:, ends]  # weight at or below each tied group
    below = np.c_[np.zeros(len(w)), upto[:, :-1]]
    return (below + (upto - below + 1) / 2)[:, group]


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r in each row of weights ``w`` (``[n_boot, n]``); x and y may be ``[n]`` or ``[n_boot, n]``."""
    tot = w.sum(1, keepdims=True)
    xc = x - (w * x).sum(1, keepdims=True) / tot
    yc = y - (w * y).sum(1, keepdims=True) / tot
    wxc = w * xc
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (wxc * yc).sum(1) / np.sqrt((wxc * xc).sum(1) * (w * yc**2).sum(1))
    return np.clip(r, -1.0, 1.0)


def _pooled_correlation(
    x: np.ndarray, y: np.ndarray, cluster: np.ndarray, always: np.ndarray, method: str
) -> Callable[[np.ndarray], np.ndarray]:
    """Statistic over cluster draws: ``drawn[n_boot, G]`` cluster indices -> the correlation of all points of the
    drawn clusters (a cluster drawn k times counts k times; ``always`` points once in every replicate)."""
    n_clusters = int(cluster.max()) + 1 if cluster.size else 0

    def stat(drawn: np.ndarray) -> np.ndarray:
        w = np.ones((drawn.shape[0], x.size))
        w[:, ~always] = _counts(drawn, n_clusters)[:, cluster]
        if method == "spearman":
            return _weighted_pearson(_weighted_ranks(x, w), _weighted_ranks(y, w), w)
        return _weighted_pearson(x, y, w)

    return stat


def _cluster_interval(value: float, boots: np.ndarray, n_clusters: int, level: float) -> tuple[float, float]:
    """Fisher-z interval with the cluster-bootstrap standard error and a t quantile on ``n_clusters - 1`` df.

    ``tanh(atanh(r) +- t * sd(atanh(r*)) * sqrt(G / (G - 1)))``. Percentile intervals of a correlation undercover
    when there are few clusters (the bootstrap spread is too narrow by about ``sqrt((G - 1) / G)``, and skewed
    near +-1); the z scale removes the skew, the factor and the t quantile the small-G narrowness. |r| is capped
    at 0.999 before atanh.
    """
    z = np.arctanh(np.clip(boots[np.isfinite(boots)], -0.999, 0.999))
    if z.size < 2:
        return -1.0, 1.0
    se = z.std(ddof=1) * math.sqrt(n_clusters / (n_clusters - 1))
    half = float(sps.t.ppf(0.5 + level / 2, n_clusters - 1) * se)
    centre = math.atanh(float(np.clip(value, -0.999, 0.999)))
    return min(math.tanh(centre - half), value), max(math.tanh(centre + half), value)


def cluster_correlation(
    x: ArrayLike,
    y: ArrayLike,
    clusters: ArrayLike,
    method: str = "spearman",
    n_boot: int = 2000,
    seed: int = 0,
    always: ArrayLike | None = None,
    level: float = 0.95,
) -> Estimate:
    """Pooled correlation of all points, with a CI that resamples whole clusters (runs), not points.

    The value is :func:`spearman` / :func:`pearson` over every point. Checkpoints of one run are not independent
    (they share the run's seed and drift together), so the interval comes from a cluster bootstrap: scipy draws
    cluster indices with replacement, every drawn cluster's points enter together, the correlation is recomputed
    (:func:`_pooled_correlation`); the interval is :func:`_cluster_interval` (Fisher z, bootstrap SE, t on G - 1
    df). Points flagged in ``always`` (e.g. the base model's step-0 point, shared by every run: pass it once per
    base) enter every resample exactly once and count as no cluster. ``n`` is the number of clusters. Fewer than
    3 clusters give [-1, 1] (too few runs for any interval: said, not hidden); a constant variable gives NaN
    throughout. Points with a missing x or y are dropped.
    """
    fn = _method(method)
    xa, ya = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    keep = np.zeros(xa.size, bool) if always is None else np.asarray(always, dtype=bool).ravel()
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya, keep, ca = xa[ok], ya[ok], keep[ok], np.asarray(clusters).ravel()[ok]
    labels, cid = np.unique(ca[~keep], return_inverse=True)
    g = labels.size
    value = fn(xa, ya)
    if not np.isfinite(value):
        return _nan(g)
    if g < 3:
        return Estimate(value, -1.0, 1.0, g, CI_NONE)
    stat = _pooled_correlation(xa, ya, cid, keep, method)
    boots = _index_replicates((g,), stat, n_boot, np.random.default_rng(seed))
    lo, hi = _cluster_interval(value, boots, g, level)
    return Estimate(value, lo, hi, g, CI_CLUSTER)


def within_correlation(
    x: ArrayLike,
    y: ArrayLike,
    clusters: ArrayLike,
    method: str = "spearman",
    n_boot: int = 2000,
    seed: int = 0,
) -> Estimate:
    """Mean over clusters (runs) of the correlation within each cluster, with a cluster-bootstrap CI.

    The pooled correlation (:func:`cluster_correlation`) mixes two things: whether x and y move together inside a
    run, and whether runs (arms) that end up far apart in x also end up far apart in y. This one keeps only the
    first. Clusters with fewer than 3 points or a constant variable are skipped; ``n`` is the number of clusters
    used. The interval resamples the per-cluster r's (their mean, :func:`_cluster_interval`); fewer than 3
    clusters give [-1, 1], none gives NaN.
    """
    fn = _method(method)
    xa, ya, ca = (np.asarray(v).ravel() for v in (x, y, clusters))
    xa, ya = xa.astype(float), ya.astype(float)
    ok = np.isfinite(xa) & np.isfinite(ya)
    rs = np.array(
        [fn(xa[ok & (ca == c)], ya[ok & (ca == c)]) for c in np.unique(ca) if (ok & (ca == c)).sum() >= 3]
    )
    rs = rs[np.isfinite(rs)]
    if rs.size == 0:
        return _nan()
    value = float(rs.mean())
    if rs.size < 3:
        return Estimate(value, -1.0, 1.0, int(rs.size), CI_NONE)
    boots = _index_replicates(
        (rs.size,), lambda drawn: rs[drawn].mean(1), n_boot, np.random.default_rng(seed)
    )
    lo, hi = _cluster_interval(value, boots, rs.size, 0.95)
    return Estimate(value, lo, hi, int(rs.size), CI_CLUSTER)


def nested_arm_difference(
    a_by_base: Sequence[ArrayLike], b_by_base: Sequence[ArrayLike], n_boot: int = 4000, seed: int = 0
) -> Estimate:
    """:func:`arm_difference` with base models as the top level: mean over bases of (mean a - mean b).

    ``a_by_base[i]`` and ``b_by_base[i]`` are the ``[runs, items]`` arrays of arm a and arm b fine-tuned from base
    i, over that base's items (shared by its two arms; bases may use different items). The 95% interval resamples
    bases, then within each drawn base the runs of each arm and the (paired) items. Slot m of bootstrap replicate
    j takes the within-base replicate ``(j + m) % n_boot``, so a base drawn twice gets two independent inner
    draws. ``n`` is the number of bases. With one base this is :func:`arm_difference` (same value, same
    interval). A percentile interval over 2 or 3 bases is optimistic (it cannot see base-to-base spread it did not
    sample): state ``n`` beside it.
    """
    if len(a_by_base) != len(b_by_base) or not a_by_base:
        raise ValueError(
            f"need the same, non-zero number of bases per arm ({len(a_by_base)} vs {len(b_by_base)})"
        )
    pairs = [
        (np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float)))
        for a, b in zip(a_by_base, b_by_base, strict=True)
    ]
    for i, (a, b) in enumerate(pairs):
        if a.shape[1] != b.shape[1]:
            raise ValueError(
                f"base {i}: arms were measured on different item sets ({a.shape[1]} vs {b.shape[1]} items)"
            )
    value = float(np.mean([np.nanmean(a) - np.nanmean(b) for a, b in pairs]))
    rng = np.random.default_rng(seed)
    inner = np.array([_paired_arm_boots(a, b, n_boot, rng) for a, b in pairs])  # [bases, n_boot]
    n_bases = len(pairs)
    if n_bases == 1:
        lo, hi = _percentile(inner[0])
        return Estimate(value, lo, hi, 1, CI_ARMS)
    slots = (np.arange(n_boot)[:, None] + np.arange(n_bases)) % n_boot  # [n_boot, bases]

    def over_bases(drawn: np.ndarray) -> np.ndarray:
        return inner[drawn, slots[: drawn.shape[0]]].mean(1)

    lo, hi = _percentile(_index_replicates((n_bases,), over_bases, n_boot, rng))
    return Estimate(value, lo, hi, n_bases, CI_NESTED)
