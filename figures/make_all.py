"""Every figure of a study (or a single tracked run): ``python figures/make_all.py STUDY [OUT_DIR]``.

Writes PNG + PDF into ``STUDY/figures`` (default). A figure whose inputs are missing (e.g. no steering run
yet) is skipped with a note, the others are still made.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from figures import (
    fig_asr_vs_shift,
    fig_attribution,
    fig_cosine_heatmap,
    fig_direction_search,
    fig_directions,
    fig_steering,
    fig_trajectory,
)
from vsfa.errors import ArtifactError

logger = logging.getLogger(__name__)

SCRIPTS = (
    fig_directions,
    fig_trajectory,
    fig_cosine_heatmap,
    fig_asr_vs_shift,
    fig_direction_search,
    fig_steering,
    fig_attribution,
)


def make_all(study: str | Path, out: str | Path | None = None) -> list[Path]:
    """Make every figure; returns the files written."""
    study = Path(study)
    out = Path(out) if out else study / "figures"
    paths: list[Path] = []
    for script in SCRIPTS:
        name = script.__name__.rsplit(".", 1)[-1]
        try:
            paths += script.make(study, out)
        except ArtifactError as e:
            logger.warning("skipped %s: %s", name, e)
    return paths


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python figures/make_all.py STUDY_OR_RUN [OUT_DIR]")
    for p in make_all(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None):
        print(p)
