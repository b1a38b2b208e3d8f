"""Shared statistics: intervals cover, widen with less data, and behave at the edges."""

from __future__ import annotations

import numpy as np
import pytest

from vsfa.stats import bootstrap, bootstrap_diff, cohens_d, correlation, paired_diff, wilson


def test_bootstrap_ci_covers_true_mean_at_nominal_rate():
    rng = np.random.default_rng(0)
    hits = sum(
        (e := bootstrap(rng.normal(1.0, 2.0, 40), n_boot=400, seed=i)).lo <= 1.0 <= e.hi for i in range(200)
    )
    assert 0.88 <= hits / 200 <= 0.99


def test_bca_covers_a_skewed_mean_on_an_item_set():
    """Exponential per-item scores (true mean 1), 40 items: BCa covers near 95% (0.91 here; the old percentile
    interval ~0.90); the interval says how it was made."""
    rng = np.random.default_rng(5)
    truth = 1.0
    ests = [bootstrap(rng.exponential(1.0, 40), n_boot=500, seed=i) for i in range(300)]
    assert 0.88 <= np.mean([e.lo <= truth <= e.hi for e in ests]) <= 0.98
    assert ests[0].ci == "BCa bootstrap"


def test_seeded_resampling_is_deterministic():
    from vsfa.stats import arm_difference, cluster_correlation

    rng = np.random.default_rng(4)
    v = rng.normal(0, 1, 30)
    assert bootstrap(v, seed=3) == bootstrap(v, seed=3) != bootstrap(v, seed=4)
    a, b = rng.normal(0, 1, (3, 20)), rng.normal(0, 1, (4, 20))
    assert arm_difference(a, b, n_boot=500, seed=1) == arm_difference(a, b, n_boot=500, seed=1)
    x, y, c = rng.normal(0, 1, 40), rng.normal(0, 1, 40), np.repeat(np.arange(5), 8)
    assert cluster_correlation(x, y, c, seed=2) == cluster_correlation(x, y, c, seed=2)
    assert correlation(x, y, seed=2) == correlation(x, y, seed=2)


def test_degenerate_samples_give_honest_intervals():
    empty, one, flat = bootstrap([]), bootstrap([2.0]), bootstrap([1.0, 1.0, 1.0, np.nan])
    assert np.isnan(empty.value) and empty.n == 0
    assert (one.value, one.lo, one.hi, one.n) == (2.0, 2.0, 2.0, 1)
    assert (flat.value, flat.lo, flat.hi, flat.n) == (1.0, 1.0, 1.0, 3) and flat.ci.startswith("none")
    binary = bootstrap(np.r_[np.zeros(39), 1.0])  # one success in 40: BCa still defined, never below 0
    assert binary.lo == 0.0 and 0.025 < binary.hi < 0.2
    assert np.isnan(correlation(np.arange(6.0), np.ones(6)).value)


def test_difference_detects_a_real_gap_and_not_a_null():
    rng = np.random.default_rng(1)
    gap = bootstrap_diff(rng.normal(1, 1, 100), rng.normal(0, 1, 100))
    null = bootstrap_diff(rng.normal(0, 1, 100), rng.normal(0, 1, 100))
    assert gap.lo > 0.5 and null.lo < 0 < null.hi
    paired = paired_diff(np.arange(10) + 0.5, np.arange(10))
    assert paired.value == 0.5 and paired.lo == paired.hi == 0.5


def test_correlation_ci_widens_with_fewer_points():
    rng = np.random.default_rng(2)
    x = np.linspace(0, 1, 40)
    y = x + rng.normal(0, 0.3, 40)
    wide = correlation(x[::8], y[::8], "pearson")
    narrow = correlation(x, y, "pearson")
    assert (wide.hi - wide.lo) > (narrow.hi - narrow.lo)
    assert narrow.lo > 0.3
    tiny = correlation([0, 1], [1, 2])
    assert (tiny.lo, tiny.hi) == (-1.0, 1.0) and tiny.n == 2  # two points: no interval, stated not hidden


def test_effect_sizes_and_proportions():
    assert abs(cohens_d([1, 2, 3, 4], [0, 1, 2, 3]) - 0.7746) < 1e-3
    zero = wilson(0, 20)
    assert zero.value == 0 and zero.lo == 0 and 0.1 < zero.hi < 0.2
    three = wilson(3, 20)  # the textbook Wilson score interval
    assert (three.lo, three.hi) == pytest.approx((0.0524, 0.3604), abs=1e-4) and three.ci == "Wilson score"
    assert wilson(20, 20).hi == 1.0 and np.isnan(wilson(0, 0).value)
    assert np.isnan(bootstrap([]).value)


