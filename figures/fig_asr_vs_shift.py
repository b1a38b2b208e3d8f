"""Per checkpoint: ASR (and refusal score) against the projection shift of harmful requests, all runs, with a
least-squares fit, its bootstrap band and the pooled Spearman correlation with its CI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import plots
from figures.common import link_report, main


def make(study: Path, out: Path) -> list[Path]:
    rep = link_report(study)
    df = pd.DataFrame(
        [{**c, "arm": r["arm"], "run": r["run"]} for r in rep["runs"] for c in r["checkpoints"]]
    )
    paths = []
    for y in ("asr", "refusal_logodds"):
        c = next(c for c in rep["correlations"]["pooled"] if c["y"] == y and c["method"] == "spearman")
        ci = f"[{c['lo']:+.2f}, {c['hi']:+.2f}]" if c.get("lo") is not None else ""
        text = f"Spearman {c['value']:+.2f} {ci}, n={c['n']}" if c.get("value") is not None else f"n={c['n']}"
        fig = plots.scatter_fit(df, "shift_harmful", y, text, title=f"{y} vs shift ({rep['hook']})")
        paths += plots.save(fig, out / f"{y}_vs_shift")
    return paths


if __name__ == "__main__":
    main(make)
