"""Figure functions render PNG + PDF from tidy frames (including awkward inputs: few points, NaNs)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import plots


def _saved(fig, tmp_path, name):
    paths = plots.save(fig, tmp_path / name)
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_all_figure_kinds(tmp_path):
    layers = pd.DataFrame(
        [
            {"layer": layer, "position": pos, "acc_pair": 0.5 + 0.04 * layer, "random_acc_pair": 0.5}
            for layer in range(6)
            for pos in ("last", "image_mean")
        ]
    )
    _saved(plots.layer_profile(layers, ["acc_pair"], chosen_layer=3), tmp_path, "layers")
    traj = pd.DataFrame(
        [
            {
                "arm": arm,
                "set": s,
                "step": step,
                "value": k * step / 10,
                "lo": k * step / 10 - 0.1,
                "hi": k * step / 10 + 0.1,
            }
            for k, arm in enumerate(["vsfa", "control"])
            for s in ("harmful", "harmless")
            for step in (0, 5, 10, 20)
        ]
    )
    _saved(plots.trajectory(traj), tmp_path, "traj")
    heat = pd.DataFrame(
        np.random.default_rng(0).uniform(-1, 1, (4, 5)), index=range(4), columns=[0, 5, 10, 20, 40]
    )
    _saved(plots.heatmap(heat), tmp_path, "heat")
    pts = pd.DataFrame(
        {"arm": ["vsfa"] * 4 + ["control"] * 4, "shift": np.arange(8.0), "asr": [*np.arange(7.0), np.nan]}
    )
    _saved(plots.scatter_fit(pts, "shift", "asr", stat_text="rho=1"), tmp_path, "scatter")
    _saved(plots.scatter_fit(pts.head(2), "shift", "asr"), tmp_path, "scatter-two-points")
    dose = pd.DataFrame(
        [
            {
                "direction": d,
                "alpha": a,
                "score": a * (d == "chosen"),
                "score_lo": a - 1,
                "score_hi": a + 1,
                "degenerate": 0.1,
            }
            for d in ("chosen", "random-0", "random-1")
            for a in (-2, 0, 2, 4)
        ]
    )
    _saved(plots.dose_response(dose, ["score"]), tmp_path, "dose")
    attr = pd.DataFrame(
        [
            {"arm": arm, "position": pos, "value": 1.0, "lo": 0.5, "hi": 1.5}
            for arm in ("vsfa", "control")
            for pos in ("image_mean", "last")
        ]
    )
    _saved(plots.attribution(attr), tmp_path, "attr")
    search = pd.DataFrame(
        [
            {"layer": layer, "position": pos, "method": m, "value": v, "lo": v - 0.2, "hi": v + 0.2}
            for layer, v in ((0, np.nan), (1, 0.3), (2, 0.9))
            for pos in ("last", "image_mean")
            for m in ("dom", "probe")
        ]
    )
    best = {"layer": 2, "position": "last", "value": 0.9}
    _saved(plots.direction_search(search, best, {**best, "layer": 1, "value": 0.3}), tmp_path, "search")