def test_arm_difference_resamples_seeds_and_items():
    from vsfa.stats import arm_difference

    rng = np.random.default_rng(0)
    items = rng.normal(0, 1, 50)
    a = items + 0.5 + rng.normal(0, 0.05, (3, 50))
    b = items + rng.normal(0, 0.05, (3, 50))
    est = arm_difference(a, b, n_boot=1000)
    assert est.value == pytest.approx(0.5, abs=0.05) and est.lo > 0.3 and est.n == 3
    seeds_vary = arm_difference(a + rng.normal(0, 0.5, (3, 1)), b, n_boot=1000)
    assert seeds_vary.hi - seeds_vary.lo > est.hi - est.lo  # seed-to-seed spread widens the interval
    with pytest.raises(ValueError, match="different item sets"):
        arm_difference(a, b[:, :10])
    single = arm_difference(a[:1], b[:1], n_boot=500)  # one run per arm: only the items are resampled
    assert single.lo < single.value < single.hi and single.n == 1


def test_permutation_p_is_exact_on_few_points():
    """n = 6: scipy's permutation test enumerates all 720 pairings; |rho| >= the observed one, counted by hand."""
    from itertools import permutations

    from scipy.stats import spearmanr

    from vsfa.stats import permutation_p

    rng = np.random.default_rng(8)
    x, y = rng.normal(0, 1, 6), rng.normal(0, 1, 6)
    observed = abs(spearmanr(x, y).statistic)
    hand = np.mean(
        [abs(spearmanr(x, y[list(p)]).statistic) >= observed - 1e-12 for p in permutations(range(6))]
    )
    assert permutation_p(x, y) == pytest.approx(hand)
    big = np.arange(30.0)
    assert 0 < permutation_p(big, big, n_resamples=999) <= 1 / 1000  # Monte Carlo: never 0
    assert np.isnan(permutation_p([1, 2], [2, 1]))


# ------------------------------------------------------------------------------ clustered trajectories
def _null_study(rng: np.random.Generator, runs: int = 24, checkpoints: int = 8):
    """Runs with their own level of x and of y, x drifting as a random walk, y independent of x: no link.

    Every run starts from the same base point (step 0), passed once as an ``always`` point.
    """
    x = rng.normal(0, 1, (runs, 1)) + np.cumsum(rng.normal(0, 0.5, (runs, checkpoints)), axis=1)
    y = rng.normal(0, 1, (runs, 1)) + rng.normal(0, 0.7, (runs, checkpoints))
    clusters = np.r_[-1, np.repeat(np.arange(runs), checkpoints)]
    return np.r_[0.0, x.ravel()], np.r_[0.0, y.ravel()], clusters, clusters == -1


def test_cluster_bootstrap_is_calibrated_where_checkpoint_resampling_is_not():
    """1 000 null studies of 24 runs x 8 checkpoints: the cluster CI covers the true r = 0 at ~95% (0.945 here);
    the checkpoint-level CI (points treated as independent) covers it about two times in three."""
    from vsfa.stats import cluster_correlation

    rng = np.random.default_rng(12345)
    cluster_hits, point_hits = [], []
    for sim in range(1000):
        x, y, clusters, base = _null_study(rng)
        est = cluster_correlation(x, y, clusters, n_boot=250, seed=sim, always=base)
        cluster_hits.append(est.lo <= 0 <= est.hi)
        if sim < 100:
            naive = correlation(x, y, n_boot=50, seed=sim)
            point_hits.append(naive.lo <= 0 <= naive.hi)
    assert 0.93 <= np.mean(cluster_hits) <= 0.97
    assert np.mean(point_hits) < 0.85
    assert est.n == 24  # runs, not checkpoints


def test_cluster_bootstrap_stays_calibrated_with_few_runs():
    """8 runs: a plain percentile interval covers ~91% and a normal one ~88% (the bootstrap spread is too narrow
    by sqrt((G - 1) / G) and the quantile should be t on G - 1 df); the interval used covers ~95% (0.948 here)."""
    from vsfa.stats import cluster_correlation

    rng = np.random.default_rng(12345)
    hits = []
    for sim in range(1000):
        x, y, clusters, base = _null_study(rng, runs=8)
        est = cluster_correlation(x, y, clusters, n_boot=250, seed=sim, always=base)
        hits.append(est.lo <= 0 <= est.hi)
    assert 0.93 <= np.mean(hits) <= 0.97


def test_cluster_resampling_matches_writing_the_resamples_out():
    """The pooled statistic over drawn cluster indices (runs drawn k times count k times, the base once) equals
    the Spearman of the resample written out, and the interval is built from scipy's draws of those indices."""
    from scipy.stats import bootstrap as scipy_bootstrap
    from scipy.stats import rankdata

    from vsfa.stats import _cluster_interval, _pooled_correlation, cluster_correlation

    rng = np.random.default_rng(3)
    x, y, clusters, base = _null_study(rng, runs=6, checkpoints=4)
    x[5] = x[9]  # a tie across runs
    drawn = np.random.default_rng(7).integers(0, 6, (50, 6))
    explicit = []
    for row in drawn:
        idx = np.r_[0, np.concatenate([np.flatnonzero(clusters == c) for c in row])]
        explicit.append(np.corrcoef(rankdata(x[idx]), rankdata(y[idx]))[0, 1])
    stat = _pooled_correlation(x, y, clusters[~base], base, "spearman")
    assert stat(drawn) == pytest.approx(np.array(explicit), abs=1e-12)

    est = cluster_correlation(x, y, clusters, n_boot=50, seed=7, always=base)
    scipy_draws = scipy_bootstrap(
        (np.arange(6),), lambda d, axis=-1: stat(d), n_resamples=50, method="percentile", rng=7
    ).bootstrap_distribution
    assert (est.lo, est.hi) == pytest.approx(_cluster_interval(est.value, scipy_draws, 6, 0.95), abs=1e-9)
    assert est.value == pytest.approx(correlation(x, y).value)  # the point value is the pooled Spearman
    assert est.ci.startswith("cluster bootstrap")
    pearson_est = cluster_correlation(x, y, clusters, "pearson", always=base)
    assert pearson_est.value == pytest.approx(np.corrcoef(x, y)[0, 1])


