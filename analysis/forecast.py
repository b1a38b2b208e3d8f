"""Forecasting a run's final outcome from its early checkpoints, and the cheaper "surrogate" it is not.

* :func:`forecast` — a real forecast: from the first k checkpoints only, predict the outcome (ASR, P(refuse),
  ...) at the planned last step. ``"shift"`` extrapolates the persona shift in log(1 + step) and maps it through
  outcome ~ shift fitted on the same k points; the baselines are ``"carry_forward"`` (the k-th outcome) and
  ``"log_step"`` (the outcome itself extrapolated in log(1 + step)). The shift only earns its keep if it beats
  both.
* :func:`forecast_table` — :func:`forecast` for every k over one run's per-checkpoint table, with the errors.
* :func:`surrogate` — what ``analysis.link.early_prediction`` computes: outcome ~ shift fitted on the first k
  checkpoints, evaluated at the FINAL checkpoint's shift. That uses the final capture, so it is not a forecast:
  it predicts an evaluation you did not run from a capture you did (a capture is cheaper than an evaluation).
* :func:`summarise_errors` — mean absolute error per k and method over runs, with a bootstrap CI over runs
  (runs, not checkpoints, are the independent unit).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

from vsfa.stats import bootstrap

METHODS = ("shift", "log_step", "carry_forward")
BOUNDED = ("asr", "over_refusal", "p_refuse")  # outcomes that are proportions: predictions clipped to [0, 1]


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """Least-squares (slope, intercept) of ``y ~ x``; None when x is constant or anything is missing."""
    if x.size < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()) or np.ptp(x) == 0:
        return None
    slope, icept = np.polyfit(x, y, 1)
    return float(slope), float(icept)


def forecast(
    steps: Any, shift: Any, outcome: Any, k: int, final_step: float, bounded: bool = True
) -> dict[str, float]:
    """Predict the outcome at ``final_step`` from the first ``k`` checkpoints (by step) and nothing after them.

    Returns ``{method: prediction}`` for :data:`METHODS` (NaN where a fit is degenerate: fewer than 2 points,
    one step only, a constant shift, a missing value). ``final_step`` is the planned last step (known before
    the run ends). With ``bounded`` the predictions are clipped to [0, 1].
    """
    order = np.argsort(np.asarray(steps, dtype=float), kind="stable")[:k]
    t = np.log1p(np.asarray(steps, dtype=float)[order])
    s, y = np.asarray(shift, dtype=float)[order], np.asarray(outcome, dtype=float)[order]
    t_final = math.log1p(final_step)
    preds = {"shift": math.nan, "log_step": math.nan, "carry_forward": float(y[-1]) if y.size else math.nan}
    trend, link = _line(t, s), _line(s, y)
    if trend is not None and link is not None:
        preds["shift"] = link[1] + link[0] * (trend[1] + trend[0] * t_final)
    if (growth := _line(t, y)) is not None:
        preds["log_step"] = growth[1] + growth[0] * t_final
    if bounded:
        preds = {m: float(np.clip(p, 0.0, 1.0)) if math.isfinite(p) else p for m, p in preds.items()}
    return preds


def forecast_table(
    table: pd.DataFrame, x: str, y: str, final_step: float | None = None, bounded: bool | None = None
) -> list[dict[str, Any]]:
    """:func:`forecast` for k = 2 .. (checkpoints before ``final_step``), one row per k, with absolute errors.

    ``table`` has one row per checkpoint (columns ``step``, ``x`` (the shift), ``y`` (the outcome)).
    ``final_step`` defaults to the largest step, so k runs to n - 1; ``actual`` is ``y`` at ``final_step`` (NaN
    when the table has no such row, e.g. a run still training). ``bounded`` defaults to ``y`` being a proportion
    (:data:`BOUNDED`). Row keys: k, last_step_used, final_step, actual, and per method ``<method>`` and
    ``<method>_error``.
    """
    t = table.sort_values("step", kind="stable").reset_index(drop=True)
    final_step = float(t["step"].max()) if final_step is None else float(final_step)
    bounded = y in BOUNDED if bounded is None else bounded
    at_final = t.loc[t["step"] == final_step, y]
    actual = float(at_final.iloc[0]) if len(at_final) else math.nan
    before = int((t["step"] < final_step).sum())
    rows = []
    for k in range(2, before + 1):
        preds = forecast(t["step"], t[x], t[y], k, final_step, bounded)
        row: dict[str, Any] = {
            "k": k,
            "last_step_used": int(t["step"].iloc[k - 1]),
            "final_step": int(final_step),
            "actual": actual,
        }
        for method, p in preds.items():
            row[method] = p
            row[f"{method}_error"] = (
                abs(p - actual) if math.isfinite(p) and math.isfinite(actual) else math.nan
            )
        rows.append(row)
    return rows


def surrogate(table: pd.DataFrame, x: str = "shift_harmful", y: str = "asr") -> list[dict[str, Any]]:
    """Predict the final evaluation from the final checkpoint's capture, with ``y ~ x`` fitted on the first k.

    This is ``analysis.link.early_prediction`` renamed, unchanged: it uses the FINAL checkpoint's ``x`` (the
    shift), so it is NOT a forecast of the run's end from its beginning (that is :func:`forecast`). What it
    answers: can an evaluation you did not run be predicted from a capture you did, with the calibration taken
    from a few early checkpoints where both exist? (A capture is much cheaper than an evaluation.) Errors are
    shown beside carrying the k-th observed outcome forward.
    """
    t = table.sort_values("step").reset_index(drop=True)
    final = t.iloc[-1]
    out = []
    for k in range(2, len(t)):
        head = t.iloc[:k]
        xs, ys = head[x].to_numpy(float), head[y].to_numpy(float)
        if np.ptp(xs) > 0 and np.isfinite(xs).all() and np.isfinite(ys).all():
            slope, icept = np.polyfit(xs, ys, 1)
            pred = float(
                np.clip(icept + slope * float(final[x]), 0.0, 1.0)
                if y in BOUNDED
                else icept + slope * float(final[x])
            )
        else:
            pred = math.nan
        carry = float(ys[-1])
        out.append(
            {
                "k": k,
                "last_step_used": int(head["step"].iloc[-1]),
                "final_step": int(final["step"]),
                "predicted": pred,
                "actual": float(final[y]),
                "error": abs(pred - float(final[y])) if math.isfinite(pred) else math.nan,
                "carry_forward": carry,
                "carry_forward_error": abs(carry - float(final[y])),
            }
        )
    return out


def summarise_errors(
    rows_by_run: dict[str, list[dict[str, Any]]], n_boot: int = 2000, seed: int = 0
) -> list[dict[str, Any]]:
    """Mean absolute error per k and method over runs, with a bootstrap CI over runs (:func:`vsfa.stats.bootstrap`).

    ``rows_by_run`` maps a run to its :func:`forecast_table` (or :func:`surrogate`) rows. Every ``<method>_error``
    key is a method (a bare ``error``, from :func:`surrogate`, is called ``surrogate``). Runs with a missing error
    at that k are left out; ``n_runs`` says how many were used (fewer than 2 runs: no interval, lo/hi NaN).
    """
    errors: dict[tuple[int, str], list[float]] = defaultdict(list)
    for rows in rows_by_run.values():
        for row in rows:
            for key, v in row.items():
                if key == "error" or key.endswith("_error"):
                    method = "surrogate" if key == "error" else key.removesuffix("_error")
                    errors[(int(row["k"]), method)].append(float(v))
    out = []
    for (k, method), errs in sorted(errors.items()):
        est = bootstrap(errs, np.mean, n_boot=n_boot, seed=seed)
        lo, hi = (est.lo, est.hi) if est.n >= 2 else (math.nan, math.nan)
        out.append({"k": k, "method": method, "mae": est.value, "lo": lo, "hi": hi, "n_runs": est.n})
    return out
