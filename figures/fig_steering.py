"""Steering dose-response on the base model: refusal score, ASR and over-refusal against alpha (in class
gaps) for the chosen direction and norm-matched random directions; degenerate-output rate annotated."""

from __future__ import annotations

from pathlib import Path

from analysis import plots
from figures.common import main, steer_curves


def make(study: Path, out: Path) -> list[Path]:
    df = steer_curves(study)
    df = df[df["mode"] == "steer"]
    fig = plots.dose_response(
        df, ["refusal_logodds_harmful", "asr", "over_refusal"], title="activation addition on the base model"
    )
    return plots.save(fig, out / "steering")


if __name__ == "__main__":
    main(make)
