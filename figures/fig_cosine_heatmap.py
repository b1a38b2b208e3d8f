"""Layer x checkpoint heatmaps for the first VSFA run: cosine of the direction re-derived at the checkpoint
with the base direction, and cosine of the fine-tuning shift (harmful requests) with the base direction."""

from __future__ import annotations

from pathlib import Path

from analysis import plots
from figures.common import main, selected, trajectories


def make(study: Path, out: Path) -> list[Path]:
    _, position = selected(study)
    df = trajectories(study)
    arms = list(dict.fromkeys(df["arm"]))
    run = df[df["arm"] == ("vsfa" if "vsfa" in arms else arms[0])]["run"].iloc[0]
    df = df[(df["run"] == run) & (df["position"] == position)]
    paths = []
    for metric, label, title in (
        ("cos_rederived", "all", "cos(direction at checkpoint, base direction)"),
        ("shift_cos", "harmful", "cos(fine-tuning shift of harmful requests, base direction)"),
    ):
        sub = df[(df["metric"] == metric) & (df["label"] == label)]
        matrix = sub.pivot_table(index="layer", columns="step", values="value").sort_index()
        fig = plots.heatmap(matrix, title=f"{run}: {title}")
        paths += plots.save(fig, out / f"heatmap_{metric}")
    return paths


if __name__ == "__main__":
    main(make)
