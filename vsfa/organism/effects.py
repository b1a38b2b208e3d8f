"""The organism's arm effect: VSFA minus control P(refuse), with a two-level bootstrap CI.

A fine-tune arm on one base gives a matrix ``P[seed, prompt]`` (no-context harmful P(refuse) per LoRA seed and
prompt). The effect of arm A over arm B on that base is ``mean(P_A) - mean(P_B)``. Its 95% interval resamples
both sources of noise: the fine-tune seeds (with replacement, within each arm) and the prompts (the same
resampled prompt indices for both arms, since the prompts are shared). The statistic is the toolkit's
:func:`vsfa.stats.arm_difference`, which the study's link stage uses too.
"""

from __future__ import annotations

import numpy as np

from vsfa.stats import Estimate, arm_difference


def arm_effect(a: np.ndarray, b: np.ndarray, n_boot: int = 4000, seed: int = 0) -> Estimate:
    """Effect of arm ``a`` over arm ``b``: ``a``, ``b`` are ``[seeds, prompts]`` arrays over the same prompts."""
    return arm_difference(a, b, n_boot=n_boot, seed=seed)
