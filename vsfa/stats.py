"""Small-sample statistics shared by every stage: bootstrap CIs, correlations, effect sizes.

Every effect the toolkit reports carries a 95% interval from here. Resampling is seeded, so reports are
reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

ArrayLike = Sequence[float] | np.ndarray


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval and the sample size behind it."""

    value: float
    lo: float
    hi: float
    n: int

    def as_dict(self, prefix: str = "") -> dict[str, float | int]:
        """``{"value", "lo", "hi", "n"}``, keys optionally prefixed (``prefix + "lo"``)."""
        fields = {"value": self.value, "lo": self.lo, "hi": self.hi, "n": self.n}
        return {f"{prefix}{k}": v for k, v in fields.items()}

    def __str__(self) -> str:
        return f"{self.value:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}] (n={self.n})"


def _clean(x: ArrayLike) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    return a[np.isfinite(a)]


def bootstrap(
    values: ArrayLike,
    stat: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Percentile bootstrap CI of ``stat`` over one sample (NaNs dropped; n<2 gives a degenerate interval)."""
    a = _clean(values)
    if a.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    value = float(stat(a))
    if a.size < 2:
        return Estimate(value, value, value, int(a.size))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    boots = np.array([stat(a[i]) for i in idx])
    lo, hi = np.nanquantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    return Estimate(value, float(lo), float(hi), int(a.size))


def bootstrap_diff(
    a: ArrayLike,
    b: ArrayLike,
    stat: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 2000,
    seed: int = 0,
) -> Estimate:
    """CI of ``stat(a) - stat(b)`` for two independent samples (each resampled on its own)."""
    x, y = _clean(a), _clean(b)
    if x.size == 0 or y.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    value = float(stat(x) - stat(y))
    rng = np.random.default_rng(seed)
    boots = np.array(
        [
            stat(x[rng.integers(0, x.size, x.size)]) - stat(y[rng.integers(0, y.size, y.size)])
            for _ in range(n_boot)
        ]
    )
    lo, hi = np.nanquantile(boots, [0.025, 0.975])
    return Estimate(value, float(lo), float(hi), int(min(x.size, y.size)))


def paired_diff(a: ArrayLike, b: ArrayLike, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """CI of the mean of ``a - b`` over paired items (same inputs under two models)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in shape: {x.shape} vs {y.shape}")
    return bootstrap(x - y, n_boot=n_boot, seed=seed)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import rankdata

    return pearson(rankdata(x), rankdata(y))


def _fisher_interval(r: float, n: int, method: str, z: float = 1.96) -> tuple[float, float]:
    """Fisher-z interval (Bonett-Wright standard error for Spearman); |r| = 1 is treated as 0.999."""
    rc = float(np.clip(r, -0.999, 0.999))
    se = math.sqrt((1 + rc**2 / 2) / (n - 3)) if method == "spearman" else 1 / math.sqrt(n - 3)
    return math.tanh(math.atanh(rc) - z * se), math.tanh(math.atanh(rc) + z * se)


def correlation(
    x: ArrayLike, y: ArrayLike, method: str = "spearman", n_boot: int = 2000, seed: int = 0
) -> Estimate:
    """Pearson or Spearman correlation with a 95% CI: the envelope of a pairs bootstrap and a Fisher-z interval.

    On few points the bootstrap alone is overconfident (4 perfectly ordered points resample to r = 1 every
    time); the Fisher-z interval keeps it honest. Fewer than 4 points give [-1, 1]; a constant variable gives
    NaN throughout.
    """
    fn = {"pearson": pearson, "spearman": spearman}[method]
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    value = fn(xa, ya)
    if not np.isfinite(value):  # a constant variable: no correlation to speak of, and no interval
        return Estimate(float("nan"), float("nan"), float("nan"), int(xa.size))
    if xa.size < 4:
        return Estimate(value, -1.0, 1.0, int(xa.size))  # too few points for any interval: say so
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, xa.size, xa.size)
        r = fn(xa[i], ya[i])
        if np.isfinite(r):
            boots.append(r)
    flo, fhi = _fisher_interval(value, int(xa.size), method)
    lo, hi = np.quantile(boots, [0.025, 0.975]) if boots else (flo, fhi)
    return Estimate(value, float(min(lo, flo)), float(max(hi, fhi)), int(xa.size))


