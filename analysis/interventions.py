"""Activation interventions on a HookedVLM: activation addition (steering) and directional ablation.

Steering strength ``alpha`` is in units of the direction's own size: the hook adds ``alpha * v`` where ``v``
is the *raw* difference of class means, so ``alpha = 1`` moves an activation by one class gap. (On
SmolLM2-135M, alpha of 0.5x the residual norm already destroyed every output; 1-8x the class gap was the
useful range.) Controls are random directions with the same norm.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from probes.directions import Direction, DirectionSet
from probes.hooked import HOOK_KINDS, HookedVLM, HookFn, hook_name

POSITIONS = ("all", "prompt", "generated")


def steering_hook(vector: torch.Tensor, alpha: float, positions: str = "all") -> HookFn:
    """Add ``alpha * vector`` to the activation.

    ``positions``: ``all`` (every position of every forward, prompt and generated tokens), ``prompt`` (only a
    multi-token forward, i.e. the prompt pass of generation), ``generated`` (only single-token decoding steps).
    """
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, not {positions!r}")

    def hook(act: torch.Tensor, name: str) -> torch.Tensor | None:
        prefill = act.shape[1] > 1
        if (positions == "prompt" and not prefill) or (positions == "generated" and prefill):
            return None
        return act + alpha * vector.to(device=act.device, dtype=act.dtype)

    return hook


def ablation_hook(vector: torch.Tensor) -> HookFn:
    """Project the unit direction out of the activation: ``x - (x . u) u``."""
    unit = vector / vector.norm().clamp_min(1e-12)

    def hook(act: torch.Tensor, name: str) -> torch.Tensor:
        u = unit.to(device=act.device, dtype=act.dtype)
        return act - (act @ u).unsqueeze(-1) * u

    return hook


def ablation_hooks(
    vector: torch.Tensor,
    n_layers: int,
    kinds: Sequence[str] = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out"),
) -> list[tuple[str, HookFn]]:
    """Directional ablation at every layer (Arditi et al.: each block input and each attention/MLP output)."""
    unknown = set(kinds) - set(HOOK_KINDS)
    if unknown:
        raise ValueError(f"unknown hook kinds {sorted(unknown)}")
    fn = ablation_hook(vector)
    return [(hook_name(layer, kind), fn) for layer in range(n_layers) for kind in kinds]


def random_like(like: torch.Tensor, n: int, seed: int = 0) -> list[torch.Tensor]:
    """``n`` random directions with the norm of ``like`` (the norm-matched control)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        r = torch.randn(like.shape, generator=gen, dtype=torch.float32)
        out.append(r / r.norm() * like.float().norm())
    return out


def degenerate(text: str, min_distinct: float = 0.3) -> bool:
    """A crude degeneracy flag for steered generations: empty, no letters, or highly repetitive.

    Repetitive = fewer than ``min_distinct`` of the character trigrams (texts of >= 20 characters) or of the
    word bigrams (>= 8 words) are distinct. Reported beside every point of a steering curve: strong steering
    turns text into repetition ("icipicipicip...") before it changes behaviour.
    """
    stripped = text.strip()
    if not stripped or not any(c.isalpha() for c in stripped):
        return True
    chars = "".join(stripped.split())
    if len(chars) >= 20:
        trigrams = [chars[i : i + 3] for i in range(len(chars) - 2)]
        if len(set(trigrams)) / len(trigrams) < min_distinct:
            return True
    words = stripped.lower().split()
    if len(words) >= 8:
        bigrams = list(zip(words, words[1:], strict=False))
        if len(set(bigrams)) / len(bigrams) < min_distinct:
            return True
    return False


@contextlib.contextmanager
def steering(
    hooked: HookedVLM, direction: Direction | DirectionSet, alpha: float, positions: str = "all"
) -> Iterator[None]:
    """Inside the block, every forward of ``hooked`` adds ``alpha`` class gaps along ``direction``.

    A :class:`~probes.directions.DirectionSet` steers along its selected direction, sized to its class gap.
    """
    if isinstance(direction, DirectionSet):
        direction = direction.sized()  # the selected direction, its norm one class gap
    with hooked.hooks([(direction.hook, steering_hook(direction.vector, alpha, positions))]):
        yield
