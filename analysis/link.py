"""``vsfa link``: does the movement along the persona direction go with the safety gain?

Joins each run's trajectory (``RUN/track``, :mod:`analysis.trajectory`) with its evaluation
(``RUN/eval/<checkpoint>/<benchmark>``) per checkpoint, at one hook and position (default: the selected ones)
and reports:

* ``correlations``: Spearman and Pearson, across checkpoints, between the projection shift of harmful requests
  and ASR, over-refusal and the refusal score, per run and pooled over runs, each with a pairs-bootstrap CI.
  ``n`` (checkpoints) is stated beside every value; fewer than :data:`SMALL_N` points get a note.
* ``arms``: every arm against the control arm: difference in the final shift (harmful and harmless requests:
  the harmless shift is the drift baseline) and in the change of ASR / over-refusal / refusal score from the
  base, from the per-item values with a two-level bootstrap (runs/seeds within arm, items paired).
* ``direction_search``: every tracked layer x position ranked by how well its shift tracks P(refuse) across
  all checkpoints of all runs (Spearman with CI), the best named beside the naive last-token, last-layer one.
* ``early_prediction``: fit outcome ~ shift on the first k checkpoints of a run (ASR, P(refuse), refusal
  score), predict the final outcome from the final shift, report the error beside carrying the last observed
  value forward (the naive baseline).

Output: ``link.json`` (default in the first run's folder) and a short printed summary.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.trajectory import read_projections, read_track_manifest, read_trajectory
from vsfa.errors import ArtifactError, ConfigError
from vsfa.eval.metrics import join_judged
from vsfa.io import read_jsonl, read_manifest, write_json_atomic
from vsfa.stats import Estimate, arm_difference, correlation

SMALL_N = 6
OUTCOMES = ("asr", "over_refusal", "refusal_logodds", "p_refuse")
CONTROL_ARM = "control"
PREDICTED = ("asr", "p_refuse", "refusal_logodds")  # outcomes the early prediction is made for
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

    runs: list[str] = field(default_factory=list)
    controls: list[str] = field(default_factory=list)
    out: str | None = None
    benchmark: str = "builtin"
    judge: str | None = None
    hook: str | None = None
    position: str | None = None
    set: str = "requests"
    harmful: str = "harmful"
    harmless: str = "harmless"
    n_boot: int = 2000
    seed: int = 0


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
    return judge, rows[["id", "label", "unsafe", "refused", "refusal_logodds", "p_refuse"]]


@dataclass
class RunData:
    """One run's per-checkpoint table and per-item values at the chosen hook/position."""

    run: str
    arm: str
    seed: Any
    table: pd.DataFrame  # one row per step: shift_<label> (+ _lo/_hi) and the eval outcomes
    items: dict[int, pd.DataFrame]  # per step: projections of the set (id, label, projection)
    evals: dict[int, pd.DataFrame]  # per step: eval rows


def load_run(run: Path, cfg: LinkConfig, hook: str, position: str, judge: str | None) -> tuple[RunData, str]:
    """Read a run's trajectory and evaluation at ``hook``/``position``."""
    traj = read_trajectory(run)
    man = read_track_manifest(run)
    sel = traj[
        (traj["hook"] == hook)
        & (traj["position"] == position)
        & (traj["set"] == cfg.set)
        & (traj["metric"] == "shift")
    ]
    if sel.empty:
        raise ArtifactError(f"{run / 'track'}: no shift rows for {cfg.set} at {hook} / {position}")
    proj = read_projections(run)
    proj = proj[(proj["hook"] == hook) & (proj["position"] == position) & (proj["set"] == cfg.set)]
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
    data = RunData(run.name, str(man.get("arm") or ""), man.get("seed"), pd.DataFrame(rows), items, evals)
    return data, judge


# ------------------------------------------------------------------------------------------- statistics
def correlations(
    table: pd.DataFrame, x: str, outcomes: tuple[str, ...] = OUTCOMES, n_boot: int = 2000, seed: int = 0
):
    """Spearman and Pearson of ``x`` with each outcome across the rows (checkpoints), with bootstrap CIs."""
    out = []
    for y in (o for o in outcomes if o in table):
        for method in ("spearman", "pearson"):
            est = correlation(table[x].to_numpy(float), table[y].to_numpy(float), method, n_boot, seed)
            entry = {"x": x, "y": y, "method": method, **_est(est)}
            if est.n < SMALL_N:
                entry["note"] = f"only {est.n} checkpoints: descriptive, the interval is wide"
            out.append(entry)
    return out


