"""Figure functions draw the data they are given: panels, series, coordinates, labels, legends, NaN gaps.

Each figure is inspected before saving (its axes, lines, collections and texts), so a figure with the wrong
series, empty axes or wrong labels fails; one light check covers ``save`` (PNG + PDF written).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from analysis import plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ---------------------------------------------------------------- helpers


def _panels(fig):
    """The figure's plotting axes (a colour bar's axes left out)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def _data_lines(ax):
    """Lines drawn in data coordinates (reference lines from axhline/axvline left out)."""
    return [ln for ln in ax.lines if ln.get_transform() is ax.transData]


def _hlines(ax):
    """y of the horizontal reference lines (axhline)."""
    return [ln.get_ydata()[0] for ln in ax.lines if ln.get_transform() is ax.get_yaxis_transform()]


def _vlines(ax):
    """(x, linestyle) of the vertical reference lines (axvline)."""
    return [
        (ln.get_xdata()[0], ln.get_linestyle())
        for ln in ax.lines
        if ln.get_transform() is ax.get_xaxis_transform()
    ]


def _by_label(ax):
    return {ln.get_label(): ln for ln in _data_lines(ax)}


def _xy(line):
    return np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)


def _legend(ax):
    leg = ax.get_legend()
    return None if leg is None else [t.get_text() for t in leg.get_texts()]


def _fills(ax):
    """fill_between bands (PolyCollections), in drawing order."""
    return [c for c in ax.collections if type(c).__name__.endswith("PolyCollection")]


def _scatters(ax):
    return [c for c in ax.collections if type(c).__name__ == "PathCollection"]


def _vertices(coll):
    return np.vstack([p.vertices for p in coll.get_paths()])


def _hex(c):
    return to_hex(c, keep_alpha=False)


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), equal_nan=True)


# ---------------------------------------------------------------- save / colour


