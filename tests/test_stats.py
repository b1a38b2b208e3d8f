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