def early_prediction(table: pd.DataFrame, x: str = "shift_harmful", y: str = "asr") -> list[dict[str, Any]]:
    """Fit ``y ~ x`` on the first k checkpoints, predict the final ``y`` from the final ``x``; error vs carry-forward."""
    t = table.sort_values("step").reset_index(drop=True)
    final = t.iloc[-1]
    out = []
    for k in range(2, len(t)):
        head = t.iloc[:k]
        xs, ys = head[x].to_numpy(float), head[y].to_numpy(float)
        if np.ptp(xs) > 0 and np.isfinite(xs).all() and np.isfinite(ys).all():
            slope, icept = np.polyfit(xs, ys, 1)
            pred = float(
                np.clip(icept + slope * float(final[x]), 0.0, 1.0)
                if y in ("asr", "over_refusal", "p_refuse")
                else icept + slope * float(final[x])
            )
        else:
            pred = math.nan
        carry = float(ys[-1])
        out.append(
            {
                "k": k,
                "last_step_used": int(head["step"].iloc[-1]),
                "final_step": int(final["step"]),
                "predicted": pred,
                "actual": float(final[y]),
                "error": abs(pred - float(final[y])) if math.isfinite(pred) else math.nan,
                "carry_forward": carry,
                "carry_forward_error": abs(carry - float(final[y])),
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


def _changes(runs: list[RunData], cfg: LinkConfig) -> dict[str, dict[str, np.ndarray]]:
    """Per arm and measure: the ``[runs, items]`` matrix of per-item changes from the base to the final step."""
    measures = [
        (name, what, getattr(cfg, label) if what == "shift" else label) for name, what, label in MEASURE_SPECS
    ]
    by_arm: dict[str, list[RunData]] = defaultdict(list)
    for r in runs:
        by_arm[r.arm].append(r)
    out: dict[str, dict[str, np.ndarray]] = {}
    for arm, members in by_arm.items():
        mats = {
            name: np.array([_per_item_change(r, what, label) for r in members])
            for name, what, label in measures
        }
        out[arm] = {name: m for name, m in mats.items() if m.size}
    return out


def arm_levels(
    changes: dict[str, dict[str, np.ndarray]], runs: list[RunData], cfg: LinkConfig
) -> list[dict[str, Any]]:
    """Every arm's own change from the base (mean over runs and items, two-level bootstrap CI)."""
    out = []
    for arm, mats in changes.items():
        members = [r.run for r in runs if r.arm == arm]
        entry: dict[str, Any] = {"arm": arm, "runs": members, "n_seeds": len(members)}
        for name, m in mats.items():
            zero = np.zeros((1, m.shape[1]))
            entry[name] = _est(arm_difference(m, zero, n_boot=cfg.n_boot, seed=cfg.seed))
        out.append(entry)
    return out


def arm_comparisons(
    changes: dict[str, dict[str, np.ndarray]], runs: list[RunData], cfg: LinkConfig
) -> list[dict[str, Any]]:
    """Every arm against the control arm, from per-item changes (two-level bootstrap)."""
    if CONTROL_ARM not in changes:
        return []
    control = changes[CONTROL_ARM]
    out = []
    for arm, mats in changes.items():
        if arm == CONTROL_ARM:
            continue
        entry: dict[str, Any] = {
            "arm": arm,
            "vs": CONTROL_ARM,
            "runs": [r.run for r in runs if r.arm == arm],
            "controls": [r.run for r in runs if r.arm == CONTROL_ARM],
        }
        for name, a in mats.items():
            if name not in control:
                continue
            b = control[name]
            entry[name] = {
                "arm": float(a.mean()),
                "control": float(b.mean()),
                "difference": _est(arm_difference(a, b, n_boot=cfg.n_boot, seed=cfg.seed)),
                "n_items": int(a.shape[1]),
            }
        entry["n_seeds"] = {"arm": len(entry["runs"]), "control": len(entry["controls"])}
        out.append(entry)
    return out


def _est(e: Estimate) -> dict[str, Any]:
    return {
        k: (v if not (isinstance(v, float) and not math.isfinite(v)) else None)
        for k, v in e.as_dict().items()
    }


def direction_search(
    paths: list[Path], runs: list[RunData], cfg: LinkConfig, outcome: str = "p_refuse"
) -> dict[str, Any]:
    """Which tracked direction (layer x position x method) best tracks ``outcome``?

    For every hook, position and method in the trajectories (difference of means, and the probe's normal where
    the directions have one), the shift of harmful requests at each checkpoint of every run is correlated
    (Spearman, pooled over runs and arms) with the outcome at that checkpoint. Returns all candidates sorted by
    the correlation, the best one, and the naive choice (difference of means, last token, last layer) beside it.
    """
    outcomes = pd.concat(
        [r.table[["step", outcome]].assign(run=r.run) for r in runs if outcome in r.table], ignore_index=True
    )
    if outcomes.empty:
        return {}
    shifts = []
    for p, r in zip(paths, runs, strict=True):
        t = read_trajectory(p, method="all")
        if "method" not in t.columns:  # tracked before methods were recorded: difference of means only
            t = t.assign(method="dom")
        t = t[(t["set"] == cfg.set) & (t["label"] == cfg.harmful) & (t["metric"] == "shift")]
        shifts.append(t[["step", "hook", "layer", "position", "method", "value"]].assign(run=r.run))
    joined = pd.concat(shifts, ignore_index=True).merge(outcomes, on=["run", "step"])
    rows = []
    for (hook, position, method), sub in joined.groupby(["hook", "position", "method"], sort=False):
        est = correlation(sub["value"], sub[outcome], "spearman", cfg.n_boot, cfg.seed)
        rows.append(
            {"hook": hook, "layer": int(sub["layer"].iloc[0]), "position": position, "method": method}
            | _est(est)
        )
    rows.sort(key=lambda r: -(r["value"] if r["value"] is not None else -2.0))
    naive_layer = max(r["layer"] for r in rows)
    naive = next(
        (r for r in rows if (r["position"], r["layer"], r["method"]) == ("last", naive_layer, "dom")), None
    )
    return {
        "outcome": outcome,
        "x": f"shift of {cfg.harmful} requests",
        "best": rows[0],
        "naive": naive,
        "all": rows,
    }


# ----------------------------------------------------------------------------------------------- link
def link(cfg: LinkConfig, log=print) -> dict[str, Any]:
    """Join trajectories and evaluations of the runs (and controls); write and return the report."""
    paths = [Path(r) for r in [*cfg.runs, *cfg.controls]]
    if not cfg.runs:
        raise ConfigError("link: give at least one --run")
    for p in paths:
        if not p.is_dir():
            raise ArtifactError(f"{p}: run folder not found")
    man = read_track_manifest(paths[0])
    sel = man.get("selected") or {}
    hook = cfg.hook or sel.get("hook")
    position = cfg.position or sel.get("position")
    if not hook or not position:
        raise ArtifactError(
            f"{paths[0] / 'track'}: no selected direction recorded; pass --hook and --position"
        )
    runs, judge = [], cfg.judge
    for p in paths:
        data, judge = load_run(p, cfg, hook, position, judge)
        if str(p) in cfg.controls and data.arm != CONTROL_ARM:
            log(
                f"note: {p} is passed as --control but its manifest says arm {data.arm!r}; treated as control"
            )
            data.arm = CONTROL_ARM
        runs.append(data)
    x = f"shift_{cfg.harmful}"
    changes = _changes(runs, cfg)
    pooled = pd.concat([r.table.assign(run=r.run, arm=r.arm) for r in runs], ignore_index=True)
    report: dict[str, Any] = {
        "kind": "vsfa.link",
        "hook": hook,
        "position": position,
        "set": cfg.set,
        "benchmark": cfg.benchmark,
        "judge": judge,
        "runs": [
            {
                "run": r.run,
                "arm": r.arm,
                "seed": r.seed,
                "n_checkpoints": len(r.table),
                "checkpoints": r.table.to_dict("records"),
            }
            for r in runs
        ],
        "correlations": {
            **{r.run: correlations(r.table, x, n_boot=cfg.n_boot, seed=cfg.seed) for r in runs},
            "pooled": correlations(pooled, x, n_boot=cfg.n_boot, seed=cfg.seed),
        },
        "direction_search": direction_search(paths, runs, cfg),
        "arm_levels": arm_levels(changes, runs, cfg),
        "arms": arm_comparisons(changes, runs, cfg),
        "early_prediction": {
            r.run: [
                {"outcome": y, **row}
                for y in PREDICTED
                if y in r.table
                for row in early_prediction(r.table, x, y)
            ]
            for r in runs
            if r.arm != CONTROL_ARM
        },
        "settings": {"n_boot": cfg.n_boot, "seed": cfg.seed, "ci": 0.95, "small_n": SMALL_N},
        "notes": [],
    }
    n_ck = sorted({len(r.table) for r in runs})
    if min(n_ck) < SMALL_N:
        report["notes"].append(
            f"{min(n_ck)}-{max(n_ck)} checkpoints per run: per-run correlations are descriptive, their CIs wide"
        )
    if any(min(a["n_seeds"].values()) < 2 for a in report["arms"]):
        report["notes"].append(
            "one run per arm: arm differences cover item noise only, not seed-to-seed variation"
        )
    if not any(r.arm == CONTROL_ARM for r in runs):
        report["notes"].append("no control run: arm differences not computed (pass --control RUN)")
    out = Path(cfg.out) if cfg.out else paths[0] / "link.json"
    write_json_atomic(out, report)
    report["path"] = str(out)
    return report


def describe_candidate(search: dict[str, Any], tag: str) -> str:
    """One line for a direction-search candidate (``best`` or ``naive``): where it is and how it tracks."""
    d = search[tag]
    return (
        f"{d['hook']} @ {d['position']} ({d['method']}), Spearman with {search['outcome']} {_ci(d)} "
        f"over {d['n']} checkpoints"
    )


def _ci(e: dict[str, Any] | None, fmt: str = "+.3f") -> str:
    if not e or e.get("value") is None:
        return "-"
    lo, hi = e.get("lo"), e.get("hi")
    inner = f" [{lo:{fmt}}, {hi:{fmt}}]" if lo is not None and hi is not None else ""
    return f"{e['value']:{fmt}}{inner}"


def format_summary(report: dict[str, Any]) -> str:
    """A few lines: pooled correlations, arm differences, early prediction at the largest k."""
    lines = [
        f"link at {report['hook']} / {report['position']} ({report['set']}), {report['benchmark']} judged by {report['judge']}",
        "runs: "
        + ", ".join(f"{r['run']} ({r['arm']}, {r['n_checkpoints']} checkpoints)" for r in report["runs"]),
    ]
    for c in report["correlations"]["pooled"]:
        if c["method"] == "spearman":
            lines.append(f"pooled spearman(shift, {c['y']}) = {_ci(c, '+.2f')}  n={c['n']}")
    for a in report["arms"]:
        for name in MEASURES:
            if name in a:
                d = a[name]
                lines.append(
                    f"{a['arm']} - control {name}: {_ci(d['difference'])}  ({a['arm']} {d['arm']:+.3f}, control {d['control']:+.3f}; "
                    f"seeds {a['n_seeds']['arm']}/{a['n_seeds']['control']}, {d['n_items']} items)"
                )
    for run, rows in report["early_prediction"].items():
        for y in PREDICTED:
            last = [r for r in rows if r["outcome"] == y][-1:]
            for r in last:
                err = r["error"] if r["error"] is not None else float("nan")
                lines.append(
                    f"early prediction {run} {y}: first {r['k']} checkpoints -> final {r['actual']:.3f}, "
                    f"fit error {err:.3f} vs carry-forward {r['carry_forward_error']:.3f}"
                )
    search = report.get("direction_search") or {}
    for tag in ("best", "naive"):
        if search.get(tag):
            lines.append(f"{tag} direction for {search['outcome']}: {describe_candidate(search, tag)}")
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)
