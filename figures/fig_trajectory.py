"""Projection shift along the base persona direction over training steps, VSFA vs control (vs text), harmful
and harmless requests side by side (the harmless shift is the drift baseline); dashed: the 95th percentile along
random directions. ``trajectory``: the selected direction (a study's: chosen by causal scores on selection
items); ``trajectory_named``: the in-sample best of ``vsfa link``'s search on the search runs, when it is another
one (another layer, position or method)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import plots
from figures.common import link_report, main, over_seeds, selected, track_manifest, trajectories
from vsfa.errors import ArtifactError


def _figure(df: pd.DataFrame, hook: str, position: str, method: str, title: str):
    df = df[(df["hook"] == hook) & (df["position"] == position) & (df["label"] != "all")]
    if "method" in df:
        df = df[df["method"] == method]
    df = df.assign(set=df["set"] + ": " + df["label"])
    agg = over_seeds(df[df["metric"] == "shift"], ["arm", "set", "step"])
    rand = df[df["metric"] == "rand_shift95"].groupby(["arm", "set", "step"], as_index=False)["value"].mean()
    agg = agg.merge(rand.rename(columns={"value": "rand95"}), on=["arm", "set", "step"], how="left")
    return plots.trajectory(agg, title=f"{title} at {hook} ({position}, {method})")


def make(study: Path, out: Path) -> list[Path]:
    hook, position = selected(study)
    man = track_manifest(study)
    own = (man.get("selected") or {}).get("method") or man.get("method", "dom")
    df = trajectories(study, method="all")
    paths = plots.save(
        _figure(df, hook, position, own, "shift along the persona direction"), out / "trajectory"
    )
    try:
        best = link_report(study).get("direction_search", {}).get("best")
    except ArtifactError:  # not linked yet: the selected direction only
        best = None
    value = ((best or {}).get("search") or {}).get("value")  # None: no direction's shift tracks anything
    if value is not None and (best["hook"], best["position"], best["method"]) != (hook, position, own):
        title = (
            f"shift along the search's in-sample best (Spearman with P(refuse) {value:+.2f} on search runs)"
        )
        fig = _figure(df, best["hook"], best["position"], best["method"], title)
        paths += plots.save(fig, out / "trajectory_named")
    return paths


if __name__ == "__main__":
    main(make)
