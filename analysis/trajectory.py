"""``vsfa track --run RUN``: the persona directions over a run's checkpoints, as one tidy table.

For the base model (step 0) and every checkpoint of a training run, at every hook and position of the fixed
base directions (:func:`probes.stages.base_directions`), :func:`probes.stages.compare` measures, per evaluation
set and per label within it (e.g. harmful and harmless requests apart: the harmless shift is the baseline of
the harmful one):

* ``projection``: mean projection on the unit base direction (bootstrap 95% CI over items);
* ``shift``: paired shift of that projection from the base (CI), also per class gap (``shift_gap``) and per
  base SD (``shift_sd``); ``rand_shift95``: 95th percentile |shift| along norm-matched random directions;
* ``shift_cos``: cosine between the fine-tuning shift vector (mean activation at the checkpoint minus at the
  base, same inputs) and the direction, beside ``shift_cos_rand95`` (the same for random directions);
* the set-level measures above for each direction method (column ``method``): the set's own (``dom``, the
  difference of means) and the linear probe's normal (``probe``) where the set has one;
  :func:`read_trajectory` keeps the set's own unless asked for ``"all"``;
* per direction (set = the contrast set): ``cos_rederived`` (direction re-derived at the checkpoint vs the
  base one) and ``probe_acc`` (base probe on checkpoint activations, held-out questions).

Output ``RUN/track/``: ``trajectory.csv`` (columns :data:`COLUMNS`, one estimate per row, pandas-friendly),
``projections.csv`` (per item projections, for paired statistics in :mod:`analysis.link`) and
``manifest.json`` (written last). Activations come from the content-addressed capture cache, so the base is
captured once for every run that shares ``--acts``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from probes.capture import Capturer, CaptureSpec, ModelSpec, SweepLoader
from probes.contrasts import load_set
from probes.directions import Direction, DirectionSet, project
from probes.stages import (
    CompareOptions,
    base_directions,
    compare,
    contrast_from_meta,
    default_acts_root,
)
from probes.store import ActivationStore
from vsfa.config import check_counts
from vsfa.errors import ArtifactError
from vsfa.io import (
    atomic_dir,
    is_complete,
    output_lock,
    read_manifest,
    recorded_path,
    write_csv_atomic,
    write_manifest,
)
from vsfa.progress import progress
from vsfa.stats import bootstrap, paired_diff
from vsfa.train import list_checkpoints

logger = logging.getLogger(__name__)

TRACK_DIR = "track"
BASE_CHECKPOINT = "step-000000"  # the base model's name in RUN/eval too
COLUMNS = (
    "run",
    "arm",
    "seed",
    "step",
    "checkpoint",
    "hook",
    "layer",
    "position",
    "method",
    "selected",
    "set",
    "label",
    "metric",
    "value",
    "lo",
    "hi",
    "n",
)
ITEM_COLUMNS = (
    "run",
    "arm",
    "seed",
    "step",
    "hook",
    "position",
    "method",
    "set",
    "id",
    "label",
    "projection",
)
ATTRIBUTION_POSITIONS = ("image_mean", "prompt_mean", "last")
ATTRIBUTION_COLUMNS = (
    "run",
    "arm",
    "seed",
    "step",
    "hook",
    "position",
    "set",
    "label",
    "value",
    "lo",
    "hi",
    "n",
)
SET_METRICS = ("shift", "shift_gap", "shift_sd", "rand_shift95", "shift_cos", "shift_cos_rand95")


@dataclass
class TrackConfig(CompareOptions):
    """Settings of ``vsfa track`` (the comparison settings plus the run and the attribution)."""

    run: Path = field(kw_only=True)
    """Training run folder (RUN/checkpoints/step-*)."""
    max_pairs: int | None = None
    """Request sets: first N pairs only."""
    n_boot: int = 1000
    """Bootstrap resamples per CI."""
    attribution_set: str | None = "requests_image"
    """Request set for the per-position attribution ('' or none: skip)."""
    attribution_positions: list[str] = field(default_factory=lambda: list(ATTRIBUTION_POSITIONS))
    """Positions of the attribution."""
    contrast_questions: int | None = None
    """Contrast questions measured at every checkpoint (unset: all the directions were derived on)."""
    allow_incomplete: bool = False
    """Track a run without its final manifest (recorded in the output)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_counts("track", max_pairs=self.max_pairs, contrast_questions=self.contrast_questions)


