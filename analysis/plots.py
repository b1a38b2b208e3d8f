"""Figure functions: tidy DataFrames in, matplotlib figures out (saved as PNG + PDF). No other I/O.

Every plotted effect shows its interval; every VSFA curve is drawn beside its control.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

ARM_COLOURS = {
    "vsfa": "#c0392b",
    "image": "#c0392b",
    "control": "#2471a3",
    "text": "#7d3c98",
    "mirror": "#229954",
}
plt.rcParams.update({"figure.dpi": 120, "font.size": 9, "axes.spines.top": False, "axes.spines.right": False})


def colour(arm: str) -> str:
    return ARM_COLOURS.get(arm, "#555555")


def save(fig, path: str | Path) -> list[Path]:
    """Save ``fig`` as ``path.png`` and ``path.pdf``; returns both paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for p in out:
        fig.savefig(p, bbox_inches="tight")
    plt.close(fig)
    return out


def layer_profile(
    table: pd.DataFrame, metrics: Sequence[str], chosen_layer: int | None = None, title: str = ""
):
    """Per-layer lines (one panel per position) of probe/direction metrics, e.g. held-out-pair accuracy, AUROC.

    ``table``: columns ``layer``, ``position`` and one column per metric; optional ``random_<metric>`` columns
    are drawn dashed as the random-direction baseline.
    """
    positions = list(dict.fromkeys(table["position"]))
    fig, axes = plt.subplots(
        1, len(positions), figsize=(3.4 * len(positions), 2.8), squeeze=False, sharey=True
    )
    for ax, pos in zip(axes[0], positions, strict=True):
        sub = table[table["position"] == pos].sort_values("layer")
        for m in metrics:
            (line,) = ax.plot(sub["layer"], sub[m], marker="o", ms=3, label=m)
            if f"random_{m}" in sub:
                ax.plot(
                    sub["layer"],
                    sub[f"random_{m}"],
                    ls="--",
                    color=line.get_color(),
                    alpha=0.6,
                    label=f"random {m}",
                )
        if chosen_layer is not None:
            ax.axvline(chosen_layer, color="k", lw=0.8, ls=":")
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set_title(pos)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.suptitle(title, y=1.03)
    return fig


def trajectory(df: pd.DataFrame, value: str = "value", title: str = "", ylabel: str = "projection shift"):
    """Mean (with CI band over seeds/items) of a per-step quantity, one line per arm and eval set.

    ``df``: columns ``arm``, ``set``, ``step``, ``value``, ``lo``, ``hi``; an optional ``rand95`` column (the
    95th percentile |shift| along random directions) is drawn as a dashed grey +/- band: shifts inside it are
    no larger than a direction-free drift would give.
    """
    sets = list(dict.fromkeys(df["set"]))
    fig, axes = plt.subplots(1, len(sets), figsize=(3.6 * len(sets), 2.8), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], sets, strict=True):
        if "rand95" in df:
            base = df[df["set"] == name].groupby("step")["rand95"].mean()
            for sign in (1, -1):
                ax.plot(base.index, sign * base.values, ls="--", color="grey", lw=0.8)
        for arm, sub in df[df["set"] == name].groupby("arm", sort=False):
            sub = sub.sort_values("step")
            ax.plot(sub["step"], sub[value], marker="o", ms=3, color=colour(arm), label=arm)
            ax.fill_between(sub["step"], sub["lo"], sub["hi"], color=colour(arm), alpha=0.2, lw=0)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xscale("symlog", linthresh=1)  # checkpoints are log-spaced
        ax.set_xlim(left=0)
        ax.set_title(name)
        ax.set_xlabel("training step")
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.suptitle(title, y=1.03)
    return fig


def direction_search(df: pd.DataFrame, best: dict | None = None, naive: dict | None = None, title: str = ""):
    """Correlation (with CI) of each candidate direction's shift with an outcome, per layer: one panel per
    position, one line per method; the best candidate is starred and the naive one ringed.

    ``df``: columns ``layer``, ``position``, ``method``, ``value``, ``lo``, ``hi`` (NaN where undefined);
    optional ``confirm_value`` (the same on held-out runs), drawn dashed in the method's colour.
    """
    positions = list(dict.fromkeys(df["position"]))
    fig, axes = plt.subplots(
        1, len(positions), figsize=(3.4 * len(positions), 2.8), squeeze=False, sharey=True
    )
    for ax, pos in zip(axes[0], positions, strict=True):
        for method, sub in df[df["position"] == pos].groupby("method", sort=False):
            sub = sub.sort_values("layer")
            (line,) = ax.plot(sub["layer"], sub["value"], marker="o", ms=3, label=method)
            ax.fill_between(sub["layer"], sub["lo"], sub["hi"], color=line.get_color(), alpha=0.2, lw=0)
            if "confirm_value" in sub and sub["confirm_value"].notna().any():
                ax.plot(
                    sub["layer"],
                    sub["confirm_value"],
                    ls="--",
                    marker="x",
                    ms=3,
                    color=line.get_color(),
                    label=f"{method} (held-out runs)",
                )
        marks = (
            ("best", best, {"marker": "*", "s": 90, "color": "k"}),
            ("naive", naive, {"marker": "o", "s": 60, "facecolors": "none", "edgecolors": "k"}),
        )
        for tag, mark, kw in marks:
            if mark and mark.get("position") == pos and np.isfinite(mark.get("value") or np.nan):
                ax.scatter([mark["layer"]], [mark["value"]], zorder=4, label=tag, **kw)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(pos)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel("Spearman")
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.suptitle(title, y=1.03)
    return fig


