"""Difference-of-means and probes recover planted directions; grouped CV and the selection rule behave."""

from __future__ import annotations

import numpy as np
import pytest

from probes.directions import SelectionRule, select
from probes.linear import cosine, dom, fit_probe, grouped_cv, random_baseline
from vsfa.errors import ConfigError

D, N = 576, 200


def planted(delta: float, seed: int = 0):
    """Isotropic unit-variance noise; the positive class shifted by ``delta`` along a random unit vector."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(D)
    u /= np.linalg.norm(u)
    x = rng.standard_normal((2 * N, D))
    y = np.r_[np.zeros(N, int), np.ones(N, int)]
    x[y == 1] += delta * u
    groups = np.tile(np.arange(20), 2 * N // 20)
    return x, y, u, groups


def test_planted_direction_recovered_by_dom_and_probe():
    # |dom - delta*u| has norm ~ sqrt(2 D / N) = 2.4 noise units, so delta = 30 puts the DoM at cos ~0.997.
    x, y, u, groups = planted(delta=30.0)
    assert cosine(dom(x, y), u) >= 0.99
    assert cosine(fit_probe(x, y).w, u) >= 0.99
    cv = grouped_cv(x, y, groups)
    assert cv["acc"] == 1.0 and cv["auroc"] == 1.0
    base = random_baseline(x, y, norm=float(np.linalg.norm(dom(x, y))), n=16)
    assert cv["d"] > 10 * base["rand_d95"]


def test_no_planted_direction_is_chance():
    x, y, _, groups = planted(delta=0.0, seed=1)
    cv = grouped_cv(x, y, groups)
    assert abs(cv["auroc"] - 0.5) < 0.1
    assert abs(cv["dom_auroc"] - 0.5) < 0.1
    assert 0.35 < cv["acc"] < 0.65


def test_pair_split_exposes_memorised_wording():
    """Each persona pair has its own 'wording' feature that flips with the class: a by-question split (pairs seen in
    training) looks perfect, a by-pair split (pairs unseen) is at chance."""
    rng = np.random.default_rng(0)
    n_pairs, n_q, d = 6, 20, 32
    rows, ys, qs, ps = [], [], [], []
    wording = rng.standard_normal((n_pairs, d)) * 3
    for p in range(n_pairs):
        for q in range(n_q):
            for label in (0, 1):
                rows.append(rng.standard_normal(d) + (1 if label else -1) * wording[p])
                ys.append(label)
                qs.append(q)
                ps.append(p)
    x, y = np.array(rows), np.array(ys)
    by_q = grouped_cv(x, y, np.array(qs))
    by_pair = grouped_cv(x, y, np.array(ps))
    assert by_q["acc"] > 0.95
    assert by_pair["acc"] < 0.75


def _row(layer, acc_pair, sep):
    return {
        "hook": f"blocks.{layer}.hook_resid_post",
        "layer": layer,
        "position": "last",
        "acc_q": 0.95,
        "acc_pair": acc_pair,
        "sep_auroc": sep,
    }


def test_selection_never_rests_on_accuracy_alone():
    # The SmolLM2 situation: the most accurate layer does not separate harmful from harmless requests.
    rows = [
        _row(12, 0.77, 0.87),
        _row(13, 0.95, 0.82),
        _row(14, 0.88, 0.86),
        _row(15, 0.93, 0.48),
        _row(16, 0.95, 0.45),
    ]
    chosen, note = select(rows, SelectionRule(), n_layers=30)
    assert chosen["layer"] == 13 and "eligible" in note
    heavy = select(rows, SelectionRule(weight_separation=0.9), n_layers=30)[0]
    assert heavy["layer"] == 14
    assert select(rows, SelectionRule(exclude_last_frac=0.58), n_layers=30)[0]["layer"] == 12
    with pytest.raises(ConfigError, match="accuracy alone"):
        SelectionRule(weight_separation=0.0)
    none_ok, note = select([_row(3, 0.55, 0.5)], SelectionRule(), n_layers=30)
    assert none_ok["layer"] == 3 and note.startswith("WARNING")
