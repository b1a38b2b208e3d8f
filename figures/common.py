"""What every figure script reads: the runs of a study (or one run), their trajectories, the directions table,
``link.json`` and the steering curves. A figure script is ``make(study, out) -> list[Path]``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from analysis.trajectory import TRACK_DIR, read_track_manifest, read_trajectory
from vsfa.errors import ArtifactError
from vsfa.io import read_json, read_manifest
from vsfa.stats import bootstrap


def run_folders(study: str | Path) -> list[Path]:
    """Tracked runs: ``STUDY/runs/*`` (a study) or the folder itself (a single run)."""
    study = Path(study)
    if (study / TRACK_DIR).is_dir():
        return [study]
    runs = sorted(p for p in (study / "runs").glob("*") if (p / TRACK_DIR / "manifest.json").is_file())
    if not runs:
        raise ArtifactError(f"{study}: no tracked runs (run `vsfa track --run RUN` first)")
    return runs


def trajectories(study: str | Path, method: str | None = None) -> pd.DataFrame:
    """All runs' ``trajectory.csv`` rows, concatenated: of the direction set's own method, or ``method``
    (``"all"``: every method), as :func:`analysis.trajectory.read_trajectory`."""
    return pd.concat([read_trajectory(r, method) for r in run_folders(study)], ignore_index=True)


def track_manifest(study: str | Path) -> dict[str, Any]:
    return read_track_manifest(run_folders(study)[0])


def selected(study: str | Path) -> tuple[str, str]:
    """``(hook, position)`` of the selected direction."""
    sel = track_manifest(study).get("selected") or {}
    if not sel:
        raise ArtifactError(f"{study}: the directions have no selected layer")
    return sel["hook"], sel["position"]


def directions_table(study: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The per-layer table of the base directions the runs were tracked against, and its sidecar.

    The recorded path is tried first, then ``STUDY/directions/<name>`` (a study moved or copied elsewhere).
    """
    recorded = Path(track_manifest(study)["directions"])
    candidates = [recorded, Path(study) / "directions" / recorded.name]
    side = next((c for c in candidates if c.is_file()), None)
    if side is None:
        raise ArtifactError(f"{recorded}: direction file of the tracked runs not found")
    meta = read_json(side, ArtifactError)
    return pd.DataFrame(meta["table"]), meta


def link_report(study: str | Path) -> dict[str, Any]:
    study = Path(study)
    path = study / "link.json"
    if not path.is_file():
        raise ArtifactError(f"{path}: not found (run `vsfa link` first)")
    return read_json(path, ArtifactError)


def steer_curves(study: str | Path) -> pd.DataFrame:
    folder = Path(study) / "steer"
    read_manifest(folder)
    return pd.read_csv(folder / "curves.csv")


def over_seeds(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean over runs of the same arm; CI = the item CI for one run, a bootstrap over runs otherwise."""
    rows = []
    for key, sub in df.groupby(by, sort=False):
        vals = sub["value"].to_numpy(float)
        if len(sub) == 1:
            lo, hi = float(sub["lo"].iloc[0]), float(sub["hi"].iloc[0])
        else:
            est = bootstrap(vals, n_boot=1000, seed=0)
            lo, hi = est.lo, est.hi
        rows.append(
            {**dict(zip(by, key, strict=True)), "value": vals.mean(), "lo": lo, "hi": hi, "runs": len(sub)}
        )
    return pd.DataFrame(rows)


def main(make) -> None:
    """Command-line entry of one figure script: ``python figures/<script>.py STUDY [OUT]``."""
    import sys

    if len(sys.argv) not in (2, 3):
        sys.exit(f"usage: python {sys.argv[0]} STUDY_OR_RUN [OUT_DIR]")
    study = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) == 3 else study / "figures"
    for p in make(study, out):
        print(p)