def heatmap(matrix: pd.DataFrame, title: str = "", cbar: str = "cosine", vmin: float = -1, vmax: float = 1):
    """Layer x checkpoint heatmap (rows: layers, columns: steps)."""
    fig, ax = plt.subplots(figsize=(0.5 * matrix.shape[1] + 2, 0.25 * matrix.shape[0] + 1.5))
    im = ax.imshow(matrix.values, aspect="auto", cmap="RdBu_r", vmin=vmin, vmax=vmax, origin="lower")
    ax.set_xticks(range(matrix.shape[1]), [str(c) for c in matrix.columns], rotation=90)
    ax.set_yticks(range(matrix.shape[0]), [str(r) for r in matrix.index])
    ax.set_xlabel("training step")
    ax.set_ylabel("layer")
    fig.colorbar(im, ax=ax, label=cbar)
    ax.set_title(title)
    return fig


def scatter_fit(df: pd.DataFrame, x: str, y: str, stat_text: str = "", title: str = ""):
    """Per-checkpoint points (coloured by arm) with a least-squares line and a bootstrap 95% band."""
    fig, ax = plt.subplots(figsize=(3.6, 3.0))
    for arm, sub in df.groupby("arm", sort=False):
        ax.scatter(sub[x], sub[y], s=14, color=colour(arm), label=arm)
    xs, ys = df[x].to_numpy(float), df[y].to_numpy(float)
    ok = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    if xs.size >= 3 and np.ptp(xs) > 0:
        grid = np.linspace(xs.min(), xs.max(), 50)
        rng = np.random.default_rng(0)
        fits = []
        for _ in range(500):
            i = rng.integers(0, xs.size, xs.size)
            if np.ptp(xs[i]) > 0:
                fits.append(np.polyval(np.polyfit(xs[i], ys[i], 1), grid))
        ax.plot(grid, np.polyval(np.polyfit(xs, ys, 1), grid), color="k", lw=1)
        if fits:
            lo, hi = np.quantile(np.array(fits), [0.025, 0.975], axis=0)
            ax.fill_between(grid, lo, hi, color="k", alpha=0.12, lw=0)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if stat_text:
        ax.text(0.02, 0.98, stat_text, transform=ax.transAxes, va="top", fontsize=7)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(title)
    return fig


def dose_response(df: pd.DataFrame, metrics: Sequence[str], title: str = ""):
    """Steering/ablation curves: metric vs alpha, one line per direction (chosen vs random controls).

    ``df``: columns ``direction`` (``chosen`` / ``random-<i>``), ``alpha``, and per metric ``<m>``, ``<m>_lo``,
    ``<m>_hi``; optional ``degenerate`` (share of degenerate outputs) is annotated on the chosen curve.
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 2.8), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        for name, sub in df.groupby("direction", sort=False):
            sub = sub.sort_values("alpha")
            chosen = not str(name).startswith("random")
            kw = (
                {"color": "#c0392b", "lw": 1.6, "zorder": 3}
                if chosen
                else {"color": "grey", "lw": 0.8, "alpha": 0.6}
            )
            ax.plot(
                sub["alpha"],
                sub[m],
                marker="o",
                ms=3,
                label=name if chosen or name == "random-0" else None,
                **kw,
            )
            if f"{m}_lo" in sub:
                ax.fill_between(
                    sub["alpha"], sub[f"{m}_lo"], sub[f"{m}_hi"], color=kw["color"], alpha=0.15, lw=0
                )
            if chosen and "degenerate" in sub:
                for a, v, d in zip(sub["alpha"], sub[m], sub["degenerate"], strict=True):
                    if d > 0:
                        ax.annotate(f"{d:.0%}", (a, v), fontsize=6, xytext=(2, 4), textcoords="offset points")
        ax.set_xlabel("alpha (x class gap)")
        ax.set_title(m)
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.suptitle(title, y=1.03)
    return fig


def attribution(df: pd.DataFrame, title: str = ""):
    """Bars of a per-position quantity (e.g. projection shift at image tokens vs prompt positions) per arm."""
    positions = list(dict.fromkeys(df["position"]))
    arms = list(dict.fromkeys(df["arm"]))
    width = 0.8 / max(1, len(arms))
    fig, ax = plt.subplots(figsize=(1.2 * len(positions) + 2, 2.8))
    for k, arm in enumerate(arms):
        sub = df[df["arm"] == arm].set_index("position").reindex(positions)
        xs = np.arange(len(positions)) + k * width
        err = np.vstack([sub["value"] - sub["lo"], sub["hi"] - sub["value"]]).clip(min=0)  # CI may miss it
        ax.bar(xs, sub["value"], width, yerr=err, color=colour(arm), label=arm, capsize=2)
    ax.set_xticks(np.arange(len(positions)) + width * (len(arms) - 1) / 2, positions, rotation=20)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylabel("projection shift")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(title)
    return fig
