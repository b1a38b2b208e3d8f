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


def toolkit_probes(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_splits: int = 5) -> list[float]:
    """What ``vsfa directions`` computes per hook and position: :func:`probes.linear.grouped_cv` AUROCs."""
    from probes.linear import grouped_cv

    return [grouped_cv(xk, y, groups, n_splits)["auroc"] for xk in x]


def measure_probes(
    n: int = 4000, d: int = 576, layers: int = 30, positions: int = 2, reference: bool = True
) -> Measure:
    """Seconds for the toolkit's probes over all layers x positions; AUROCs against the plain loop."""
    x, y, groups = synthetic_acts(n, d, layers, positions)
    t0 = time.perf_counter()
    ours = toolkit_probes(x, y, groups)
    sec = time.perf_counter() - t0
    numbers: dict = {"seconds": sec, "auroc": ours, "n": n, "d": d, "layers": layers, "positions": positions}
    detail = f"N={n}, d={d}, {layers} layers x {positions} positions, 5 group folds"
    value: float | None = sec
    if reference:
        t0 = time.perf_counter()
        ref = sklearn_loop(x, y, groups)
        numbers |= {"sklearn_seconds": time.perf_counter() - t0, "sklearn_auroc": ref}
        diff = max(abs(a - b) for a, b in zip(ours, ref, strict=True))
        numbers["max_auroc_diff"] = diff
        detail += f"; plain sklearn loop {numbers['sklearn_seconds']:.1f} s, max |AUROC diff| {diff:.4f}"
        if diff > 0.005:
            detail += " (> 0.005: FAIL)"
            value = float("inf")
    return Measure("probes, all layers x positions", value, 10.0, unit="s", detail=detail, numbers=numbers)