def run_identity(run: Path) -> dict[str, Any]:
    """``arm``, ``seed`` and ``base_model`` of a run, from its manifest (or its first checkpoint's)."""
    if (run / "manifest.json").is_file():
        m, where = read_manifest(run), run
    else:
        ckpts = list_checkpoints(run)
        if not ckpts:
            raise ArtifactError(f"{run}: not a training run (no manifest.json, no complete checkpoints)")
        m, where = read_manifest(ckpts[0][1]), ckpts[0][1]
    base = recorded_path(m.get("base_model"), where)
    return {"arm": m.get("arm") or "", "seed": m.get("seed"), "base_model": base}


def _rows_for(
    layers: list[dict[str, Any]],
    dset: DirectionSet,
    position: str,
    ident: dict[str, Any],
    stores: dict[str, ActivationStore],
    contrast: str,
    n_boot: int,
    seed: int,
) -> Iterable[dict[str, Any]]:
    """Tidy rows of one checkpoint's :func:`compare` output at one position: set-level rows for the set's own
    method and for every other method compare measured (the probe's normal), direction-level rows once."""
    method = dset.meta.get("method", "dom")
    for row in layers:
        common = {**ident, "hook": row["hook"], "layer": row["layer"], "position": position, "method": method}
        common["selected"] = bool(row["selected"])
        by_method = {method: row["sets"], **row.get("other_methods", {})}
        for m, sets in by_method.items():
            direction = dset.get(row["hook"], position, m)
            for name, stats in sets.items():
                yield from _set_rows({**common, "method": m}, name, stats, stores, direction, n_boot, seed)
        for m, key in (("cos_rederived", "cos_rederived"), ("probe_acc", "probe_acc_ckpt")):
            yield {
                **common,
                "set": contrast,
                "label": "all",
                "metric": m,
                "value": row[key],
                "lo": math.nan,
                "hi": math.nan,
                "n": math.nan,
            }


def _set_rows(
    common: dict[str, Any],
    name: str,
    stats: dict[str, Any],
    stores: dict[str, ActivationStore],
    direction: Direction,
    n_boot: int,
    seed: int,
) -> Iterable[dict[str, Any]]:
    """Projection, shift and the shift's other measures of one set along one direction, overall and per label."""
    labels = {"all": stats, **stats.get("by_label", {})}
    lab_col = np.array(stores[name].column("label"))
    acts = stores[name].load(common["hook"], common["position"])
    for label, s in labels.items():
        keep = np.ones(len(lab_col), bool) if label == "all" else lab_col == label
        proj = bootstrap(project(acts[keep], direction), n_boot=n_boot, seed=seed)
        base = {**common, "set": name, "label": label, "n": s["n"]}
        yield {**base, "metric": "projection", "value": proj.value, "lo": proj.lo, "hi": proj.hi}
        yield {**base, "metric": "shift", "value": s["shift"], "lo": s["shift_lo"], "hi": s["shift_hi"]}
        for m in SET_METRICS[1:]:
            yield {**base, "metric": m, "value": s[m], "lo": math.nan, "hi": math.nan}


def _item_rows(
    stores: dict[str, ActivationStore], dset: DirectionSet, position: str, ident: dict[str, Any]
) -> Iterable[dict[str, Any]]:
    for name, store in stores.items():
        ids, labels = store.column("id"), store.column("label")
        for hook in dset.hooks:
            acts = store.load(hook, position)
            for method in dset.methods(hook, position):
                proj = project(acts, dset.get(hook, position, method))
                for i, lab, p in zip(ids, labels, proj, strict=True):
                    yield {
                        **{k: ident[k] for k in ("run", "arm", "seed", "step")},
                        "hook": hook,
                        "position": position,
                        "method": method,
                        "set": name,
                        "id": i,
                        "label": lab,
                        "projection": float(p),
                    }


