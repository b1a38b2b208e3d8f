"""Time and intervals of :mod:`vsfa.stats` (on ``scipy.stats``) against the hand-written loops it replaced.

The old code is copied below (``Old``), as it was before the move to scipy, and lives only here. Both run in the
same process on the same realistic samples, alternating (old, new, old, new, ...) so machine load hits both
alike; the median time of each is printed with the ratio new / old, and the interval endpoints of both:

* ``bootstrap``: mean of n = 20, 40, 200 skewed per-item scores (old: percentile; new: BCa);
* ``wilson``: 3 of 20 (old: the formula; new: ``binomtest(...).proportion_ci``);
* ``correlation``: Spearman over n = 20, 40, 200 points (old: a Python loop over resamples; new: scipy's
  vectorised paired BCa), both enveloped with the Fisher-z interval;
* ``cluster_correlation``: 6 and 9 runs x 8 checkpoints plus one shared base point (old: vectorised counts;
  new: scipy draws the run indices, the same pooled statistic);
* ``arm_difference``: 3 runs x 40 items and 6 runs x 200 items per arm (old: a Python loop; new: vectorised,
  drawn by scipy);
* the organism experiment's Spearman p over bases (old: exact over n! pairings by hand; new:
  :func:`vsfa.stats.permutation_p`, ``scipy.stats.permutation_test``, also exact) at n = 8 bases.

With ``--coverage N`` it also prints how often the old and the new interval of a mean cover the true mean over N
simulated item sets (lognormal, exponential, Bernoulli(0.15) and normal scores; 20 and 40 items).

    python perf/bench_stats.py [--rounds 5] [--n-boot 2000] [--coverage 400]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from itertools import permutations

import numpy as np
from scipy.stats import rankdata

from vsfa import stats as new


class Old:
    """The hand-written statistics as they were before ``scipy.stats`` (vsfa/stats.py at 523fef1)."""

    @staticmethod
    def bootstrap(values, stat=np.mean, n_boot=2000, level=0.95, seed=0):
        a = np.asarray(values, dtype=float).ravel()
        a = a[np.isfinite(a)]
        value = float(stat(a))
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, a.size, size=(n_boot, a.size))
        boots = np.array([stat(a[i]) for i in idx])
        lo, hi = np.nanquantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
        return value, float(lo), float(hi)

    @staticmethod
    def wilson(successes, n, z=1.96):
        p = successes / n
        denom = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
        return float(p), float(max(0.0, centre - half)), float(min(1.0, centre + half))

    @staticmethod
    def pearson(x, y):
        if x.size < 2 or np.std(x) == 0 or np.std(y) == 0:
            return float("nan")
        return float(np.corrcoef(x, y)[0, 1])

    @staticmethod
    def spearman(x, y):
        return Old.pearson(rankdata(x), rankdata(y))

    @staticmethod
    def correlation(x, y, method="spearman", n_boot=2000, seed=0):
        fn = {"pearson": Old.pearson, "spearman": Old.spearman}[method]
        xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        value = fn(xa, ya)
        rng = np.random.default_rng(seed)
        boots = []
        for _ in range(n_boot):
            i = rng.integers(0, xa.size, xa.size)
            r = fn(xa[i], ya[i])
            if np.isfinite(r):
                boots.append(r)
        flo, fhi = new._fisher_interval(value, int(xa.size), method)
        lo, hi = np.quantile(boots, [0.025, 0.975])
        return value, float(min(lo, flo)), float(max(hi, fhi))

    @staticmethod
    def _resample_counts(rng, n_units, n_boot):
        draws = rng.integers(0, n_units, size=(n_boot, n_units)) + n_units * np.arange(n_boot)[:, None]
        return np.bincount(draws.ravel(), minlength=n_boot * n_units).reshape(n_boot, n_units).astype(float)

    @staticmethod
    def cluster_correlation(x, y, clusters, method="spearman", n_boot=2000, seed=0, always=None, level=0.95):
        xa, ya = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
        keep = np.zeros(xa.size, bool) if always is None else np.asarray(always, dtype=bool).ravel()
        labels, cid = np.unique(np.asarray(clusters)[~keep], return_inverse=True)
        g = labels.size
        value = {"pearson": Old.pearson, "spearman": Old.spearman}[method](xa, ya)
        counts = Old._resample_counts(np.random.default_rng(seed), g, n_boot)
        w = np.ones((n_boot, xa.size))
        w[:, ~keep] = counts[:, cid]
        if method == "spearman":
            boots = new._weighted_pearson(new._weighted_ranks(xa, w), new._weighted_ranks(ya, w), w)
        else:
            boots = new._weighted_pearson(xa, ya, w)
        lo, hi = new._cluster_interval(value, boots, g, level)
        return value, lo, hi

    @staticmethod
    def arm_difference(a, b, n_boot=4000, seed=0):
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
        return value, float(lo), float(hi)

    @staticmethod
    def permutation_p(x, y):
        rx, ry = rankdata(x), rankdata(y)
        perms = np.array(list(permutations(range(len(y)))))
        observed = abs(np.corrcoef(rx, ry)[0, 1])
        cx = rx - rx.mean()
        ys = ry[perms] - ry.mean()
        null = np.abs(ys @ cx) / (np.linalg.norm(cx) * np.linalg.norm(ys, axis=1))
        return float(np.sum(null >= observed - 1e-12) / len(perms))


def _timed(
    fn: Callable[[], object], rounds: int, other: Callable[[], object]
) -> tuple[float, float, object, object]:
    """Median seconds of ``other`` (old) and ``fn`` (new), alternating; and the last result of each."""
    t_old, t_new = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        r_old = other()
        t_old.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        r_new = fn()
        t_new.append(time.perf_counter() - t0)
    return statistics.median(t_old), statistics.median(t_new), r_old, r_new


def _fmt(r) -> str:
    if isinstance(r, new.Estimate):
        return f"{r.value:+.4f} [{r.lo:+.4f}, {r.hi:+.4f}]"
    if isinstance(r, tuple):
        return f"{r[0]:+.4f} [{r[1]:+.4f}, {r[2]:+.4f}]"
    return f"{r:.4g}"


def _clusters(rng: np.random.Generator, runs: int, checkpoints: int = 8):
    """Runs drifting as random walks, y following x within runs with noise; one shared base point."""
    x = rng.normal(0, 1, (runs, 1)) + np.cumsum(rng.normal(0, 0.5, (runs, checkpoints)), axis=1)
    y = 0.4 * x + rng.normal(0, 0.7, (runs, checkpoints))
    clusters = np.r_[-1, np.repeat(np.arange(runs), checkpoints)]
    return np.r_[0.0, x.ravel()], np.r_[0.0, y.ravel()], clusters, clusters == -1


def coverage(sims: int, n_boot: int) -> None:
    """Coverage of the true mean by the old (percentile) and new (BCa) bootstrap intervals."""
    cases = {
        "lognormal(0, 1)": (lambda r, n: r.lognormal(0, 1, n), math.exp(0.5)),
        "exponential(1)": (lambda r, n: r.exponential(1.0, n), 1.0),
        "Bernoulli(0.15)": (lambda r, n: (r.random(n) < 0.15).astype(float), 0.15),
        "normal(0, 1)": (lambda r, n: r.normal(0, 1, n), 0.0),
    }
    print(f"\ncoverage of the true mean over {sims} samples (n_boot {n_boot})\n")
    print("| scores | items | old (percentile) | new (BCa) |")
    print("|---|---|---|---|")
    for name, (draw, truth) in cases.items():
        for n in (20, 40):
            rng = np.random.default_rng(1)
            old = hits = 0
            for i in range(sims):
                v = draw(rng, n)
                _, lo, hi = Old.bootstrap(v, n_boot=n_boot, seed=i)
                e = new.bootstrap(v, n_boot=n_boot, seed=i)
                old += lo <= truth <= hi
                hits += e.lo <= truth <= e.hi
            print(f"| {name} | {n} | {old / sims:.3f} | {hits / sims:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument(
        "--coverage", type=int, default=0, metavar="N", help="also simulate coverage over N samples"
    )
    args = ap.parse_args()
    nb, rounds = args.n_boot, args.rounds
    rng = np.random.default_rng(0)
    cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = []
    for n in (20, 40, 200):
        scores = rng.lognormal(0, 1, n)  # skewed per-item scores
        cases.append(
            (
                f"bootstrap mean n={n}",
                lambda s=scores: Old.bootstrap(s, n_boot=nb),
                lambda s=scores: new.bootstrap(s, n_boot=nb),
            )
        )
    cases.append(("wilson 3/20", lambda: Old.wilson(3, 20), lambda: new.wilson(3, 20)))
    for n in (20, 40, 200):
        x = rng.normal(0, 1, n)
        y = 0.5 * x + rng.normal(0, 1, n)
        cases.append(
            (
                f"correlation spearman n={n}",
                lambda x=x, y=y: Old.correlation(x, y, n_boot=nb),
                lambda x=x, y=y: new.correlation(x, y, n_boot=nb),
            )
        )
    for runs in (6, 9):
        x, y, c, base = _clusters(rng, runs)
        cases.append(
            (
                f"cluster_correlation {runs} runs x 8",
                lambda x=x, y=y, c=c, b=base: Old.cluster_correlation(x, y, c, n_boot=nb, always=b),
                lambda x=x, y=y, c=c, b=base: new.cluster_correlation(x, y, c, n_boot=nb, always=b),
            )
        )
    for runs, items in ((3, 40), (6, 200)):
        shared = rng.normal(0, 1, items)
        a = shared + 0.3 + rng.normal(0, 0.5, (runs, items)) + rng.normal(0, 0.2, (runs, 1))
        b = shared + rng.normal(0, 0.5, (runs, items)) + rng.normal(0, 0.2, (runs, 1))
        cases.append(
            (
                f"arm_difference {runs} runs x {items} items",
                lambda a=a, b=b: Old.arm_difference(a, b, n_boot=2 * nb),
                lambda a=a, b=b: new.arm_difference(a, b, n_boot=2 * nb),
            )
        )
    xb = rng.normal(0, 1, 8)
    yb = 0.6 * xb + rng.normal(0, 1, 8)
    cases.append(
        ("permutation p, 8 bases", lambda: Old.permutation_p(xb, yb), lambda: new.permutation_p(xb, yb))
    )

    print(f"rounds {rounds}, n_boot {nb} (arm_difference {2 * nb}); times are medians, alternating old/new\n")
    print("| case | old ms | new ms | new/old | old value [CI] | new value [CI] |")
    print("|---|---|---|---|---|---|")
    for name, old_fn, new_fn in cases:
        t_old, t_new, r_old, r_new = _timed(new_fn, rounds, old_fn)
        print(
            f"| {name} | {1e3 * t_old:.1f} | {1e3 * t_new:.1f} | {t_new / t_old:.2f} | {_fmt(r_old)} | {_fmt(r_new)} |"
        )
    if args.coverage:
        coverage(args.coverage, 1000)


if __name__ == "__main__":
    main()
