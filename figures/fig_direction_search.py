"""Which direction tracks the safety outcome: per layer, position and method (difference of means, probe
normal), the Spearman correlation (cluster CI over runs) between the harmful-request shift and P(refuse) on the
search runs (solid) and on the held-out runs (dashed); the in-sample best starred, the naive last-layer,
last-token one ringed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import plots
from figures.common import link_report, main
from vsfa.errors import ArtifactError


def flat(candidate: dict) -> dict:
    """A candidate with its search-run estimate as ``value``/``lo``/``hi`` and the held-out one as ``confirm*``."""
    out = {k: candidate[k] for k in ("hook", "layer", "position", "method")}
    for tag, prefix in (("search", ""), ("confirm", "confirm_")):
        est = candidate.get(tag) or {}
        for k in ("value", "lo", "hi"):
            out[f"{prefix}{k}" if prefix else k] = float("nan") if est.get(k) is None else float(est[k])
    return out


def make(study: Path, out: Path) -> list[Path]:
    search = link_report(study).get("direction_search")
    if not search:
        raise ArtifactError(f"{study}/link.json: no direction search (the evaluations have no P(refuse))")
    df = pd.DataFrame([flat(c) for c in search["all"]]).astype(float, errors="ignore")
    fig = plots.direction_search(
        df,
        flat(search["best"]),
        flat(search["naive"]) if search.get("naive") else None,
        title=f"Spearman(shift, {search['outcome']}) per direction",
    )
    return plots.save(fig, out / "direction_search")


if __name__ == "__main__":
    main(make)