def test_save_writes_png_and_pdf_and_closes(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    paths = plots.save(fig, tmp_path / "sub" / "fig.svg")  # the suffix is replaced; folders are made
    assert paths == [tmp_path / "sub" / "fig.png", tmp_path / "sub" / "fig.pdf"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    assert not plt.fignum_exists(fig.number)


def test_colour_known_arms_and_fallback():
    assert plots.colour("vsfa") == plots.colour("image") == "#c0392b"
    assert plots.colour("control") == "#2471a3"
    assert plots.colour("text") == "#7d3c98"
    assert plots.colour("mirror") == "#229954"
    assert plots.colour("something-else") == "#555555"


# ---------------------------------------------------------------- layer_profile


def _layers():
    rows = [
        {
            "layer": layer,
            "position": pos,
            "acc_pair": 0.5 + 0.04 * layer + 0.1 * k,
            "random_acc_pair": 0.5 - 0.01 * layer,
            "auroc": 0.6 + 0.02 * layer,
        }
        for k, pos in enumerate(("last", "image_mean"))
        for layer in (3, 0, 5, 1, 4, 2)  # unsorted: the lines are drawn in layer order
    ]
    df = pd.DataFrame(rows)
    df.loc[(df["position"] == "last") & (df["layer"] == 2), "auroc"] = np.nan
    return df


def test_layer_profile_panels_series_and_labels():
    df = _layers()
    fig = plots.layer_profile(df, ["acc_pair", "auroc"], chosen_layer=3, title="probe accuracy")
    axes = _panels(fig)
    assert [ax.get_title() for ax in axes] == ["last", "image_mean"]
    assert fig.get_suptitle() == "probe accuracy"
    for ax in axes:
        pos = ax.get_title()
        sub = df[df["position"] == pos].sort_values("layer")
        lines = _by_label(ax)
        # one line per metric, plus the dashed random baseline only where a random_<metric> column exists
        assert sorted(lines) == ["acc_pair", "auroc", "random acc_pair"]
        for name, col in (
            ("acc_pair", "acc_pair"),
            ("auroc", "auroc"),
            ("random acc_pair", "random_acc_pair"),
        ):
            x, y = _xy(lines[name])
            _close(x, sub["layer"])
            _close(y, sub[col])
        assert lines["acc_pair"].get_linestyle() == "-"
        assert lines["random acc_pair"].get_linestyle() == "--"
        assert _hex(lines["random acc_pair"].get_color()) == _hex(lines["acc_pair"].get_color())
        assert _hex(lines["auroc"].get_color()) != _hex(lines["acc_pair"].get_color())
        assert _vlines(ax) == [(3, ":")]
        assert _hlines(ax) == [0.5]
        assert ax.get_xlabel() == "layer"
    assert _legend(axes[0]) == ["acc_pair", "random acc_pair", "auroc"]
    assert _legend(axes[1]) is None
    # a NaN metric value is a gap, not a point at 0
    y = _xy(_by_label(axes[0])["auroc"])[1]
    assert np.isnan(y[2]) and np.isfinite(np.delete(y, 2)).all()


def test_layer_profile_without_chosen_layer_or_random_column():
    df = _layers().drop(columns="random_acc_pair")
    fig = plots.layer_profile(df[df["position"] == "last"], ["acc_pair"])
    (ax,) = _panels(fig)
    assert list(_by_label(ax)) == ["acc_pair"]
    assert _vlines(ax) == []
    assert _legend(ax) == ["acc_pair"]


# ---------------------------------------------------------------- trajectory


def _traj(rand95: bool = True):
    rows = []
    for k, arm in enumerate(["vsfa", "control"]):
        for s in ("harmful", "harmless"):
            for step in (20, 0, 10, 5):  # unsorted
                v = (k + 1) * step / 10 + (0.5 if s == "harmless" else 0)
                row = {"arm": arm, "set": s, "step": step, "shift": v, "lo": v - 0.1, "hi": v + 0.2}
                if rand95:
                    row["rand95"] = 0.3 + 0.01 * step + 0.1 * k  # averaged over arms per step
                rows.append(row)
    df = pd.DataFrame(rows)
    df.loc[(df["arm"] == "control") & (df["set"] == "harmful") & (df["step"] == 10), "shift"] = np.nan
    return df


def test_trajectory_one_line_per_arm_with_band_and_rand95():
    df = _traj()
    fig = plots.trajectory(df, value="shift", title="T", ylabel="my shift")
    axes = _panels(fig)
    assert [ax.get_title() for ax in axes] == ["harmful", "harmless"]
    assert fig.get_suptitle() == "T"
    assert axes[0].get_ylabel() == "my shift"
    for ax in axes:
        name = ax.get_title()
        lines = _by_label(ax)
        arms = {lab: ln for lab, ln in lines.items() if not lab.startswith("_")}
        assert list(arms) == ["vsfa", "control"]
        fills = _fills(ax)
        assert len(fills) == 2
        for (arm, line), band in zip(arms.items(), fills, strict=True):
            sub = df[(df["set"] == name) & (df["arm"] == arm)].sort_values("step")
            x, y = _xy(line)
            _close(x, sub["step"])
            _close(y, sub["shift"])
            assert _hex(line.get_color()) == plots.colour(arm)
            assert _hex(band.get_facecolor()[0]) == plots.colour(arm)
            v = _vertices(band)
            assert v[:, 1].min() == pytest.approx(sub["lo"].min())
            assert v[:, 1].max() == pytest.approx(sub["hi"].max())
        # the random-direction band: two dashed grey lines at +/- the per-step mean of rand95
        rand = [ln for ln in _data_lines(ax) if ln.get_linestyle() == "--"]
        assert len(rand) == 2
        base = df[df["set"] == name].groupby("step")["rand95"].mean()
        for ln, sign in zip(rand, (1, -1), strict=True):
            _close(_xy(ln)[0], base.index)
            _close(_xy(ln)[1], sign * base.values)
            assert _hex(ln.get_color()) == _hex("grey")
        assert _hlines(ax) == [0]
        assert ax.get_xscale() == "symlog"
        assert ax.get_xlim()[0] == 0
        assert ax.get_xlabel() == "training step"
    assert _legend(axes[0]) == ["vsfa", "control"]
    # the NaN step of the control arm is a gap, not a point at 0
    y = _xy(_by_label(axes[0])["control"])[1]
    assert np.isnan(y[2]) and np.isfinite(np.delete(y, 2)).all()


def test_trajectory_without_rand95_draws_no_dashed_band():
    df = _traj(rand95=False).rename(columns={"shift": "value"})
    fig = plots.trajectory(df)
    for ax in _panels(fig):
        assert [ln.get_label() for ln in _data_lines(ax)] == ["vsfa", "control"]
        assert all(ln.get_linestyle() == "-" for ln in _data_lines(ax))
    assert _panels(fig)[0].get_ylabel() == "projection shift"


# ---------------------------------------------------------------- direction_search


def _search(confirm: bool):
    rows = []
    for layer, v in ((2, 0.9), (0, np.nan), (1, 0.3)):  # unsorted, one undefined layer
        for pos in ("last", "image_mean"):
            for j, m in enumerate(("dom", "probe")):
                val = v - 0.1 * j
                row = {
                    "layer": layer,
                    "position": pos,
                    "method": m,
                    "value": val,
                    "lo": val - 0.2,
                    "hi": val + 0.2,
                }
                if confirm:
                    row["confirm_value"] = val / 2 if m == "dom" else np.nan  # probe: no held-out estimate
                rows.append(row)
    return pd.DataFrame(rows)


def test_direction_search_lines_per_method_and_heldout_dashed():
    df = _search(confirm=True)
    best = {"layer": 2, "position": "last", "value": 0.9}
    naive = {"layer": 1, "position": "image_mean", "value": 0.2}
    fig = plots.direction_search(df, best, naive, title="search")
    axes = _panels(fig)
    assert [ax.get_title() for ax in axes] == ["last", "image_mean"]
    assert fig.get_suptitle() == "search"
    assert axes[0].get_ylabel() == "Spearman"
    for ax in axes:
        pos = ax.get_title()
        lines = _by_label(ax)
        # one solid line per method; the held-out series only for the method that has one
        assert list(lines) == ["dom", "dom (held-out runs)", "probe"]
        for m in ("dom", "probe"):
            sub = df[(df["position"] == pos) & (df["method"] == m)].sort_values("layer")
            x, y = _xy(lines[m])
            _close(x, [0, 1, 2])
            _close(y, sub["value"])
            assert lines[m].get_linestyle() == "-"
            assert np.isnan(y[0])  # undefined layer: a gap, not 0
        held = lines["dom (held-out runs)"]
        assert held.get_linestyle() == "--"
        assert _hex(held.get_color()) == _hex(lines["dom"].get_color())
        _close(_xy(held)[1], [np.nan, 0.15, 0.45])
        assert _hex(lines["probe"].get_color()) != _hex(lines["dom"].get_color())
        # one CI band per method, in its colour, with no vertex at the undefined layer
        fills = _fills(ax)
        assert len(fills) == 2
        for m, band in zip(("dom", "probe"), fills, strict=True):
            assert _hex(band.get_facecolor()[0]) == _hex(lines[m].get_color())
            assert _vertices(band)[:, 0].min() == 1
        assert _hlines(ax) == [0]
        assert ax.get_xlabel() == "layer"
    # the best candidate starred in its panel only, the naive one ringed in its panel only
    (star,) = _scatters(axes[0])
    assert star.get_label() == "best"
    _close(star.get_offsets(), [[2, 0.9]])
    (ring,) = _scatters(axes[1])
    assert ring.get_label() == "naive"
    _close(ring.get_offsets(), [[1, 0.2]])
    assert len(ring.get_facecolors()) == 0 or ring.get_facecolors()[0][3] == 0  # hollow
    # the legend (first panel) names each method, its held-out series and the starred best; the ring drawn
    # in the other panel is not required here (the legend is built from the first panel only)
    assert _legend(axes[0])[:4] == ["dom", "dom (held-out runs)", "probe", "best"]


def test_direction_search_without_confirm_or_marks():
    df = _search(confirm=False)
    fig = plots.direction_search(df, None, {"layer": 1, "position": "last", "value": None})
    for ax in _panels(fig):
        assert list(_by_label(ax)) == ["dom", "probe"]
        assert all(ln.get_linestyle() == "-" for ln in _data_lines(ax))
        assert _scatters(ax) == []  # no best; a naive without a value is not drawn
    assert _legend(_panels(fig)[0]) == ["dom", "probe"]


# ---------------------------------------------------------------- heatmap


def test_heatmap_image_ticks_and_colourbar():
    values = np.array([[0.1, -0.2, 0.3], [0.4, np.nan, -0.6]])
    matrix = pd.DataFrame(values, index=[4, 8], columns=[0, 50, 200])
    fig = plots.heatmap(matrix, title="cos over training", cbar="cos(sim)", vmin=-0.5, vmax=0.7)
    (ax,) = _panels(fig)
    cbars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert len(cbars) == 1 and cbars[0].get_ylabel() == "cos(sim)"
    (im,) = ax.images
    arr = im.get_array()
    _close(np.ma.filled(arr.astype(float), np.nan), values)  # rows = layers, NaN cell stays missing
    assert np.ma.is_masked(arr) and arr.mask[1, 1] and arr.mask.sum() == 1
    assert im.origin == "lower"
    assert im.get_clim() == (-0.5, 0.7)
    assert im.get_cmap().name == "RdBu_r"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "50", "200"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["4", "8"]
    _close(ax.get_xticks(), [0, 1, 2])
    _close(ax.get_yticks(), [0, 1])
    assert ax.get_xlabel() == "training step"
    assert ax.get_ylabel() == "layer"
    assert ax.get_title() == "cos over training"


def test_heatmap_default_colourbar_label_and_range():
    fig = plots.heatmap(pd.DataFrame([[0.0, 1.0]], index=[0], columns=[0, 1]))
    cbar = next(a for a in fig.axes if a.get_label() == "<colorbar>")
    assert cbar.get_ylabel() == "cosine"
    assert _panels(fig)[0].images[0].get_clim() == (-1, 1)


# ---------------------------------------------------------------- scatter_fit


def test_scatter_fit_points_per_arm_fit_line_and_band():
    xs = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 9.0])
    ys = 2 * xs + 1
    ys[-1] = np.nan  # the NaN row (at the largest x) is neither drawn nor fitted
    df = pd.DataFrame({"arm": ["vsfa"] * 4 + ["control"] * 4, "shift": xs, "asr": ys})
    fig = plots.scatter_fit(df, "shift", "asr", stat_text="rho=+1.00", title="ASR vs shift")
    (ax,) = _panels(fig)
    pts = _scatters(ax)
    assert [c.get_label() for c in pts] == ["vsfa", "control"]
    for c, arm in zip(pts, ("vsfa", "control"), strict=True):
        sub = df[df["arm"] == arm]
        off = c.get_offsets()
        drawn = sub[["shift", "asr"]].to_numpy(float, copy=True)
        drawn[~np.isfinite(drawn).all(axis=1)] = np.nan  # a point with a NaN coordinate is masked whole
        _close(np.ma.filled(off.astype(float), np.nan), drawn)
        assert _hex(c.get_facecolor()[0]) == plots.colour(arm)
    off = pts[1].get_offsets()
    assert np.ma.getmaskarray(off)[-1].all() and not np.ma.getmaskarray(off)[:-1].any()  # not drawn at 0
    (fit,) = _data_lines(ax)
    x, y = _xy(fit)
    assert x.min() == 0 and x.max() == 6  # the fit spans the finite points only
    _close(y, 2 * x + 1)
    (band,) = _fills(ax)
    v = _vertices(band)
    assert v[:, 0].min() == pytest.approx(0) and v[:, 0].max() == pytest.approx(6)
    _close(v[:, 1], 2 * v[:, 0] + 1)  # exact data: every bootstrap refit is the same line
    assert ax.get_xlabel() == "shift" and ax.get_ylabel() == "asr"
    assert ax.get_title() == "ASR vs shift"
    assert [t.get_text() for t in ax.texts] == ["rho=+1.00"]
    assert ax.texts[0].get_transform() is ax.transAxes
    assert _legend(ax) == ["vsfa", "control"]


