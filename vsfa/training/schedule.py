"""The checkpoint schedule: log-spaced early steps, every N, explicit steps, and the final step."""

from __future__ import annotations

import math

from vsfa.training.config import CheckpointSection


def checkpoint_steps(total_steps: int, cfg: CheckpointSection) -> list[int]:
    """Sorted unique steps in ``1..total_steps`` at which a checkpoint is written.

    Log-spaced: ``round(base**k)`` for k = 0, 1, ... while <= ``log_until`` (base 2: 1, 2, 4, 8, ...).
    """
    steps: set[int] = set()
    if cfg.log_until > 0:
        k = 0
        while True:
            s = round(cfg.log_base**k)
            if s > min(cfg.log_until, total_steps):
                break
            steps.add(max(1, s))
            k += 1
    if cfg.every > 0:
        steps.update(range(cfg.every, total_steps + 1, cfg.every))
    steps.update(s for s in cfg.steps if 1 <= s <= total_steps)
    if cfg.final and total_steps >= 1:
        steps.add(total_steps)
    return sorted(steps)


def total_steps(
    n_records: int, batch_size: int, grad_accum: int, world_size: int, epochs: float, max_steps: int
) -> int:
    """Optimizer steps of a run: ``max_steps`` if set, else ``ceil(epochs * updates per epoch)``."""
    if max_steps > 0:
        return max_steps
    batches = math.ceil(n_records / (batch_size * world_size))
    per_epoch = math.ceil(batches / grad_accum)
    return max(1, math.ceil(epochs * per_epoch))
