"""Forecasts use only the first k checkpoints, follow a log-step law, and are summarised over runs; the
surrogate is today's early prediction."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.forecast import METHODS, forecast, forecast_table, summarise_errors, surrogate

STEPS = np.array([0, 10, 30, 100, 300, 1000, 3000])


def _log_law(noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Shift grows and ASR falls linearly in log(1 + step), as fine-tuning curves tend to."""
    rng = np.random.default_rng(seed)
    t = np.log1p(STEPS)
    return pd.DataFrame(
        {
            "step": STEPS,
            "shift_harmful": 0.1 * t + rng.normal(0, noise, t.size),
            "asr": 0.8 - 0.08 * t + rng.normal(0, noise, t.size),
        }
    )


def test_forecast_at_k_ignores_everything_after_k():
    base = _log_law(noise=0.02, seed=1)
    before = forecast_table(base, "shift_harmful", "asr")
    assert [r["k"] for r in before] == list(range(2, len(STEPS)))
    for row in before:
        k = row["k"]
        changed = base.copy()
        later = changed.index >= k  # every checkpoint after the k-th, the final one included
        changed.loc[later, "shift_harmful"] = -5.0
        changed.loc[later, "asr"] = 0.99
        changed = changed.sample(frac=1.0, random_state=k)  # row order must not matter either
        after = next(r for r in forecast_table(changed, "shift_harmful", "asr") if r["k"] == k)
        assert after["actual"] == 0.99 != row["actual"]  # only the truth moved
        assert {m: after[m] for m in METHODS} == {m: row[m] for m in METHODS}
        assert after["last_step_used"] == row["last_step_used"] == STEPS[k - 1]


def test_a_log_step_law_is_forecast_and_carry_forward_lags():
    rows = forecast_table(_log_law(), "shift_harmful", "asr")
    assert all(
        r["final_step"] == 3000 and r["actual"] == pytest.approx(0.8 - 0.08 * math.log1p(3000)) for r in rows
    )
    for r in rows:
        assert r["shift_error"] == pytest.approx(0.0, abs=1e-9)
        assert r["log_step_error"] == pytest.approx(0.0, abs=1e-9)
        assert r["carry_forward_error"] > 0.08
    noisy = [forecast_table(_log_law(noise=0.02, seed=s), "shift_harmful", "asr") for s in range(20)]
    mean_err = {m: np.mean([r[f"{m}_error"] for rows in noisy for r in rows if r["k"] >= 4]) for m in METHODS}
    assert mean_err["shift"] < 0.5 * mean_err["carry_forward"]
    assert mean_err["log_step"] < 0.5 * mean_err["carry_forward"]


def test_forecast_edges():
    t = _log_law(noise=0.02, seed=3)
    shuffled = t.sample(frac=1.0, random_state=1)
    for k in (2, 4):
        assert forecast(shuffled["step"], shuffled["shift_harmful"], shuffled["asr"], k, 3000) == forecast(
            t["step"], t["shift_harmful"], t["asr"], k, 3000
        )  # the first k by step, whatever the row order
    flat = forecast([0, 10, 100], [0.2, 0.2, 0.2], [0.5, 0.4, 0.3], k=3, final_step=1000)
    assert math.isnan(flat["shift"]) and flat["carry_forward"] == 0.3  # constant shift: no shift forecast
    steep = forecast([0, 10], [0.0, 1.0], [0.5, 0.1], k=2, final_step=10_000)
    assert steep["shift"] == steep["log_step"] == 0.0  # clipped to [0, 1]
    assert forecast([0, 10], [0.0, 1.0], [0.5, 0.1], k=2, final_step=10_000, bounded=False)["log_step"] < 0
    # a planned last step beyond the table: every checkpoint may be used, the truth is not known yet
    ahead = forecast_table(_log_law(), "shift_harmful", "asr", final_step=10_000)
    assert ahead[-1]["k"] == len(STEPS) and math.isnan(ahead[-1]["actual"])
    assert ahead[-1]["shift"] == pytest.approx(0.8 - 0.08 * math.log1p(10_000))


def test_surrogate_is_todays_early_prediction():
    """Numbers from ``analysis.link.early_prediction`` as of commit dbd2f69, on this table."""
    t = pd.DataFrame(
        {
            "step": [0, 5, 20, 50, 100, 200],
            "shift_harmful": [0.0, 0.1, 0.3, 0.3, 0.5, 0.9],
            "asr": [0.7, 0.62, 0.55, 0.6, 0.41, 0.2],
            "refusal_logodds": [-1.0, -0.6, 0.1, 0.0, 0.9, 2.5],
        }
    )
    expected = {  # (predicted, actual, carry_forward) for k = 2..5; the final step is 200 throughout
        "asr": [
            (0.0, 0.2, 0.62),
            (0.25642857142857184, 0.2, 0.55),
            (0.3462962962962958, 0.2, 0.6),
            (0.23210526315789443, 0.2, 0.41),
        ],
        "refusal_logodds": [
            (2.6, 2.5, -0.6),
            (2.2928571428571436, 2.5, 0.1),
            (2.122222222222224, 2.5, 0.0),
            (2.328947368421053, 2.5, 0.9),
        ],
    }
    for y, want in expected.items():
        rows = surrogate(t.sample(frac=1.0, random_state=0), "shift_harmful", y)
        assert [(r["k"], r["last_step_used"], r["final_step"]) for r in rows] == [
            (k, s, 200) for k, s in zip(range(2, 6), [5, 20, 50, 100], strict=True)
        ]
        for r, (pred, actual, carry) in zip(rows, want, strict=True):
            assert (r["predicted"], r["actual"], r["carry_forward"]) == pytest.approx(
                (pred, actual, carry), abs=1e-12
            )
            assert r["error"] == pytest.approx(abs(pred - actual), abs=1e-12)
            assert r["carry_forward_error"] == pytest.approx(abs(carry - actual), abs=1e-12)
    flat = surrogate(t.assign(shift_harmful=[0.2, 0.2, 0.3, 0.3, 0.5, 0.9]))
    assert math.isnan(flat[0]["predicted"]) and math.isnan(flat[0]["error"])  # constant shift: no fit


def test_errors_are_summarised_over_runs_with_an_interval():
    by_run = {
        f"run{s}": forecast_table(_log_law(noise=0.03, seed=s), "shift_harmful", "asr") for s in range(8)
    }
    summary = summarise_errors(by_run, n_boot=500)
    assert {(r["k"], r["method"]) for r in summary} == {(k, m) for k in range(2, 7) for m in METHODS}
    for r in summary:
        errs = [row[f"{r['method']}_error"] for rows in by_run.values() for row in rows if row["k"] == r["k"]]
        assert r["n_runs"] == 8 and r["mae"] == pytest.approx(np.mean(errs))
        assert r["lo"] < r["mae"] < r["hi"]
    single = summarise_errors({"only": by_run["run0"]})
    assert all(r["n_runs"] == 1 and math.isnan(r["lo"]) for r in single)  # one run: no interval over runs
    surr = summarise_errors({s: surrogate(_log_law(noise=0.03, seed=i)) for i, s in enumerate("abc")})
    assert {r["method"] for r in surr} == {"surrogate", "carry_forward"}
