"""The organism base that ships with the toolkit (``vsfa/resources/organism/``), so demos do not retrain it.

The folder is a normal organism model folder (what ``vsfa organism build`` writes): ``load_vlm`` loads it, and
its ``organism_world.json`` plus the seed in its ``manifest.json`` rebuild it (see
``experiments/organism/RESULTS.md`` for the recipe, why this base was chosen, and its measured numbers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vsfa.errors import ArtifactError

SHIPPED_DIR = "organism"


def shipped_base_path() -> Path:
    """Folder of the shipped organism base; :class:`~vsfa.errors.ArtifactError` if it is not installed."""
    from vsfa.resources import RESOURCES

    folder = RESOURCES / SHIPPED_DIR
    if not (folder / "manifest.json").is_file():
        raise ArtifactError(f"{folder}: no shipped organism base (manifest.json missing)")
    return folder


def shipped_base_info() -> dict[str, Any]:
    """The shipped base's manifest: seed, steps, world digest, recipe and the readouts measured when it was saved."""
    return json.loads((shipped_base_path() / "manifest.json").read_text())
