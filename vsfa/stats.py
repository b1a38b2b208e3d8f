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