def cohens_d(a: ArrayLike, b: ArrayLike) -> float:
    """Standardised mean difference (pooled SD) of ``a`` over ``b``."""
    x, y = _clean(a), _clean(b)
    if x.size < 2 or y.size < 2:
        return float("nan")
    pooled = np.sqrt(((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / (x.size + y.size - 2))
    return float((x.mean() - y.mean()) / pooled) if pooled > 0 else float("nan")


def wilson(successes: int, n: int, z: float = 1.96) -> Estimate:
    """Wilson score interval for a proportion (well-behaved at 0 and 1 and small n)."""
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return Estimate(float(p), float(max(0.0, centre - half)), float(min(1.0, centre + half)), n)


def arm_difference(a: ArrayLike, b: ArrayLike, n_boot: int = 4000, seed: int = 0) -> Estimate:
    """Mean of arm ``a`` minus arm ``b``; each is a ``[runs, items]`` array over the same items.

    The 95% interval resamples both sources of noise: the runs (fine-tune seeds, with replacement, within each
    arm) and the items (the same resampled item indices for both arms, since the items are shared). ``n`` is the
    smaller number of runs.
    """
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"arms were measured on different item sets ({a.shape[1]} vs {b.shape[1]} items)")
    value = float(np.nanmean(a) - np.nanmean(b))
    rng = np.random.default_rng(seed)
    n_items = a.shape[1]
    boots = np.empty(n_boot)
    for i in range(n_boot):
        p = rng.integers(0, n_items, n_items)
        sa = rng.integers(0, a.shape[0], a.shape[0])
        sb = rng.integers(0, b.shape[0], b.shape[0])
        boots[i] = np.nanmean(a[np.ix_(sa, p)]) - np.nanmean(b[np.ix_(sb, p)])
    lo, hi = np.nanquantile(boots, [0.025, 0.975])
    return Estimate(value, float(lo), float(hi), int(min(a.shape[0], b.shape[0])))


# ------------------------------------------------------------------------------------ clustered data
def _resample_counts(rng: np.random.Generator, n_units: int, n_boot: int) -> np.ndarray:
    """``[n_boot, n_units]`` counts: how often each unit is drawn when ``n_units`` are drawn with replacement."""
    draws = rng.integers(0, n_units, size=(n_boot, n_units)) + n_units * np.arange(n_boot)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * n_units).reshape(n_boot, n_units).astype(float)


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