def test_cluster_correlation_edges():
    from vsfa.stats import cluster_correlation

    x, y = np.arange(8.0), np.arange(8.0) ** 2
    two = cluster_correlation(x, y, np.repeat([0, 1], 4))
    assert (two.value, two.lo, two.hi, two.n) == (1.0, -1.0, 1.0, 2)  # two runs: no interval, said so
    flat = cluster_correlation(x, np.ones(8), np.repeat([0, 1, 2, 3], 2))
    assert np.isnan(flat.value) and np.isnan(flat.lo) and flat.n == 4
    strong = cluster_correlation(x, y + np.r_[0, 0.1].repeat(4), np.repeat([0, 1, 2, 3], 2), "pearson")
    assert strong.lo > 0  # 4 runs: wide (t on 3 df), but a clean link still excludes 0


def _arms_study(within: float, between: float, seed: int = 0):
    """12 runs x 8 checkpoints; within each run y = within * x + noise; run r's levels are (c_r, between * c_r)."""
    rng = np.random.default_rng(seed)
    level = np.repeat([-2.0, 2.0], 6)[:, None] + rng.normal(0, 0.3, (12, 1))  # two arms far apart
    dx = rng.normal(0, 1, (12, 8))
    x = level + dx
    y = between * level + within * dx + rng.normal(0, 0.5, (12, 8))
    return x.ravel(), y.ravel(), np.repeat(np.arange(12), 8)


def test_within_run_correlation_separates_the_run_link_from_arms_moving_apart():
    from vsfa.stats import cluster_correlation, within_correlation

    # A strong within-run link, with the arms apart the other way: the pooled correlation hides it.
    x, y, runs = _arms_study(within=1.0, between=-0.6)
    pooled, within = cluster_correlation(x, y, runs), within_correlation(x, y, runs)
    assert within.lo > 0.6 and within.n == 12
    assert pooled.value < 0
    # No within-run link at all, but arms apart in both x and y: the pooled correlation looks strong.
    x, y, runs = _arms_study(within=0.0, between=1.0, seed=1)
    pooled, within = cluster_correlation(x, y, runs), within_correlation(x, y, runs)
    assert pooled.value > 0.6 and pooled.lo > 0
    assert within.lo < 0 < within.hi and abs(within.value) < 0.2
    # Short or constant runs are skipped; fewer than 3 usable runs give [-1, 1].
    short = within_correlation([0, 1, 0, 1, 2, 0, 1, 2], [0, 1, 5, 5, 5, 0, 1, 3], [0, 0, 1, 1, 1, 2, 2, 2])
    assert (short.value, short.lo, short.hi, short.n) == (1.0, -1.0, 1.0, 1)


def test_nested_arm_difference_has_bases_as_the_top_level():
    from vsfa.stats import arm_difference, nested_arm_difference

    rng = np.random.default_rng(0)
    items = rng.normal(0, 1, 50)
    a = items + 0.5 + rng.normal(0, 0.2, (3, 50)) + rng.normal(0, 0.2, (3, 1))
    b = items + rng.normal(0, 0.2, (3, 50)) + rng.normal(0, 0.2, (3, 1))
    one, flat = nested_arm_difference([a], [b], n_boot=2000), arm_difference(a, b, n_boot=2000)
    assert (one.value, one.lo, one.hi, one.n) == (
        flat.value,
        flat.lo,
        flat.hi,
        1,
    )  # one base: the same bootstrap

    def bases(gaps):
        out_a, out_b = [], []
        for i, gap in enumerate(gaps):
            r = np.random.default_rng(i + 1)
            it = r.normal(0, 1, 30 + i)  # each base its own items
            out_a.append(it + gap + r.normal(0, 0.2, (3, it.size)))
            out_b.append(it + r.normal(0, 0.2, (3, it.size)))
        return out_a, out_b

    same = nested_arm_difference(*bases([0.5, 0.5, 0.5, 0.5]), n_boot=2000)
    spread = nested_arm_difference(*bases([0.1, 0.9, 0.2, 0.8]), n_boot=2000)
    assert same.n == spread.n == 4 and spread.value == pytest.approx(same.value, abs=0.05)
    assert spread.hi - spread.lo > 2 * (same.hi - same.lo)  # base-to-base spread widens the interval
    with pytest.raises(ValueError, match="different item sets"):
        nested_arm_difference([a], [b[:, :10]])
