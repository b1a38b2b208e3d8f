"""Where the final checkpoint's shift along the persona direction sits: image tokens vs prompt positions
(requests with an image), per arm, harmful requests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import plots
from analysis.trajectory import read_track_file
from figures.common import main, over_seeds, run_folders


def make(study: Path, out: Path) -> list[Path]:
    df = pd.concat([read_track_file(r, "attribution.csv") for r in run_folders(study)], ignore_index=True)
    paths = []
    for label in dict.fromkeys(df["label"]):
        agg = over_seeds(df[df["label"] == label], ["arm", "position"])
        fig = plots.attribution(agg, title=f"shift by position, {label} requests with an image")
        paths += plots.save(fig, out / f"attribution_{label}")
    return paths


if __name__ == "__main__":
    main(make)
