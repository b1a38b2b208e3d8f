"""Trajectory metrics on a planted fine-tuning shift: recovered along the planted direction, not along random
ones; harmful and harmless requests measured apart; tidy rows carry every estimate with its CI."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from analysis.trajectory import COLUMNS, SET_METRICS, _rows_for
from probes.directions import derive
from probes.hooked import hook_name
from probes.stages import compare
from tests.probes.test_stages import persona_rows, synthetic_store

D = 64


def _contrast(tmp_path, direction: torch.Tensor, tag: str):
    """A persona-like contrast whose class means differ by 2 x ``direction`` (unit)."""
    g = torch.Generator().manual_seed(1)
    n = 80
    rows, y = persona_rows(n)
    x = torch.randn(n, D, generator=g) * 0.1 + y[:, None] * 2.0 * direction
    return synthetic_store(tmp_path / f"c-{tag}", x, rows, "vig", "care")


@pytest.fixture
def planted(tmp_path):
    g = torch.Generator().manual_seed(0)
    u = torch.zeros(D)
    u[0] = 1.0
    n = 60
    labels = ["harmful", "harmless"] * (n // 2)
    rows = [
        {"id": f"r{i}", "label": labels[i], "group": f"g{i // 2}", "split": "extract", "set": "requests"}
        for i in range(n)
    ]
    x = torch.randn(n, D, generator=g)
    harmful = torch.tensor([lab == "harmful" for lab in labels])
    tuned = x + 0.8 * u * harmful[:, None] + 0.01 * torch.randn(n, D, generator=g)
    stores = (
        synthetic_store(tmp_path / "rb", x, rows, "harmful", "harmless"),
        synthetic_store(tmp_path / "rc", tuned, rows, "harmful", "harmless"),
    )
    return u, stores, tmp_path


def test_planted_shift_recovered_along_its_direction_not_random_ones(planted):
    u, (base, tuned), tmp_path = planted
    contrast = _contrast(tmp_path, u, "planted")
    dset = derive(contrast, None, n_random=4)
    (row,) = compare(dset, "last", (contrast, contrast), {"requests": (base, tuned)}, n_boot=200)
    harmful = row["sets"]["requests"]["by_label"]["harmful"]
    harmless = row["sets"]["requests"]["by_label"]["harmless"]
    assert harmful["shift_cos"] > 0.99 and harmful["shift_cos_rand95"] < 0.4
    assert harmful["shift"] == pytest.approx(0.8, abs=0.05) and harmful["shift_lo"] > 0.7
    assert abs(harmless["shift"]) < 0.02  # the baseline: only harmful requests were moved

    r = torch.randn(D, generator=torch.Generator().manual_seed(7))
    other = _contrast(tmp_path, r / r.norm(), "random")
    (row_r,) = compare(derive(other, None, n_random=4), "last", (other, other), {"requests": (base, tuned)})
    assert abs(row_r["sets"]["requests"]["by_label"]["harmful"]["shift_cos"]) < 0.35


def _tidy_rows(planted, tag: str):
    """The planted checkpoint's tidy trajectory rows (and the directions they use), contrast along the plant."""
    u, (base, tuned), tmp_path = planted
    contrast = _contrast(tmp_path, u, tag)
    dset = derive(contrast, None, n_random=4)
    layers = compare(dset, "last", (contrast, contrast), {"requests": (base, tuned)}, n_boot=200)
    who = {"run": "r", "arm": "vsfa", "seed": 0, "step": 10, "checkpoint": "step-000010"}
    return dset, pd.DataFrame(
        list(_rows_for(layers, dset, "last", who, {"requests": tuned}, "persona", 200, 0))
    )


def test_tidy_rows_have_every_metric_with_cis(planted):
    _, df = _tidy_rows(planted, "tidy")
    assert set(COLUMNS) <= set(df.columns)
    proj = df[(df["metric"] == "projection") & (df["label"] == "harmful")].iloc[0]
    assert proj["lo"] < proj["value"] < proj["hi"] and proj["n"] == 30
    assert set(df["label"]) == {"all", "harmful", "harmless"}
    cos = df[df["metric"] == "cos_rederived"].iloc[0]
    assert cos["set"] == "persona" and cos["value"] == pytest.approx(1.0)
    assert df["hook"].unique().tolist() == [hook_name(0)]


def test_probe_direction_rows_measure_the_shift_along_the_probe_normal(planted):
    """Every set-level measure is also given along the probe's normal (method "probe"): its shift is the paired
    mean change of the projection on the probe's unit normal, and the planted shift is found along it too."""
    (base, tuned), (dset, df) = planted[1], _tidy_rows(planted, "probe")
    assert set(df["method"]) == {"dom", "probe"}
    assert set(df[df["method"] == "probe"]["metric"]) == {"projection", "shift", *SET_METRICS[1:]}
    shift = df[(df["method"] == "probe") & (df["metric"] == "shift") & (df["label"] == "harmful")].iloc[0]
    w = dset.get(hook_name(0), "last", "probe").unit.double()
    harmful = [i for i, lab in enumerate(base.column("label")) if lab == "harmful"]
    xb, xc = base.load(hook_name(0), "last").double(), tuned.load(hook_name(0), "last").double()
    expected = float(((xc[harmful] - xb[harmful]) @ w).mean())
    assert shift["value"] == pytest.approx(expected, rel=1e-6) and shift["lo"] < expected < shift["hi"]
    assert expected > 0.5 * 0.8  # the probe normal also points along the planted shift
    # in class gaps along the normal (the difference of class means projected on it), not per |raw normal|
    gap = float(dset.get(hook_name(0), "last", "dom").vector.double() @ w)
    per_gap = df[(df["method"] == "probe") & (df["metric"] == "shift_gap") & (df["label"] == "harmful")]
    assert per_gap["value"].iloc[0] == pytest.approx(expected / gap, rel=1e-4)
