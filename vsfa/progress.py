"""Progress bars for long loops (items, checkpoints, steps): ``tqdm.auto``, so they show in Jupyter too.

Bars go to stderr, in a terminal, a notebook or a log file alike. They are off with ``quiet`` (the CLI's
``--quiet``) or with the ``TQDM_DISABLE`` environment variable (any value but ``0``/``false``/``no``), which
tqdm itself reads only when ``disable`` is not passed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def enabled(quiet: bool = False) -> bool:
    """Whether bars show: not ``quiet`` and not switched off by ``TQDM_DISABLE``."""
    env = os.environ.get("TQDM_DISABLE", "").strip().lower()
    return not quiet and env in ("", "0", "false", "no")


def progress(
    iterable: Iterable[T] | None = None,
    desc: str = "",
    total: int | None = None,
    quiet: bool = False,
    unit: str = "it",
) -> tqdm:
    """A ``tqdm.auto`` bar over ``iterable`` (or a manual one: ``iterable=None``, ``total=...``, ``.update(n)``).

    The bar is removed when it closes (``leave=False``): what finished is said by the log, not left on screen.
    """
    return tqdm(iterable, desc=desc, total=total, disable=not enabled(quiet), unit=unit, leave=False)
