"""Linear read-outs of a contrast: difference-of-means and logistic probes, with grouped cross-validation.

* :func:`dom` — difference of class means (positive minus negative), the direction the toolkit tracks.
* :func:`fit_probe` — scikit-learn logistic regression on standardised activations. Features are centred and
  divided by the *pooled within-class* SD (not the total SD, which would let the contrast shrink its own
  features); the fitted normal is mapped back to activation space (``w = coef / scale``), so it can be
  compared with the DoM direction and applied to raw activations of another model.
* :func:`grouped_cv` — ``GroupKFold`` cross-validation: held out by question, or by persona pair (the honest
  number: a probe can memorise the wording of the system prompts it was trained on).
* Metrics: accuracy, AUROC, Cohen's d of projections; norm-matched random directions as a baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vsfa.stats import cohens_d


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def dom(x: Any, y: Any) -> np.ndarray:
    """Difference of means ``mean(x[y == 1]) - mean(x[y == 0])`` (unnormalised)."""
    x, y = _np(x), np.asarray(y)
    return x[y == 1].mean(0) - x[y == 0].mean(0)


def unit(v: Any) -> np.ndarray:
    """``v / |v|`` (a zero vector stays zero)."""
    v = _np(v)
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def cosine(a: Any, b: Any) -> float:
    """Cosine similarity of two vectors (NaN when either is zero)."""
    a, b = _np(a), _np(b)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


def auroc(scores: Any, y: Any) -> float:
    """Area under the ROC curve of ``scores`` for ``y == 1`` (NaN when a class is missing)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, _np(scores)))


def within_class_scale(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pooled within-class SD per feature (features with no spread get scale 1)."""
    centred = x.copy()
    for c in np.unique(y):
        centred[y == c] -= centred[y == c].mean(0)
    s = centred.std(0)
    return np.where(s > 1e-12, s, 1.0)


@dataclass
class ProbeFit:
    """A logistic probe expressed in raw activation space: ``score(x) = x @ w + b``."""

    w: np.ndarray
    b: float
    C: float

    def decision(self, x: Any) -> np.ndarray:
        return _np(x) @ self.w + self.b

    def predict(self, x: Any) -> np.ndarray:
        return (self.decision(x) > 0).astype(int)

    def accuracy(self, x: Any, y: Any) -> float:
        return float((self.predict(x) == np.asarray(y)).mean())


def fit_probe(x: Any, y: Any, C: float = 1.0, max_iter: int = 2000) -> ProbeFit:
    """Logistic regression on standardised activations, returned in raw space."""
    from sklearn.linear_model import LogisticRegression

    x, y = _np(x), np.asarray(y)
    mean = x.mean(0)
    scale = within_class_scale(x, y)
    clf = LogisticRegression(C=C, max_iter=max_iter)
    clf.fit((x - mean) / scale, y)
    coef = clf.coef_[0]
    w = coef / scale
    b = float(clf.intercept_[0] - (mean / scale) @ coef)
    return ProbeFit(w=w, b=b, C=C)


def dom_classifier(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Unit DoM direction and the midpoint threshold of the class-mean projections."""
    u = unit(dom(x, y))
    p = x @ u
    return u, float((p[y == 1].mean() + p[y == 0].mean()) / 2)


def grouped_cv(
    x: Any, y: Any, groups: Any, n_splits: int = 5, C: float = 1.0
) -> dict[str, float | int] | None:
    """Cross-validated metrics with whole groups held out (``GroupKFold``).

    Returns probe accuracy/AUROC, DoM accuracy/AUROC (train-fold direction, midpoint threshold) and Cohen's d of
    the held-out DoM projections; None when there are fewer than two groups.
    """
    from sklearn.model_selection import GroupKFold

    x, y, groups = _np(x), np.asarray(y), np.asarray(groups)
    k = min(n_splits, len(np.unique(groups)))
    if k < 2:
        return None
    probe_scores = np.zeros(len(y))
    dom_scores = np.zeros(len(y))
    probe_hits = np.zeros(len(y), dtype=bool)
    dom_hits = np.zeros(len(y), dtype=bool)
    for tr, te in GroupKFold(n_splits=k).split(x, y, groups):
        if len(np.unique(y[tr])) < 2:
            return None
        fit = fit_probe(x[tr], y[tr], C=C)
        probe_scores[te] = fit.decision(x[te])
        probe_hits[te] = (probe_scores[te] > 0) == (y[te] == 1)
        u, mid = dom_classifier(x[tr], y[tr])
        dom_scores[te] = x[te] @ u - mid
        dom_hits[te] = (dom_scores[te] > 0) == (y[te] == 1)
    return {
        "acc": float(probe_hits.mean()),
        "auroc": auroc(probe_scores, y),
        "dom_acc": float(dom_hits.mean()),
        "dom_auroc": auroc(dom_scores, y),
        "d": cohens_d(dom_scores[y == 1], dom_scores[y == 0]),
        "folds": k,
    }


_RANDOM_SALT = 0x7A11D  # keeps baseline draws independent of data drawn with the same small seed


def random_directions(d: int, norm: float, n: int = 32, seed: int = 0) -> np.ndarray:
    """``n`` Gaussian random directions in ``R^d``, each scaled to ``norm`` (norm-matched baseline)."""
    r = np.random.default_rng([seed, _RANDOM_SALT]).standard_normal((n, d))
    return r / np.linalg.norm(r, axis=1, keepdims=True) * norm


def random_baseline(
    x: Any, y: Any, norm: float, sep_x: Any = None, sep_y: Any = None, n: int = 32, seed: int = 0
) -> dict[str, float]:
    """What norm-matched random directions score: 95th percentile of |Cohen's d| between the classes and of
    the separation AUROC folded to >= 0.5 (a real direction should beat both)."""
    x, y = _np(x), np.asarray(y)
    r = random_directions(x.shape[1], norm, n, seed)
    proj = x @ r.T / max(norm, 1e-12)
    ds = [abs(cohens_d(proj[y == 1, i], proj[y == 0, i])) for i in range(n)]
    out = {"rand_d95": float(np.nanquantile(ds, 0.95))}
    if sep_x is not None:
        sp = _np(sep_x) @ r.T / max(norm, 1e-12)
        aucs = [auroc(sp[:, i], sep_y) for i in range(n)]
        out["rand_sep95"] = float(np.nanquantile([max(a, 1 - a) for a in aucs], 0.95))
    return out
