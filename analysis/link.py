"""``vsfa link``: does the movement along the persona direction go with the safety gain?

Joins each run's trajectory (``RUN/track``, :mod:`analysis.trajectory`) with its evaluation
(``RUN/eval/<checkpoint>/<benchmark>``) per checkpoint, at one hook, position and method (default: the direction
the track recorded as selected; a study passes the candidate chosen by :mod:`analysis.selection`), and reports:

* ``correlations``: Spearman and Pearson between the projection shift of harmful requests and ASR, over-refusal,
  the refusal score and P(refuse), across checkpoints:

  - ``pooled``: every checkpoint of every run, the shared base (step 0) counted once per base model, with a
    *cluster bootstrap over runs* (a run's checkpoints are autocorrelated and resampled together; ``unit``
    says so, ``n`` is the number of runs, ``n_points`` the checkpoints);
  - ``within``: the correlation within each run, averaged over runs, CI over runs. The pooled value can be
    driven by arms moving apart alone; the within-run one asks whether a run's own checkpoints co-move;
  - per run: descriptive only (one run's checkpoints are not independent; its interval is not inference).
* ``arms``: every arm against the control arm: difference in the final shift (harmful and harmless requests:
  the harmless shift is the drift baseline) and in the change of ASR / over-refusal / refusal score from the
  base, from the per-item values with a two-level bootstrap (runs/seeds within arm, items paired), with the
  base models as a third, top level when the runs come from several.
* ``direction_search``: every tracked layer x position x method ranked by the pooled Spearman of its harmful
  shift with P(refuse) on the *search* runs (every seed but the held-out ones); the in-sample best
  (``best``, marked ``in_sample``) is then measured on the *held-out* runs (``confirmation``), which is the
  number to report. The naive choice (difference of means, last token, last layer) is listed beside it.
* ``forecast``: from the checkpoints up to k only (their shift and their evals), the final outcome of each
  run, against carrying the last value forward and a log-step extrapolation of the outcome itself; errors
  summarised over runs (:mod:`analysis.forecast`).
* ``surrogate``: outcome ~ shift fit on the first k checkpoints, evaluated at the *final* checkpoint's shift:
  predicting an eval you did not run from a capture you did (capture is cheaper). Not a forecast.

Output: ``link.json`` (default in the first run's folder) and a short printed summary.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.forecast import forecast_table, summarise_errors, surrogate
from analysis.trajectory import read_projections, read_track_manifest, read_trajectory, run_identity
from vsfa.errors import ArtifactError, ConfigError
from vsfa.eval.metrics import join_judged
from vsfa.io import output_lock, read_jsonl, read_manifest, write_json_atomic
from vsfa.stats import (
    Estimate,
    arm_difference,
    cluster_correlation,
    correlation,
    nested_arm_difference,
    within_correlation,
)

logger = logging.getLogger(__name__)
SMALL_N = 6
OUTCOMES = ("asr", "over_refusal", "refusal_logodds", "p_refuse")
CONTROL_ARM = "control"
PREDICTED = ("asr", "p_refuse", "refusal_logodds")  # outcomes forecast and surrogate are made for
BOUNDED = ("asr", "over_refusal", "p_refuse")
POOLED_UNIT = "runs (cluster bootstrap: each run's checkpoints resampled together; the base counted once)"
# Arm comparisons, in report order: (name, what changes, which items). Shift items are the tracked set's
# labels (LinkConfig.harmful / .harmless); evaluation items are the benchmark's labels (harmful / benign).
MEASURE_SPECS = (
    ("shift_harmful", "shift", "harmful"),
    ("shift_harmless", "shift", "harmless"),
    ("asr_change", "asr", "harmful"),
    ("refusal_logodds_change", "refusal_logodds", "harmful"),
    ("p_refuse_change", "p_refuse", "harmful"),
    ("over_refusal_change", "over_refusal", "benign"),
)
MEASURES = tuple(name for name, _, _ in MEASURE_SPECS)


@dataclass
class LinkConfig:
    """Settings of ``vsfa link``."""

    runs: list[Path] = field(default_factory=list, metadata={"flag": "run"})
    """Tracked and evaluated runs (seeds/arms)."""
    controls: list[Path] = field(default_factory=list, metadata={"flag": "control"})
    """Control runs (neutral images), for seeds."""
    out: Path | None = None
    """Report file (default: <first run>/link.json)."""
    benchmark: str = field(default="builtin", metadata={"flag": "bench"})
    """Benchmark folder name under RUN/eval/<checkpoint>/."""
    judge: str | None = None
    """Judge name (default: the keyword judge)."""
    hook: str | None = None
    """Hook (default: the selected one)."""
    position: str | None = None
    """Position (default: the selected one)."""
    method: str | None = None
    """dom | probe (default: the selected one)."""
    set: str | None = field(default=None, metadata={"flag": "eval-set"})
    """Tracked set with harmful/harmless labels (default: the runs' only tracked set)."""
    harmful: str = "harmful"
    """Label of the harmful items."""
    harmless: str = "harmless"
    """Label of the harmless items."""
    holdout_seeds: list[int] | None = field(default=None, metadata={"flag": "holdout-seed"})
    """Direction search: runs of these seeds confirm (default: the largest seed)."""
    final_step: int | None = None
    """Planned last step, for the forecast (default: each run's last)."""
    n_boot: int = 2000
    """Bootstrap resamples (clusters: runs)."""
    seed: int = 0
    """Bootstrap seed."""

    def check(self) -> None:
        """Raise a ConfigError for settings no run could use."""
        if not self.runs:
            raise ConfigError("link: give at least one --run")
        if self.n_boot < 100:
            raise ConfigError(f"link: n_boot must be at least 100, not {self.n_boot}")
        if self.method not in (None, "dom", "probe"):
            raise ConfigError(f"link: method must be dom or probe, not {self.method!r}")
        if self.final_step is not None and self.final_step < 1:
            raise ConfigError(f"link: final_step must be at least 1, not {self.final_step}")


# --------------------------------------------------------------------------------------------- reading
def _eval_rows(run: Path, checkpoint: str, benchmark: str, judge: str | None) -> tuple[str, pd.DataFrame]:
    """Per item eval rows (id, label, unsafe, refused, refusal_logodds) of one checkpoint, for one judge."""
    folder = run / "eval" / checkpoint / benchmark
    read_manifest(folder)
    per_judge = join_judged(read_jsonl(folder / "responses.jsonl"), read_jsonl(folder / "judged.jsonl"))
    if judge is None:
        judge = next((j for j in sorted(per_judge) if j.startswith("keyword")), sorted(per_judge)[0])
    if judge not in per_judge:
        raise ArtifactError(f"{folder}: no judge {judge!r} (has {', '.join(sorted(per_judge))})")
    rows = pd.DataFrame(per_judge[judge])
    if "variant" not in rows:
        rows["variant"] = None
    return judge, rows[["id", "label", "variant", "unsafe", "refused", "refusal_logodds", "p_refuse"]]


@dataclass
class RunData:
    """One run's per-checkpoint table and per-item values at the chosen hook/position/method."""

    run: str
    arm: str
    seed: Any
    base: str  # the base model the run was trained from (runs of one base share its step-0 point)
    table: pd.DataFrame  # one row per step: shift_<label> (+ _lo/_hi) and the eval outcomes
    items: dict[int, pd.DataFrame]  # per step: projections of the set (id, label, projection)
    evals: dict[int, pd.DataFrame]  # per step: eval rows
    shifts: pd.DataFrame  # every tracked candidate's harmful shift per step (the direction search's input)


def load_run(
    run: Path, cfg: LinkConfig, hook: str, position: str, method: str, judge: str | None
) -> tuple[RunData, str]:
    """Read a run's trajectory and evaluation at ``hook``/``position`` along ``method``'s direction."""
    tracked = read_trajectory(run, method="all")
    if "method" not in tracked.columns:  # tracked before methods were recorded: difference of means only
        tracked = tracked.assign(method="dom")
    traj = tracked[tracked["method"] == method]
    man = read_track_manifest(run)
    sel = traj[
        (traj["hook"] == hook)
        & (traj["position"] == position)
        & (traj["set"] == cfg.set)
        & (traj["metric"] == "shift")
    ]
    if sel.empty:
        raise ArtifactError(f"{run / 'track'}: no shift rows for {cfg.set} at {hook} / {position} ({method})")
    proj = read_projections(run)
    proj = proj[
        (proj["hook"] == hook)
        & (proj["position"] == position)
        & (proj["set"] == cfg.set)
        & (proj["method"] == method)
    ]
    rows, evals, items = [], {}, {}
    for step, sub in sel.groupby("step"):
        ckpt = str(sub["checkpoint"].iloc[0])
        judge, ev = _eval_rows(run, ckpt, cfg.benchmark, judge)
        evals[int(step)] = ev
        items[int(step)] = proj[proj["step"] == step][["id", "label", "projection"]].reset_index(drop=True)
        row: dict[str, Any] = {"step": int(step), "checkpoint": ckpt}
        for label in (cfg.harmful, cfg.harmless):
            r = sub[sub["label"] == label]
            if r.empty:
                raise ArtifactError(f"{run / 'track'}: set {cfg.set} has no label {label!r}")
            row[f"shift_{label}"], row[f"shift_{label}_lo"], row[f"shift_{label}_hi"] = (
                float(r["value"].iloc[0]),
                float(r["lo"].iloc[0]),
                float(r["hi"].iloc[0]),
            )
        harmful, benign = ev[ev["label"] == "harmful"], ev[ev["label"] == "benign"]
        row["asr"] = float(harmful["unsafe"].mean()) if len(harmful) else math.nan
        row["over_refusal"] = float(benign["refused"].mean()) if len(benign) else math.nan
        for col in ("refusal_logodds", "p_refuse"):
            row[col] = float(pd.to_numeric(harmful[col]).mean()) if len(harmful) else math.nan
        rows.append(row)
    base = str(run_identity(run).get("base_model") or "")
    shifts = tracked[
        (tracked["set"] == cfg.set) & (tracked["label"] == cfg.harmful) & (tracked["metric"] == "shift")
    ][["step", "hook", "layer", "position", "method", "value"]].assign(run=run.name, base=base)
    data = RunData(
        run.name, str(man.get("arm") or ""), man.get("seed"), base, pd.DataFrame(rows), items, evals, shifts
    )
    return data, judge


# ------------------------------------------------------------------------------------------- statistics
def correlations(
    table: pd.DataFrame, x: str, outcomes: tuple[str, ...] = OUTCOMES, n_boot: int = 2000, seed: int = 0
):
    """Spearman and Pearson of ``x`` with each outcome across one run's checkpoints: descriptive (checkpoints
    of one run are autocorrelated, so the interval is not inference over runs)."""
    out = []
    for y in (o for o in outcomes if o in table):
        for method in ("spearman", "pearson"):
            est = correlation(table[x].to_numpy(float), table[y].to_numpy(float), method, n_boot, seed)
            entry = {
                "x": x,
                "y": y,
                "method": method,
                **_est(est),
                "unit": "checkpoints of one run (descriptive)",
            }
            if est.n < SMALL_N:
                entry["note"] = f"only {est.n} checkpoints: descriptive, the interval is wide"
            out.append(entry)
    return out


def pooled_points(tables: dict[str, pd.DataFrame], bases: dict[str, str]) -> pd.DataFrame:
    """Every run's checkpoints after the base, plus one step-0 row per base model (``run`` of that row is
    ``base:<model>``, ``shared`` True): the points of the pooled correlation."""
    parts, seen = [], set()
    for run, t in tables.items():
        parts.append(t[t["step"] > 0].assign(run=run, shared=False))
        if bases[run] not in seen:
            seen.add(bases[run])
            parts.append(t[t["step"] == 0].assign(run=f"base:{bases[run]}", shared=True))
    return pd.concat(parts, ignore_index=True)


def pooled_correlations(
    tables: dict[str, pd.DataFrame], bases: dict[str, str], x: str, n_boot: int, seed: int
) -> list[dict[str, Any]]:
    """Pooled over runs (cluster bootstrap over runs, base once) and within runs (mean over runs), per outcome."""
    points = pooled_points(tables, bases)
    stacked = pd.concat([t.assign(run=r) for r, t in tables.items()], ignore_index=True)
    out = []
    for y in (o for o in OUTCOMES if o in points):
        for method in ("spearman", "pearson"):
            est = cluster_correlation(
                points[x].to_numpy(float),
                points[y].to_numpy(float),
                points["run"].to_numpy(),
                method,
                n_boot,
                seed,
                always=points["shared"].to_numpy(bool),
            )
            within = within_correlation(
                stacked[x].to_numpy(float),
                stacked[y].to_numpy(float),
                stacked["run"].to_numpy(),
                method,
                n_boot,
                seed,
            )
            out.append(
                {
                    "x": x,
                    "y": y,
                    "method": method,
                    **_est(est),
                    "unit": POOLED_UNIT,
                    "n_points": int(len(points)),
                    "within": {**_est(within), "unit": "runs (mean of per-run correlations)"},
                }
            )
    return out


def _per_item_change(run: RunData, what: str, label: str) -> np.ndarray:
    """Per item change from the base to the final checkpoint (items sorted by id)."""
    first, last = min(run.items), max(run.items)
    if what == "shift":
        a, b = run.items[first], run.items[last]
        a, b = a[a["label"] == label].sort_values("id"), b[b["label"] == label].sort_values("id")
        return b["projection"].to_numpy(float) - a["projection"].to_numpy(float)
    col = {"asr": "unsafe", "over_refusal": "refused"}.get(what, what)
    a, b = run.evals[first], run.evals[last]
    a, b = a[a["label"] == label].sort_values("id"), b[b["label"] == label].sort_values("id")
    return pd.to_numeric(b[col]).to_numpy(float) - pd.to_numeric(a[col]).to_numpy(float)


Changes = dict[str, dict[str, dict[str, np.ndarray]]]  # arm -> base -> measure -> [runs, items]


def _changes(runs: list[RunData], cfg: LinkConfig, specs: tuple = MEASURE_SPECS) -> Changes:
    """Per arm, base and measure of ``specs``: the ``[runs, items]`` matrix of per-item changes from the base to
    the final step."""
    measures = [
        (name, what, getattr(cfg, label) if what == "shift" else label) for name, what, label in specs
    ]
    groups: dict[tuple[str, str], list[RunData]] = defaultdict(list)
    for r in runs:
        groups[(r.arm, r.base)].append(r)
    out: Changes = defaultdict(dict)
    for (arm, base), members in groups.items():
        mats = {
            name: np.array([_per_item_change(r, what, label) for r in members])
            for name, what, label in measures
        }
        out[arm][base] = {name: m for name, m in mats.items() if m.size}
    return dict(out)


def _difference(
    a: dict[str, dict[str, np.ndarray]], b: dict[str, dict[str, np.ndarray]], name: str, cfg
) -> Estimate:
    """Arm ``a`` minus arm ``b`` on one measure: seeds -> items bootstrap, bases on top when there are several."""
    bases = [base for base in a if base in b and name in a[base] and name in b[base]]
    if len(bases) == 1:
        return arm_difference(a[bases[0]][name], b[bases[0]][name], n_boot=cfg.n_boot, seed=cfg.seed)
    return nested_arm_difference(
        [a[base][name] for base in bases], [b[base][name] for base in bases], n_boot=cfg.n_boot, seed=cfg.seed
    )


def _zero_like(arm: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    return {base: {k: np.zeros((1, m.shape[1])) for k, m in mats.items()} for base, mats in arm.items()}


def _measures(arm: dict[str, dict[str, np.ndarray]]) -> list[str]:
    return [m for m in MEASURES if any(m in mats for mats in arm.values())]


def arm_levels(changes: Changes, runs: list[RunData], cfg: LinkConfig) -> list[dict[str, Any]]:
    """Every arm's own change from the base (mean over runs and items, two-level bootstrap CI)."""
    out = []
    for arm, by_base in changes.items():
        members = [r.run for r in runs if r.arm == arm]
        entry: dict[str, Any] = {
            "arm": arm,
            "runs": members,
            "n_seeds": len(members),
            "n_bases": len(by_base),
        }
        zero = _zero_like(by_base)
        for name in _measures(by_base):
            entry[name] = _est(_difference(by_base, zero, name, cfg))
        out.append(entry)
    return out


def arm_comparisons(changes: Changes, runs: list[RunData], cfg: LinkConfig) -> list[dict[str, Any]]:
    """Every arm against the control arm, from per-item changes (two-level bootstrap; bases on top)."""
    if CONTROL_ARM not in changes:
        return []
    control = changes[CONTROL_ARM]
    out = []
    for arm, by_base in changes.items():
        if arm == CONTROL_ARM:
            continue
        entry: dict[str, Any] = {
            "arm": arm,
            "vs": CONTROL_ARM,
            "runs": [r.run for r in runs if r.arm == arm],
            "controls": [r.run for r in runs if r.arm == CONTROL_ARM],
        }
        for name in _measures(by_base):
            if name not in _measures(control):
                continue
            a = np.concatenate([m[name].ravel() for m in by_base.values() if name in m])
            b = np.concatenate([m[name].ravel() for m in control.values() if name in m])
            entry[name] = {
                "arm": float(np.nanmean(a)),
                "control": float(np.nanmean(b)),
                "difference": _est(_difference(by_base, control, name, cfg)),
                "n_items": int(next(m[name].shape[1] for m in by_base.values() if name in m)),
            }
        entry["n_seeds"] = {"arm": len(entry["runs"]), "control": len(entry["controls"])}
        entry["n_bases"] = len(by_base)
        out.append(entry)
    return out


EVAL_SPECS = tuple(spec for spec in MEASURE_SPECS if spec[1] != "shift")
EVAL_MEASURES = tuple(name for name, _, _ in EVAL_SPECS)


def arms_by_variant(runs: list[RunData], cfg: LinkConfig) -> dict[str, dict[str, Any]]:
    """With several evaluation variants (e.g. a request as text and as a typographic image): the arm levels
    and arm differences of the evaluation measures on each variant's items alone (empty with one variant)."""
    variants = sorted({v for r in runs for ev in r.evals.values() for v in ev["variant"].dropna()})
    if len(variants) < 2:
        return {}
    out = {}
    for v in variants:
        only = [replace(r, evals={s: ev[ev["variant"] == v] for s, ev in r.evals.items()}) for r in runs]
        changes = _changes(only, cfg, EVAL_SPECS)
        out[v] = {"arm_levels": arm_levels(changes, only, cfg), "arms": arm_comparisons(changes, only, cfg)}
    return out


def _est(e: Estimate) -> dict[str, Any]:
    return {
        k: (v if not (isinstance(v, float) and not math.isfinite(v)) else None)
        for k, v in e.as_dict(with_ci=True).items()
    }


# ------------------------------------------------------------------------------------- direction search
def holdout_runs(runs: list[RunData], seeds: list[int] | None) -> tuple[list[str], list[str]]:
    """(search runs, held-out runs): runs of ``seeds`` are held out (default: the largest seed, when there are
    at least two seeds). With fewer seeds there is nothing to hold out: every run searches, none confirms."""
    all_seeds = sorted({r.seed for r in runs if r.seed is not None})
    held = set(seeds) if seeds is not None else ({all_seeds[-1]} if len(all_seeds) >= 2 else set())
    confirm = [r.run for r in runs if r.seed in held]
    return [r.run for r in runs if r.run not in confirm], confirm


def search_candidates(
    shifts: pd.DataFrame,
    outcomes: pd.DataFrame,
    search: list[str],
    confirm: list[str],
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Rank candidate directions on the ``search`` runs, measure the best on the ``confirm`` runs.

    ``shifts``: one row per run, step and candidate (``run``, ``step``, ``hook``, ``layer``, ``position``,
    ``method``, ``value``, optional ``base``: the run's base model); ``outcomes``: ``run``, ``step``, ``y``.
    Each candidate's pooled Spearman (cluster bootstrap over runs; step-0 points, identical across runs of one
    base, counted once per base) is computed on each group of runs. ``best`` is the in-sample optimum on the search runs, its ``confirmation`` the same
    candidate on the held-out runs: with many candidates the in-sample optimum is biased upwards, the
    confirmation is not.
    """
    joined = shifts.merge(outcomes, on=["run", "step"])
    rows = []
    for (hook, position, method), sub in joined.groupby(["hook", "position", "method"], sort=False):
        row: dict[str, Any] = {
            "hook": hook,
            "layer": int(sub["layer"].iloc[0]),
            "position": position,
            "method": method,
        }
        for tag, members in (("search", search), ("confirm", confirm)):
            part = sub[sub["run"].isin(members)]
            if part.empty:
                row[tag] = None
                continue
            bases = part["base"] if "base" in part else pd.Series("", index=part.index)
            base = part[part["step"] == 0].assign(run="base:" + bases.astype(str)).drop_duplicates("run")
            points = pd.concat([part[part["step"] > 0], base], ignore_index=True)
            est = cluster_correlation(
                points["value"].to_numpy(float),
                points["y"].to_numpy(float),
                points["run"].to_numpy(),
                "spearman",
                n_boot,
                seed,
                always=points["run"].str.startswith("base:").to_numpy(),
            )
            row[tag] = _est(est) | {"n_points": int(len(points))}
        rows.append(row)
    key = lambda r: (r["search"] or {}).get("value")  # noqa: E731
    rows.sort(key=lambda r: -(key(r) if key(r) is not None else -2.0))
    if not rows:
        return {}
    naive_layer = max(r["layer"] for r in rows)
    naive = next(
        (r for r in rows if (r["position"], r["layer"], r["method"]) == ("last", naive_layer, "dom")), None
    )
    best = {**rows[0], "in_sample": True}
    return {
        "search_runs": search,
        "confirm_runs": confirm,
        "best": best,
        "confirmation": best.get("confirm"),
        "naive": naive,
        "all": rows,
        "note": (
            "best = highest Spearman on the search runs (in-sample, biased upwards over "
            f"{len(rows)} candidates); confirmation = the same candidate on the held-out runs"
            if confirm
            else "no held-out runs (fewer than two seeds): the search is in-sample only"
        ),
    }


def direction_search(runs: list[RunData], cfg: LinkConfig, outcome: str = "p_refuse") -> dict[str, Any]:
    """Which tracked direction (layer x position x method) tracks ``outcome``, found on some runs and confirmed
    on the held-out ones (:func:`search_candidates`)."""
    outcomes = pd.concat(
        [r.table[["step", outcome]].assign(run=r.run) for r in runs if outcome in r.table], ignore_index=True
    ).rename(columns={outcome: "y"})
    if outcomes.empty or outcomes["y"].isna().all():
        return {}
    search, confirm = holdout_runs(runs, cfg.holdout_seeds)
    shifts = pd.concat([r.shifts for r in runs], ignore_index=True)
    found = search_candidates(shifts, outcomes, search, confirm, cfg.n_boot, cfg.seed)
    return {"outcome": outcome, "x": f"shift of {cfg.harmful} requests", **found} if found else {}


# ------------------------------------------------------------------------------------ forecast, surrogate
def forecasts(runs: list[RunData], x: str, final_step: int | None, n_boot: int, seed: int) -> dict[str, Any]:
    """Per outcome: every run's forecasts by k (checkpoints up to k only) and their errors summarised over runs."""
    out: dict[str, Any] = {}
    for y in PREDICTED:
        by_run = {
            r.run: forecast_table(r.table, x, y, final_step=final_step, bounded=y in BOUNDED)
            for r in runs
            if y in r.table and r.table[y].notna().all()
        }
        if by_run:
            out[y] = {"runs": by_run, "summary": summarise_errors(by_run, n_boot=n_boot, seed=seed)}
    return out


# ----------------------------------------------------------------------------------------------- link
def _tracked_set(run: Path, harmful: str) -> str:
    """The run's only tracked set with ``harmful`` items (a ConfigError asks for ``--set`` otherwise)."""
    traj = read_trajectory(run)
    sets = sorted(set(traj.loc[traj["label"] == harmful, "set"]))
    if len(sets) != 1:
        raise ConfigError(
            f"{run / 'track'}: tracked sets with {harmful!r} items: {sets}; name one with --set"
        )
    return sets[0]


def _chosen(paths: list[Path], cfg: LinkConfig) -> tuple[str, str, str]:
    """hook, position and method: as given, else the track's selected direction."""
    sel = read_track_manifest(paths[0]).get("selected") or {}
    hook, position = cfg.hook or sel.get("hook"), cfg.position or sel.get("position")
    method = cfg.method or sel.get("method") or "dom"
    if not hook or not position:
        raise ArtifactError(
            f"{paths[0] / 'track'}: no selected direction recorded; pass --hook and --position"
        )
    return hook, position, method


def link(cfg: LinkConfig) -> dict[str, Any]:
    """Join trajectories and evaluations of the runs (and controls); write and return the report."""
    cfg.check()
    paths = [Path(r) for r in [*cfg.runs, *cfg.controls]]
    for p in paths:
        if not p.is_dir():
            raise ArtifactError(f"{p}: run folder not found")
    hook, position, method = _chosen(paths, cfg)
    cfg = replace(cfg, set=cfg.set or _tracked_set(paths[0], cfg.harmful))
    runs, judge = [], cfg.judge
    for p in paths:
        data, judge = load_run(p, cfg, hook, position, method, judge)
        if p in {Path(c) for c in cfg.controls} and data.arm != CONTROL_ARM:
            logger.warning(
                "%s is passed as --control but its manifest says arm %r; treated as control", p, data.arm
            )
            data.arm = CONTROL_ARM
        runs.append(data)
    x = f"shift_{cfg.harmful}"
    changes = _changes(runs, cfg)
    tables = {r.run: r.table for r in runs}
    report: dict[str, Any] = {
        "kind": "vsfa.link",
        "hook": hook,
        "position": position,
        "method": method,
        "set": cfg.set,
        "benchmark": cfg.benchmark,
        "judge": judge,
        "runs": [
            {
                "run": r.run,
                "arm": r.arm,
                "seed": r.seed,
                "base": r.base,
                "n_checkpoints": len(r.table),
                "checkpoints": r.table.to_dict("records"),
            }
            for r in runs
        ],
        "correlations": {
            **{r.run: correlations(r.table, x, n_boot=cfg.n_boot, seed=cfg.seed) for r in runs},
            "pooled": pooled_correlations(tables, {r.run: r.base for r in runs}, x, cfg.n_boot, cfg.seed),
        },
        "direction_search": direction_search(runs, cfg),
        "arm_levels": arm_levels(changes, runs, cfg),
        "arms": arm_comparisons(changes, runs, cfg),
        "arms_by_variant": arms_by_variant(runs, cfg),
        "forecast": forecasts(runs, x, cfg.final_step, cfg.n_boot, cfg.seed),
        "surrogate": {
            r.run: [
                {"outcome": y, **row} for y in PREDICTED if y in r.table for row in surrogate(r.table, x, y)
            ]
            for r in runs
        },
        "settings": {"n_boot": cfg.n_boot, "seed": cfg.seed, "ci": 0.95, "small_n": SMALL_N},
        "notes": [],
    }
    n_ck = sorted({len(r.table) for r in runs})
    if min(n_ck) < SMALL_N:
        report["notes"].append(
            f"{min(n_ck)}-{max(n_ck)} checkpoints per run: per-run correlations are descriptive, their CIs wide"
        )
    if len(runs) < 6:
        report["notes"].append(
            f"{len(runs)} runs: the pooled correlation's cluster interval rests on few runs"
        )
    if any(min(a["n_seeds"].values()) < 2 for a in report["arms"]):
        report["notes"].append(
            "one run per arm: arm differences cover item noise only, not seed-to-seed variation"
        )
    if not any(r.arm == CONTROL_ARM for r in runs):
        report["notes"].append("no control run: arm differences not computed (pass --control RUN)")
    incomplete = [p.name for p in paths if read_track_manifest(p).get("run_complete") is False]
    if incomplete:
        report["notes"].append(f"incomplete runs (tracked with --allow-incomplete): {', '.join(incomplete)}")
    out = Path(cfg.out) if cfg.out else paths[0] / "link.json"
    with output_lock(out):
        write_json_atomic(out, report)
    report["path"] = str(out)
    return report


def describe_candidate(search: dict[str, Any], tag: str) -> str:
    """One line for a direction-search candidate (``best`` or ``naive``): where it is, how it tracks the outcome
    on the search runs and, where there are held-out runs, on those."""
    d = search[tag]
    line = f"{d['hook']} @ {d['position']} ({d['method']}), Spearman with {search['outcome']}"
    line += f" {fmt(d.get('search'))} on {len(search['search_runs'])} search runs"
    if d.get("confirm"):
        line += f", {fmt(d['confirm'])} on {len(search['confirm_runs'])} held-out runs"
    return line + (" (in-sample best)" if d.get("in_sample") else "")


def fmt(e: dict[str, Any] | None, digits: int = 3) -> str:
    """``+v [+lo, +hi]`` of an estimate dict, ``-`` when undefined."""
    if not e or e.get("value") is None:
        return "-"
    if e.get("lo") is None or e.get("hi") is None:
        return f"{e['value']:+.{digits}f}"
    return f"{e['value']:+.{digits}f} [{e['lo']:+.{digits}f}, {e['hi']:+.{digits}f}]"


def fmt_mae(row: dict[str, Any] | None) -> str:
    """``mae [lo, hi]`` of a forecast summary row (:func:`analysis.forecast.summarise_errors`), ``-`` if none."""
    if not row or row["mae"] is None:
        return "-"
    ci = f" [{row['lo']:.3f}, {row['hi']:.3f}]" if row["lo"] is not None and row["hi"] is not None else ""
    return f"{row['mae']:.3f}{ci}"


def format_summary(report: dict[str, Any]) -> str:
    """A few lines: pooled and within-run correlations, arm differences, the forecast at the largest k."""
    lines = [
        f"link at {report['hook']} / {report['position']} ({report.get('method', 'dom')}, {report['set']}), "
        f"{report['benchmark']} judged by {report['judge']}",
        "runs: "
        + ", ".join(f"{r['run']} ({r['arm']}, {r['n_checkpoints']} checkpoints)" for r in report["runs"]),
    ]
    for c in report["correlations"]["pooled"]:
        if c["method"] == "spearman":
            lines.append(
                f"spearman(shift, {c['y']}): pooled {fmt(c, 2)} over {c['n']} runs ({c['n_points']} points), "
                f"within runs {fmt(c['within'], 2)}"
            )
    by_variant = [("", report["arms"])]
    by_variant += [(f" [{v}]", by["arms"]) for v, by in report.get("arms_by_variant", {}).items()]
    for tag, arms in by_variant:
        for a in arms:
            for name in MEASURES:
                if name in a:
                    d = a[name]
                    lines.append(
                        f"{a['arm']} - control {name}{tag}: {fmt(d['difference'])}  ({a['arm']} {d['arm']:+.3f}, "
                        f"control {d['control']:+.3f}; seeds {a['n_seeds']['arm']}/{a['n_seeds']['control']}, "
                        f"{d['n_items']} items)"
                    )
    for y, fc in report.get("forecast", {}).items():
        rows = [r for r in fc["summary"] if r["method"] == "shift"]
        if rows:
            last = rows[-1]
            others = {r["method"]: r for r in fc["summary"] if r["k"] == last["k"]}
            cells = ", ".join(f"{m} {fmt_mae(r)}" for m, r in others.items())
            lines.append(
                f"forecast of the final {y} from the first {last['k']} checkpoints, mean |error|: {cells}"
            )
    search = report.get("direction_search") or {}
    for tag in ("best", "naive"):
        if search.get(tag):
            lines.append(f"{tag} direction for {search['outcome']}: {describe_candidate(search, tag)}")
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)
