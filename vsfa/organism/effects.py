"""The organism's arm effect: VSFA minus control P(refuse), with a two-level bootstrap CI.

A fine-tune arm on one base gives a matrix ``P[seed, prompt]`` (no-context harmful P(refuse) per LoRA seed and
prompt). The effect of arm A over arm B on that base is ``mean(P_A) - mean(P_B)``. Its 95% interval resamples
both sources of noise: the fine-tune seeds (with replacement, within each arm) and the prompts (the same
resampled prompt indices for both arms, since the prompts are shared).
"""

from __future__ import annotations

import numpy as np

from vsfa.stats import Estimate


def arm_effect(a: np.ndarray, b: np.ndarray, n_boot: int = 4000, seed: int = 0) -> Estimate:
    """Effect of arm ``a`` over arm ``b``: ``a``, ``b`` are ``[seeds, prompts]`` arrays over the same prompts."""
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"arms were read out on different prompt sets ({a.shape[1]} vs {b.shape[1]} prompts)"
        )
    value = float(a.mean() - b.mean())
    rng = np.random.default_rng(seed)
    n_prompts = a.shape[1]
    boots = np.empty(n_boot)
    for i in range(n_boot):
        p = rng.integers(0, n_prompts, n_prompts)
        sa = rng.integers(0, a.shape[0], a.shape[0])
        sb = rng.integers(0, b.shape[0], b.shape[0])
        boots[i] = a[np.ix_(sa, p)].mean() - b[np.ix_(sb, p)].mean()
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return Estimate(value, float(lo), float(hi), int(min(a.shape[0], b.shape[0])))