def test_scatter_fit_band_contains_the_fit_on_noisy_data():
    rng = np.random.default_rng(1)
    xs = np.linspace(0, 1, 20)
    df = pd.DataFrame({"arm": "vsfa", "x": xs, "y": xs + rng.normal(0, 0.2, xs.size)})
    fig = plots.scatter_fit(df, "x", "y")
    (ax,) = _panels(fig)
    gx, gy = _xy(_data_lines(ax)[0])
    _close(gy, np.polyval(np.polyfit(df["x"], df["y"], 1), gx))
    v = _vertices(_fills(ax)[0])
    widths = []
    for xi, yi in zip(gx, gy, strict=True):
        at = v[np.isclose(v[:, 0], xi), 1]
        assert at.min() <= yi + 1e-9 and at.max() >= yi - 1e-9  # the band brackets the fit
        widths.append(at.max() - at.min())
    assert min(widths) > 0.01  # and has a width: the bootstrap refits differ
    assert len(ax.texts) == 0


@pytest.mark.parametrize("case", ["two-points", "constant-x"])
def test_scatter_fit_draws_no_fit_when_undefined(case):
    df = pd.DataFrame({"arm": ["vsfa", "control", "vsfa"], "x": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 0.5]})
    df = df.head(2) if case == "two-points" else df.assign(x=1.0)
    fig = plots.scatter_fit(df, "x", "y")
    (ax,) = _panels(fig)
    assert _data_lines(ax) == [] and _fills(ax) == []
    assert sum(len(c.get_offsets()) for c in _scatters(ax)) == len(df)


