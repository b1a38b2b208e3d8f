"""Link statistics: per-run correlation CIs widen with fewer checkpoints and small n is stated; the pooled
correlation counts the shared base once and resamples runs; ablation fractions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.causal import _fraction_restored
from analysis.link import SMALL_N, correlations, pooled_correlations, pooled_points


def _table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    shift = np.linspace(0, 1, n)
    return pd.DataFrame(
        {
            "step": np.arange(n) * 10,
            "shift_harmful": shift,
            "asr": 0.8 - 0.5 * shift + rng.normal(0, 0.08, n),
            "over_refusal": rng.uniform(0, 0.1, n),
            "refusal_logodds": shift + rng.normal(0, 0.2, n),
        }
    )


def test_correlation_cis_widen_with_fewer_checkpoints_and_small_n_is_stated():
    def mean_width(n: int) -> float:
        widths = []
        for seed in range(12):
            rows = correlations(_table(n, seed), "shift_harmful", n_boot=300)
            c = next(c for c in rows if c["y"] == "asr" and c["method"] == "spearman")
            widths.append(c["hi"] - c["lo"])
        return float(np.mean(widths))

    assert mean_width(4) > mean_width(8) > mean_width(24)
    small = correlations(_table(4), "shift_harmful")
    assert all(c["n"] == 4 and "only 4 checkpoints" in c["note"] for c in small)
    assert all("note" not in c for c in correlations(_table(SMALL_N), "shift_harmful"))
    strong = next(
        c for c in correlations(_table(24), "shift_harmful") if c["y"] == "asr" and c["method"] == "pearson"
    )
    assert strong["value"] < -0.8 and strong["hi"] < 0


def test_pooled_points_count_the_shared_base_once_and_runs_are_the_unit():
    tables = {f"r{i}": _table(6, seed=i) for i in range(4)}
    for t in tables.values():
        t.loc[0, ["shift_harmful", "asr", "over_refusal", "refusal_logodds"]] = [0.0, 0.8, 0.05, 0.0]
    bases = {"r0": "A", "r1": "A", "r2": "B", "r3": "B"}
    points = pooled_points(tables, bases)
    assert len(points) == 4 * 5 + 2 and points["shared"].sum() == 2  # one step-0 point per base model
    rows = pooled_correlations(tables, bases, "shift_harmful", n_boot=300, seed=0)
    asr = next(c for c in rows if c["y"] == "asr" and c["method"] == "spearman")
    assert asr["n"] == 4 and asr["n_points"] == 22 and asr["unit"].startswith("runs")
    assert asr["value"] < -0.5 and asr["within"]["n"] == 4 and asr["within"]["value"] < -0.5


def test_fraction_restored():
    base, ckpt = np.ones(40), np.zeros(40)
    half = np.r_[np.ones(20), np.zeros(20)]
    r = _fraction_restored(base, ckpt, half, n_boot=500, seed=0)
    assert r["value"] == pytest.approx(0.5) and r["lo"] < 0.5 < r["hi"]
    assert np.isnan(_fraction_restored(base, base, half, 100, 0)["value"])  # nothing to undo: undefined
