"""Which direction tracks the safety outcome: per layer, position and method (difference of means, probe
normal), the Spearman correlation (with its CI) between the harmful-request shift and P(refuse) over every
checkpoint of every run; the best candidate starred, the naive last-layer, last-token one ringed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import plots
from figures.common import link_report, main
from vsfa.errors import ArtifactError


def make(study: Path, out: Path) -> list[Path]:
    search = link_report(study).get("direction_search")
    if not search:
        raise ArtifactError(f"{study}/link.json: no direction search (the evaluations have no P(refuse))")
    df = pd.DataFrame(search["all"]).astype({"value": float, "lo": float, "hi": float})
    fig = plots.direction_search(
        df, search["best"], search.get("naive"), title=f"Spearman(shift, {search['outcome']}) per direction"
    )
    return plots.save(fig, out / "direction_search")


if __name__ == "__main__":
    main(make)