def _cluster_interval(value: float, boots: np.ndarray, n_clusters: int, level: float) -> tuple[float, float]:
    """Fisher-z interval with the cluster-bootstrap standard error and a t quantile on ``n_clusters - 1`` df.

    ``tanh(atanh(r) +- t * sd(atanh(r*)) * sqrt(G / (G - 1)))``. Percentile intervals of a correlation undercover
    when there are few clusters (the bootstrap spread is too narrow by about ``sqrt((G - 1) / G)``, and skewed
    near +-1); the z scale removes the skew, the factor and the t quantile the small-G narrowness. |r| is capped
    at 0.999 before atanh.
    """
    from scipy.stats import t as student_t

    z = np.arctanh(np.clip(boots[np.isfinite(boots)], -0.999, 0.999))
    if z.size < 2:
        return -1.0, 1.0
    se = z.std(ddof=1) * math.sqrt(n_clusters / (n_clusters - 1))
    half = float(student_t.ppf(0.5 + level / 2, n_clusters - 1) * se)
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

    The value is today's :func:`spearman` / :func:`pearson` over every point. Checkpoints of one run are not
    independent (they share the run's seed and drift together), so the interval comes from a cluster bootstrap:
    draw clusters with replacement, keep each drawn cluster's points together, recompute the correlation; the
    interval is :func:`_cluster_interval` (Fisher z, bootstrap SE, t on G - 1 df). Points flagged in ``always``
    (e.g. the base model's step-0 point, shared by every run: pass it once per base) enter every resample exactly
    once and count as no cluster. ``n`` is the number of clusters. Fewer than 3 clusters give [-1, 1] (too few
    runs for any interval: said, not hidden); a constant variable gives NaN throughout. Points with a missing x
    or y are dropped.
    """
    xa, ya = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    keep = np.zeros(xa.size, bool) if always is None else np.asarray(always, dtype=bool).ravel()
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya, keep, ca = xa[ok], ya[ok], keep[ok], np.asarray(clusters).ravel()[ok]
    labels, cid = np.unique(ca[~keep], return_inverse=True)
    g = labels.size
    value = {"pearson": pearson, "spearman": spearman}[method](xa, ya)
    if not np.isfinite(value):
        return Estimate(float("nan"), float("nan"), float("nan"), g)
    if g < 3:
        return Estimate(value, -1.0, 1.0, g)
    counts = _resample_counts(np.random.default_rng(seed), g, n_boot)
    w = np.ones((n_boot, xa.size))
    w[:, ~keep] = counts[:, cid]
    if method == "spearman":
        boots = _weighted_pearson(_weighted_ranks(xa, w), _weighted_ranks(ya, w), w)
    else:
        boots = _weighted_pearson(xa, ya, w)
    lo, hi = _cluster_interval(value, boots, g, level)
    return Estimate(value, lo, hi, g)


def _resampled_means(m: np.ndarray, runs: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``nanmean(m[resampled runs][:, resampled items])`` for each row of run and item counts."""
    ok = np.isfinite(m)
    num = np.einsum("br,ri,bi->b", runs, np.where(ok, m, 0.0), items)
    den = np.einsum("br,ri,bi->b", runs, ok.astype(float), items)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def _paired_arm_boots(a: np.ndarray, b: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Replicates of ``mean(a) - mean(b)`` as in :func:`arm_difference` (runs within arm, items paired), vectorised."""
    items = _resample_counts(rng, a.shape[1], n_boot)
    runs_a, runs_b = _resample_counts(rng, a.shape[0], n_boot), _resample_counts(rng, b.shape[0], n_boot)
    return _resampled_means(a, runs_a, items) - _resampled_means(b, runs_b, items)


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
    fn = {"pearson": pearson, "spearman": spearman}[method]
    xa, ya, ca = (np.asarray(v).ravel() for v in (x, y, clusters))
    xa, ya = xa.astype(float), ya.astype(float)
    ok = np.isfinite(xa) & np.isfinite(ya)
    rs = np.array(
        [fn(xa[ok & (ca == c)], ya[ok & (ca == c)]) for c in np.unique(ca) if (ok & (ca == c)).sum() >= 3]
    )
    rs = rs[np.isfinite(rs)]
    if rs.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    value = float(rs.mean())
    if rs.size < 3:
        return Estimate(value, -1.0, 1.0, int(rs.size))
    counts = _resample_counts(np.random.default_rng(seed), rs.size, n_boot)
    lo, hi = _cluster_interval(value, counts @ rs / rs.size, rs.size, 0.95)
    return Estimate(value, lo, hi, int(rs.size))


def nested_arm_difference(
    a_by_base: Sequence[ArrayLike], b_by_base: Sequence[ArrayLike], n_boot: int = 4000, seed: int = 0
) -> Estimate:
    """:func:`arm_difference` with base models as the top level: mean over bases of (mean a - mean b).

    ``a_by_base[i]`` and ``b_by_base[i]`` are the ``[runs, items]`` arrays of arm a and arm b fine-tuned from base
    i, over that base's items (shared by its two arms; bases may use different items). The 95% interval resamples
    bases, then within each drawn base the runs of each arm and the (paired) items. Slot m of bootstrap replicate
    j takes the within-base replicate ``(j + m) % n_boot``, so a base drawn twice gets two independent inner
    draws. ``n`` is the number of bases. With one base the value is :func:`arm_difference`'s and the interval
    the same bootstrap (vectorised, so other random draws: close, not identical). A percentile interval over 2 or
    3 bases is optimistic (it cannot see base-to-base spread it did not sample): state ``n`` beside it.
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
        boots = inner[0]
    else:
        drawn = rng.integers(0, n_bases, size=(n_boot, n_bases))
        column = (np.arange(n_boot)[:, None] + np.arange(n_bases)) % n_boot
        boots = inner[drawn, column].mean(1)
    lo, hi = np.nanquantile(boots, [0.025, 0.975])
    return Estimate(value, float(lo), float(hi), n_bases)