def attribution(
    base_dir: Path,
    adapter: Path,
    dset: DirectionSet,
    cfg: TrackConfig,
    acts: Path,
    who: dict[str, Any],
    loader: SweepLoader | None = None,
) -> list[dict[str, Any]]:
    """Where the checkpoint's shift along the selected direction sits: image tokens vs prompt positions.

    Captures ``cfg.attribution_set`` (requests with an image) on base and checkpoint at the selected hook and
    at each of ``cfg.attribution_positions``; every position's activations are projected on the selected
    direction (derived at its own position), and the paired shift per label is returned with its CI.
    ``loader``: the sweep's model loader (the base is then not read again).
    """
    sel = dset.get()
    cset = load_set(cfg.attribution_set, max_pairs=cfg.max_pairs)
    spec = CaptureSpec(tuple(cfg.attribution_positions), (sel.layer,), (sel.hook_kind,))
    stores = []
    for a in (None, adapter):
        mspec = ModelSpec(str(base_dir), str(a) if a else None, cfg.dtype, cfg.device, backend=cfg.backend)
        cap = Capturer(mspec, acts, cfg.batch_size, progress=False, loader=loader)
        stores.append(cap.capture(cset, spec))
        cap.release()
    labels = np.array(stores[0].column("label"))
    rows = []
    for position in cfg.attribution_positions:
        pb = project(stores[0].load(sel.hook, position), sel)
        pc = project(stores[1].load(sel.hook, position), sel)
        for label in dict.fromkeys(labels):
            keep = labels == label
            est = paired_diff(pc[keep], pb[keep], n_boot=cfg.n_boot, seed=cfg.seed)
            rows.append(
                {
                    **{k: who[k] for k in ("run", "arm", "seed", "step")},
                    "hook": sel.hook,
                    "position": position,
                    "set": cset.name,
                    "label": label,
                    **est.as_dict(),
                }
            )
    return rows


def track(cfg: TrackConfig) -> Path:
    """Measure every checkpoint of ``cfg.run`` along the base directions; returns ``RUN/track``.

    ``RUN/track`` is locked for the whole measurement: a second ``track`` of the run stops at once (exit 2).
    """
    if not Path(cfg.run).is_dir():
        raise ArtifactError(f"{cfg.run}: run folder not found")
    with output_lock(Path(cfg.run) / TRACK_DIR):
        return _track(cfg)


