"""Link statistics: correlation CIs widen with fewer checkpoints and small n is stated; early prediction is
exact on a linear relation and compared with carrying the last value forward; ablation fractions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.causal import _fraction_restored
from analysis.link import SMALL_N, correlations, early_prediction


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


def test_early_prediction_exact_on_a_line_and_beside_carry_forward():
    t = pd.DataFrame({"step": [0, 1, 2, 4, 8], "shift_harmful": [0.0, 0.1, 0.2, 0.4, 0.8]})
    t["asr"] = 0.9 - 0.5 * t["shift_harmful"]
    rows = early_prediction(t)
    assert [r["k"] for r in rows] == [2, 3, 4]
    assert all(r["error"] == pytest.approx(0.0, abs=1e-9) for r in rows)
    assert rows[0]["carry_forward_error"] == pytest.approx(0.35)


def test_fraction_restored():
    base, ckpt = np.ones(40), np.zeros(40)
    half = np.r_[np.ones(20), np.zeros(20)]
    r = _fraction_restored(base, ckpt, half, n_boot=500, seed=0)
    assert r["value"] == pytest.approx(0.5) and r["lo"] < 0.5 < r["hi"]
    assert np.isnan(_fraction_restored(base, base, half, 100, 0)["value"])  # nothing to undo: undefined
