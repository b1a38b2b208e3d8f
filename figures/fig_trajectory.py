"""Projection shift along the base persona direction over training steps, VSFA vs control (vs text), harmful
and harmless requests side by side (the harmless shift is the drift baseline); dashed: the 95th percentile along random directions."""

from __future__ import annotations

from pathlib import Path

from analysis import plots
from figures.common import main, over_seeds, selected, trajectories


def make(study: Path, out: Path) -> list[Path]:
    hook, position = selected(study)
    df = trajectories(study)
    df = df[(df["hook"] == hook) & (df["position"] == position) & (df["label"] != "all")]
    df = df.assign(set=df["set"] + ": " + df["label"])
    agg = over_seeds(df[df["metric"] == "shift"], ["arm", "set", "step"])
    rand = df[df["metric"] == "rand_shift95"].groupby(["arm", "set", "step"], as_index=False)["value"].mean()
    agg = agg.merge(rand.rename(columns={"value": "rand95"}), on=["arm", "set", "step"], how="left")
    fig = plots.trajectory(agg, title=f"shift along the persona direction at {hook} ({position})")
    return plots.save(fig, out / "trajectory")


if __name__ == "__main__":
    main(make)