def _track(cfg: TrackConfig) -> Path:
    t0 = time.perf_counter()
    run = Path(cfg.run)
    if not run.is_dir():
        raise ArtifactError(f"{run}: run folder not found")
    run_complete = is_complete(run)
    if not run_complete and not cfg.allow_incomplete:
        raise ArtifactError(
            f"{run}: training run is incomplete (no manifest.json: interrupted or still running); "
            "finish it with vsfa train, or pass --allow-incomplete to track its finished checkpoints"
        )
    ident = run_identity(run)
    base_dir = Path(cfg.base or ident["base_model"] or "")
    if not base_dir.is_dir():
        raise ArtifactError(f"{run}: base model {base_dir} not found (pass --base)")
    checkpoints = list_checkpoints(run)
    if not checkpoints:
        raise ArtifactError(f"{run / 'checkpoints'}: no complete checkpoints to track")
    acts = Path(cfg.acts) if cfg.acts else default_acts_root(run / "checkpoints" / "x")
    dset = base_directions(base_dir, cfg, acts)
    cspec = CaptureSpec.from_dict(dset.meta["capture"])
    contrast = contrast_from_meta(dset.meta["contrast"], cfg.contrast_questions)
    eval_sets = [load_set(s, max_pairs=cfg.max_pairs) for s in cfg.sets]
    sets = [contrast, *eval_sets]

    loader = SweepLoader()  # the base is read once; each checkpoint's adapter is swapped in on a cache miss

    def capture(adapter: Path | None) -> dict[str, ActivationStore]:
        spec = ModelSpec(
            str(base_dir), str(adapter) if adapter else None, cfg.dtype, cfg.device, backend=cfg.backend
        )
        cap = Capturer(spec, acts, cfg.batch_size, progress=False, loader=loader)
        return {s.name: cap.capture(s, cspec) for s in sets}

    base = capture(None)
    rows: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    for step, adapter in progress([(0, None), *checkpoints], f"track {run.name}", unit="checkpoint"):
        stores = base if adapter is None else capture(adapter)
        who = {"run": run.name, **{k: ident[k] for k in ("arm", "seed")}, "step": step}
        who["checkpoint"] = adapter.name if adapter else BASE_CHECKPOINT
        for position in dset.positions:
            layers = compare(
                dset,
                position,
                (base[contrast.name], stores[contrast.name]),
                {s.name: (base[s.name], stores[s.name]) for s in eval_sets},
                n_boot=cfg.n_boot,
                n_random=cfg.n_random,
                seed=cfg.seed,
            )
            rows.extend(_rows_for(layers, dset, position, who, stores, contrast.name, cfg.n_boot, cfg.seed))
            items.extend(_item_rows({s.name: stores[s.name] for s in eval_sets}, dset, position, who))
        logger.info("tracked step %d (%.0f s)", step, time.perf_counter() - t0)
    attr = []
    if cfg.attribution_set and dset.selected:
        attr = attribution(base_dir, checkpoints[-1][1], dset, cfg, acts, who, loader)
    loader.close()
    out = run / TRACK_DIR
    with atomic_dir(out) as tmp:
        n_rows = write_csv_atomic(tmp / "trajectory.csv", rows, COLUMNS)
        write_csv_atomic(tmp / "projections.csv", items, ITEM_COLUMNS)
        if attr:
            write_csv_atomic(tmp / "attribution.csv", attr, ATTRIBUTION_COLUMNS)
        write_manifest(
            tmp,
            {
                "kind": "vsfa.track",
                "run": str(run.resolve()),
                **ident,
                "directions": str(Path(dset.meta["path"]).resolve()),
                "selected": dset.selected,
                "method": dset.meta.get("method", "dom"),
                "contrast": contrast.name,
                "contrast_items": len(contrast.items),
                "sets": [s.name for s in eval_sets],
                "positions": dset.positions,
                "steps": [0, *[s for s, _ in checkpoints]],
                "run_complete": run_complete,
                "rows": n_rows,
                "settings": {"n_boot": cfg.n_boot, "n_random": cfg.n_random, "seed": cfg.seed, "ci": 0.95},
                "seconds": round(time.perf_counter() - t0, 2),
            },
        )
    return out


def read_trajectory(run: str | Path, method: str | None = None):
    """``RUN/track/trajectory.csv`` as a DataFrame (ArtifactError if the run was not tracked).

    ``method``: the direction method whose rows to keep; default the direction set's own (``dom``), ``"all"``
    keeps every method measured (the probe normal's rows too)."""
    df = read_track_file(run, "trajectory.csv")
    if method == "all" or "method" not in df.columns:
        return df
    return df[df["method"] == (method or read_track_manifest(run).get("method", "dom"))].reset_index(
        drop=True
    )


def read_projections(run: str | Path):
    """``RUN/track/projections.csv`` (per item projections, per direction method) as a DataFrame."""
    df = read_track_file(run, "projections.csv")
    return df if "method" in df.columns else df.assign(method="dom")  # tracked before methods were recorded


def read_track_manifest(run: str | Path) -> dict[str, Any]:
    """``RUN/track/manifest.json`` (ArtifactError naming the command to run if the run was not tracked)."""
    folder = Path(run) / TRACK_DIR
    if not (folder / "manifest.json").is_file():
        raise ArtifactError(f"{run}: not tracked (run `vsfa track --run {run}` first)")
    return read_manifest(folder)


def read_track_file(run: str | Path, name: str):
    """One CSV of a complete ``RUN/track`` folder as a DataFrame (ArtifactError if absent)."""
    import pandas as pd

    folder = Path(run) / TRACK_DIR
    read_track_manifest(run)
    if not (folder / name).is_file():
        raise ArtifactError(f"{folder / name}: not found")
    return pd.read_csv(folder / name)
