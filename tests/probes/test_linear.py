"""Difference-of-means and probes recover planted directions; grouped CV and the selection rule behave."""

from __future__ import annotations

import numpy as np
import pytest

from probes.directions import SelectionRule, select
from probes.linear import cosine, dom, fit_probe, grouped_cv, grouped_cv_many, random_baseline
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


def test_batched_cv_equals_the_per_layer_loop():
    """Every layer x position at once (one batched L-BFGS in torch) gives the scikit-learn loop's held-out
    numbers: strong, weak and absent signals, correlated features (the preconditioner's case)."""
    rng = np.random.default_rng(3)
    mix = rng.standard_normal((8, 64)) / 2  # shared low-rank structure: correlated features
    stacks, y = [], np.r_[np.zeros(150, int), np.ones(150, int)]
    groups = np.arange(300) % 15
    for strength in (0.0, 1.5, 3.0, 8.0):
        u = rng.standard_normal(64)
        x = (
            rng.standard_normal((300, 8)) @ mix
            + rng.standard_normal((300, 64))
            + np.outer(y, u) * strength / 8
        )
        stacks.append(x)
    many = grouped_cv_many(np.stack(stacks), y, groups)
    for x, got in zip(stacks, many, strict=True):
        want = grouped_cv(x, y, groups)
        assert abs(got["auroc"] - want["auroc"]) < 0.005 and abs(got["acc"] - want["acc"]) <= 0.01
        for key in ("dom_auroc", "dom_acc", "d"):
            assert got[key] == pytest.approx(want[key], abs=1e-4)
    assert [round(r["auroc"], 1) for r in many] == [0.5, 0.8, 1.0, 1.0]  # absent, weak, strong, perfect
    assert grouped_cv_many(np.stack(stacks), y, np.zeros(300)) == [None] * 4  # one group: nothing to hold out


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


def _anisotropic(seed: int, kind: str, size: float):
    """Classes of N each in R^D, the positive one shifted by ``size`` along a dense random-sign unit vector.

    ``kind="spiked"``: a random rank-16 subspace with SDs 10 .. 2 on top of unit isotropic noise (the shape of
    residual-stream activations: a few dominant directions over a bulk). ``kind="diagonal"``: independent
    coordinates with SDs log-spaced over an order of magnitude (0.3 .. 3). Returns x, y, the unit vector, the
    per-coordinate noise SD, Sigma^-1 applied to the unit vector, and the generator.
    """
    rng = np.random.default_rng(seed)
    u = rng.choice([-1.0, 1.0], D) / np.sqrt(D)
    y = np.r_[np.zeros(N, int), np.ones(N, int)]
    if kind == "spiked":
        basis = np.linalg.qr(rng.standard_normal((D, 16)))[0]
        spikes = np.geomspace(10, 2, 16)
        x = rng.standard_normal((2 * N, D)) + (rng.standard_normal((2 * N, 16)) * spikes) @ basis.T
        sd = np.sqrt(1 + basis**2 @ spikes**2)
        sigma_inv_u = np.linalg.solve(np.eye(D) + (basis * spikes**2) @ basis.T, u)
    else:
        sd = np.geomspace(0.3, 3.0, D)[rng.permutation(D)]
        x = rng.standard_normal((2 * N, D)) * sd
        sigma_inv_u = u / sd**2
    x[y == 1] += size * u
    x += rng.normal(0, 3, D)  # both classes share a large mean, as activations do
    return x, y, u, sd, sigma_inv_u, rng


def test_planted_direction_recovered_under_anisotropic_noise_at_realistic_snr():
    """Spiked covariance; the planted difference is under half a noise SD in every coordinate (0.5 / SD <= 0.5)."""
    x, y, u, sd, _, rng = _anisotropic(seed=0, kind="spiked", size=12.0)
    assert np.max(12.0 * np.abs(u) / sd) < 0.5
    assert cosine(dom(x, y), u) >= 0.9
    assert cosine(fit_probe(x, y).w, u) >= 0.9
    assert abs(cosine(rng.standard_normal(D), u)) < 0.15  # a random direction: ~1/sqrt(D) = 0.04


def test_probe_normal_estimates_sigma_inverse_mu_not_mu():
    """With unequal coordinate variances the logistic probe's normal is the discriminant direction
    Sigma^-1 mu, not the mean difference mu: it down-weights the noisy coordinates. Its cosine with the planted
    mu therefore stalls at the population value cos(Sigma^-1 mu, mu) (0.65 for SDs over 0.3 .. 3) at any sample
    size or C, while the DoM keeps converging on mu. Track the DoM; use the probe to classify."""
    x, y, u, sd, sigma_inv_u, _ = _anisotropic(seed=0, kind="diagonal", size=10.0)
    assert (
        np.sqrt(np.mean((10.0 * u / sd) ** 2)) < 1
    )  # under 1 noise SD per coordinate (RMS over coordinates)
    assert cosine(dom(x, y), u) >= 0.9
    w = fit_probe(x, y).w
    population = cosine(sigma_inv_u, u)
    assert population < 0.7
    assert cosine(w, u) == pytest.approx(population, abs=0.05)
    assert cosine(w, sigma_inv_u) >= 0.95
