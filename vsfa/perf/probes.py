"""Linear probes over all layers x positions on synthetic activations: the toolkit's cross-validated probes
(:func:`probes.linear.grouped_cv`, as ``vsfa directions`` runs them per hook and position) against a plain
per-layer scikit-learn loop (``StandardScaler`` + ``LogisticRegression`` in ``GroupKFold``).

The value is the toolkit's wall time over all layers x positions (goal <= 10 s for N = 4000, d = 576 on 2
cores); the held-out AUROCs must equal the plain loop's within 0.005 (else the row fails whatever the time).
"""

from __future__ import annotations

import time

import numpy as np

from vsfa.perf.common import Measure


def synthetic_acts(
    n: int, d: int, layers: int, positions: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Activations ``[layers * positions, n, d]`` (float32), labels and question groups (20 items each).

    Each layer-position mixes a shared low-rank structure (correlated features, as in a residual stream), noise,
    and a class signal along its own direction whose strength grows with depth (AUROCs from ~0.6 to ~0.95).
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    groups = np.arange(n) // 20
    shared = rng.standard_normal((n, 32)).astype(np.float32)
    x = np.empty((layers * positions, n, d), dtype=np.float32)
    for k in range(layers * positions):
        mix = rng.standard_normal((32, d)).astype(np.float32) / 4
        direction = rng.standard_normal(d).astype(np.float32)
        direction /= np.linalg.norm(direction)
        strength = 0.3 + 1.5 * (k % layers) / max(1, layers - 1)
        x[k] = shared @ mix + rng.standard_normal((n, d)).astype(np.float32)
        x[k] += np.outer(y - 0.5, direction) * strength
    return x, y, groups


def sklearn_loop(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_splits: int = 5) -> list[float]:
    """The reference: per layer-position, held-out AUROC of scaler + logistic regression in GroupKFold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = []
    for xk in x:
        scores = np.zeros(len(y))
        for tr, te in GroupKFold(n_splits=n_splits).split(xk, y, groups):
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            clf.fit(xk[tr], y[tr])
            scores[te] = clf.decision_function(xk[te])
        out.append(float(roc_auc_score(y, scores)))
    return out


def loop_probes(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_splits: int = 5) -> list[float]:
    """The toolkit's per-layer path (what ``vsfa directions`` runs per hook and position): AUROCs of
    :func:`probes.linear.grouped_cv`."""
    from probes.linear import grouped_cv

    return [grouped_cv(xk, y, groups, n_splits)["auroc"] for xk in x]


def batched_probes(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_splits: int = 5) -> list[float]:
    """All layers x positions at once: AUROCs of :func:`probes.linear.grouped_cv_many`."""
    from probes.linear import grouped_cv_many

    return [r["auroc"] for r in grouped_cv_many(x, y, groups, n_splits)]


def measure_probes(
    n: int = 4000, d: int = 576, layers: int = 30, positions: int = 2, reference_every: int = 20
) -> Measure:
    """Seconds for the batched probes over all layers x positions (value) against the per-layer loops.

    The per-layer loops (the toolkit's :func:`~probes.linear.grouped_cv` and plain scikit-learn) run on every
    ``reference_every``-th layer-position only (a full loop takes many minutes on 2 cores); their time for
    all layer-positions is extrapolated, and the AUROCs are compared where both exist.
    """
    x, y, groups = synthetic_acts(n, d, layers, positions)
    t0 = time.perf_counter()
    ours = batched_probes(x, y, groups)
    sec = time.perf_counter() - t0
    picked = list(range(0, len(x), reference_every))
    t0 = time.perf_counter()
    loop = loop_probes(x[picked], y, groups)
    loop_s = (time.perf_counter() - t0) * len(x) / len(picked)
    t0 = time.perf_counter()
    ref = sklearn_loop(x[picked], y, groups)
    ref_s = (time.perf_counter() - t0) * len(x) / len(picked)
    diff = max(max(abs(ours[i] - a), abs(ours[i] - b)) for i, a, b in zip(picked, ref, loop, strict=True))
    detail = (
        f"N={n}, d={d}, {layers} layers x {positions} positions, 5 group folds, batched preconditioned L-BFGS; per-layer "
        f"grouped_cv ~{loop_s:.0f} s, plain sklearn ~{ref_s:.0f} s (from {len(picked)} layer-positions); "
        f"max |AUROC diff| {diff:.4f}"
    )
    value: float = sec
    if diff > 0.005:
        detail += " (> 0.005: FAIL)"
        value = float("inf")
    numbers = {
        "seconds": sec,
        "loop_seconds_extrapolated": loop_s,
        "sklearn_seconds_extrapolated": ref_s,
        "reference_index": picked,
        "auroc": ours,
        "grouped_cv_auroc": loop,
        "sklearn_auroc": ref,
        "max_auroc_diff": diff,
    }
    return Measure("probes, all layers x positions", value, 10.0, unit="s", detail=detail, numbers=numbers)