# ---------------------------------------------------------------- dose_response


def _dose():
    rows = []
    for d in ("chosen", "random-0", "random-1"):
        for a in (4, -2, 2, 0):  # unsorted
            k = 1.0 if d == "chosen" else 0.1
            rows.append(
                {
                    "direction": d,
                    "alpha": a,
                    "score": k * a,
                    "score_lo": k * a - 1,
                    "score_hi": k * a + 1,
                    "asr": 0.5 - 0.05 * a * k,
                    "degenerate": {4: 0.25, 2: 0.1}.get(a, 0.0) if d == "chosen" else 0.5,
                }
            )
    df = pd.DataFrame(rows)
    df.loc[(df["direction"] == "random-1") & (df["alpha"] == 0), "score"] = np.nan
    return df


def test_dose_response_curves_bands_and_degenerate_annotation():
    df = _dose()
    fig = plots.dose_response(df, ["score", "asr"], title="steering")
    axes = _panels(fig)
    assert [ax.get_title() for ax in axes] == ["score", "asr"]
    assert fig.get_suptitle() == "steering"
    for ax in axes:
        m = ax.get_title()
        lines = _data_lines(ax)
        assert len(lines) == 3  # one curve per direction
        for line, d in zip(lines, ("chosen", "random-0", "random-1"), strict=True):
            sub = df[df["direction"] == d].sort_values("alpha")
            _close(_xy(line)[0], [-2, 0, 2, 4])
            _close(_xy(line)[1], sub[m])
        assert _hex(lines[0].get_color()) == "#c0392b" and lines[0].get_linewidth() == 1.6
        assert all(_hex(ln.get_color()) == _hex("grey") for ln in lines[1:])
        # the degenerate share is annotated on the chosen curve only, where it is > 0, at that point
        notes = sorted((t.get_text(), tuple(t.xy)) for t in ax.texts)
        chosen = df[df["direction"] == "chosen"].set_index("alpha")[m]
        assert notes == [("10%", (2, chosen[2])), ("25%", (4, chosen[4]))]
        assert ax.get_xlabel() == "alpha (x class gap)"
    # the legend names the chosen direction and one random control, not every random one
    assert _legend(axes[0]) == ["chosen", "random-0"]
    # one CI band per direction where <metric>_lo/_hi exist; none for asr
    assert len(_fills(axes[0])) == 3 and len(_fills(axes[1])) == 0
    assert [_hex(b.get_facecolor()[0]) for b in _fills(axes[0])] == ["#c0392b"] + [_hex("grey")] * 2
    # a NaN metric value is a gap, not 0
    y = _xy(_data_lines(axes[0])[2])[1]
    assert np.isnan(y[1]) and np.isfinite(np.delete(y, 1)).all()


