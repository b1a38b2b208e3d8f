"""Data files shipped with the toolkit (prompt sets, word lists, refusal lists), found by name."""

from __future__ import annotations

from pathlib import Path

from vsfa.errors import DataError

RESOURCES = Path(__file__).resolve().parent


def resource_path(name: str) -> Path:
    """Path of a shipped data file, e.g. ``resource_path("requests.jsonl")``; missing -> DataError."""
    path = RESOURCES / name
    if not path.exists():
        raise DataError(f"{path}: shipped resource not found")
    return path
