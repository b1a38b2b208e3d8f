"""Probe accuracy (held out by persona pair) and harmful-vs-harmless AUROC along the direction, by layer and
position, each beside its random-direction baseline; the selected layer marked."""

from __future__ import annotations

from pathlib import Path

from analysis import plots
from figures.common import directions_table, main


def make(study: Path, out: Path) -> list[Path]:
    table, meta = directions_table(study)
    table = table.rename(
        columns={"acc_pair": "probe accuracy (held-out pair)", "sep_auroc": "harmful vs harmless AUROC"}
    )
    table["random_harmful vs harmless AUROC"] = table["rand_sep95"]
    chosen = (meta.get("selected") or {}).get("layer")
    fig = plots.layer_profile(
        table,
        ["probe accuracy (held-out pair)", "harmful vs harmless AUROC"],
        chosen,
        title=f"persona directions ({meta.get('contrast', {}).get('name', '')}); dashed: random 95th pct",
    )
    return plots.save(fig, out / "directions_by_layer")


if __name__ == "__main__":
    main(make)
