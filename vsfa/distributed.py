"""Data-parallel helpers for ``accelerate launch`` / ``torchrun``: rank, world, barrier, item split, error sync.

One process (no launcher) is world 1 and every function here is a no-op or the identity, so callers need no
special case. Under a launcher (``RANK``/``WORLD_SIZE`` in the environment) the process group is joined on first
use through :class:`accelerate.PartialState` (gloo without CUDA, NCCL with it). Capture and eval split their fixed
batches between processes with :func:`my_share` (rank ``r`` takes batches ``r, r+world, ...``), so each batch is
computed exactly as a single process computes it, and the main process merges the parts in item order.
Training needs none of this: the HF Trainer shards batches itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from vsfa.errors import VsfaError

T = TypeVar("T")

__all__ = [
    "barrier",
    "collective",
    "from_main",
    "is_main",
    "local_device",
    "my_share",
    "rank",
    "raise_any",
    "shutdown",
    "world",
]


def rank() -> int:
    """This process's global rank (0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def world() -> int:
    """Number of processes (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """True on the process that writes shared artifacts (rank 0)."""
    return rank() == 0


def _state():
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())  # cpu: gloo (accelerate's MULTI_CPU)


def barrier() -> None:
    """Wait until every process reaches this point (no-op in one process)."""
    if world() > 1:
        _state().wait_for_everyone()


def from_main(value: T) -> T:
    """The main process's ``value`` on every process (each passes its own; only rank 0's is kept)."""
    if world() == 1:
        return value
    import torch.distributed as dist

    _state()
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def my_share(seq: Sequence[T]) -> list[tuple[int, T]]:
    """``(index, element)`` pairs of ``seq`` this process handles: indices ``rank, rank+world, ...``."""
    return [(i, x) for i, x in enumerate(seq) if i % world() == rank()]


def local_device(device: str) -> str:
    """``cuda`` -> ``cuda:<LOCAL_RANK>`` under a launcher (one GPU per process); other devices unchanged."""
    if device == "cuda" and world() > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def raise_any(error: BaseException | None) -> None:
    """Collective error check: every process passes its own error (or None); if any failed, all raise.

    Without it one failing process would leave the others waiting at the next barrier forever. The error is
    re-raised as it was on the process that had it; the others raise a :class:`VsfaError` naming the rank.
    """
    if world() == 1:
        if error is not None:
            raise error
        return
    import torch.distributed as dist

    _state()
    msgs: list[Any] = [None] * world()
    dist.all_gather_object(msgs, None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    for r, msg in enumerate(msgs):
        if msg is not None:
            raise VsfaError(f"process {r} of {world()} failed: {msg}")


def shutdown() -> None:
    """Leave the process group, if this process joined one (call once, at exit).

    A gloo group still alive when the interpreter exits can abort the process ("terminate called without an
    active exception", exit -6) after its work is done; destroying it first ends every process cleanly.
    """
    if world() == 1:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def collective() -> Iterator[None]:
    """Run the block on every process; if it fails on any of them, every process raises (see :func:`raise_any`)."""
    err: BaseException | None = None
    try:
        yield
    except Exception as e:  # noqa: BLE001 - shared with the other processes, then re-raised
        err = e
    raise_any(err)