def test_dose_response_without_degenerate_column_has_no_annotation():
    df = _dose().drop(columns="degenerate")
    fig = plots.dose_response(df, ["score"])
    (ax,) = _panels(fig)
    assert len(ax.texts) == 0
    assert len(_data_lines(ax)) == 3


# ---------------------------------------------------------------- attribution


def test_attribution_bars_errorbars_and_ticks():
    df = pd.DataFrame(
        [
            {"arm": "vsfa", "position": "image_mean", "value": 1.0, "lo": 0.5, "hi": 1.6},
            {"arm": "vsfa", "position": "last", "value": -0.5, "lo": -0.9, "hi": -0.1},
            {"arm": "vsfa", "position": "prompt_mean", "value": 0.2, "lo": 0.1, "hi": 0.4},
            {"arm": "control", "position": "last", "value": 0.3, "lo": 0.2, "hi": 0.5},
            {"arm": "control", "position": "image_mean", "value": 0.1, "lo": -0.1, "hi": 0.2},
            # control has no prompt_mean row: that bar is missing, not drawn at 0
        ]
    )
    fig = plots.attribution(df, title="by position")
    (ax,) = _panels(fig)
    positions = ["image_mean", "last", "prompt_mean"]
    bars = [c for c in ax.containers if type(c).__name__ == "BarContainer"]
    errs = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    assert len(bars) == 2 and len(errs) == 2
    width = 0.8 / 2
    for k, (arm, bc, ec) in enumerate(zip(("vsfa", "control"), bars, errs, strict=True)):
        sub = df[df["arm"] == arm].set_index("position").reindex(positions)
        assert bc.get_label() == arm
        assert [_hex(p.get_facecolor()) for p in bc.patches] == [plots.colour(arm)] * 3
        _close([p.get_height() for p in bc.patches], sub["value"])
        _close([p.get_x() + p.get_width() / 2 for p in bc.patches], np.arange(3) + k * width)
        assert all(p.get_width() == pytest.approx(width) for p in bc.patches)
        # error bars run from lo to hi at each bar's centre
        segs = ec.lines[2][0].get_segments()
        assert len(segs) == 3
        for seg, x, lo, hi in zip(segs, np.arange(3) + k * width, sub["lo"], sub["hi"], strict=True):
            if np.isnan(lo):
                assert len(seg) == 0  # the missing bar has no error bar either
            else:
                _close(seg, [[x, lo], [x, hi]])
    assert np.isnan(bars[1].patches[2].get_height())
    assert [t.get_text() for t in ax.get_xticklabels()] == positions
    _close(ax.get_xticks(), np.arange(3) + width / 2)
    assert _hlines(ax) == [0]
    assert ax.get_ylabel() == "projection shift"
    assert ax.get_title() == "by position"
    assert _legend(ax) == ["vsfa", "control"]
