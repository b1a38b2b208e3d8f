"""``vsfa report``: the results tables of a study, rendered from its artifacts only.

:func:`render_study` reads a study folder (``STUDY`` as ``vsfa demo`` leaves it, or the small copy that
:func:`collect` makes for committing: ``manifest.json``, ``selection.json``, ``link.json``, ``causal.json``,
``curves.csv``, ``directions.json``) and returns Markdown: the protocol (split sizes), the direction chosen on
selection items, the arm table, the correlations with their units, the direction search with its held-out
confirmation, the forecast against its baselines, and the causal checks beside random directions. The study's
``summary.md`` and the README's results blocks are both this text, so every number in them regenerates from a
committed file: a README block between ``<!-- report:DIR -->`` and ``<!-- /report:DIR -->`` is the rendering of
folder ``DIR`` (relative to the README; ``<!-- report:DIR#selection,arms -->`` renders only those parts), and
:func:`check_readme` says which blocks differ.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.link import EVAL_MEASURES, MEASURES, fmt, fmt_mae
from vsfa.errors import ArtifactError
from vsfa.io import write_text_atomic

# file in a committed copy -> where a study folder keeps it
COLLECTED = {
    "manifest.json": "manifest.json",
    "selection.json": "selection.json",
    "link.json": "link.json",
    "causal.json": "steer/causal.json",
    "curves.csv": "steer/curves.csv",
    "directions.json": "directions/persona.json",
}
SHOWN_K = (2, 4, 6)  # forecast rows shown (besides the last k): early, middle
logger = logging.getLogger(__name__)
BLOCK = re.compile(
    r"<!-- report:(?P<dir>[^ #]+)(?:#(?P<parts>[a-z,]+))? -->\n(?P<body>.*?)<!-- /report:(?P=dir) -->", re.S
)
PARTS = ("protocol", "recovery", "selection", "arms", "correlations", "search", "forecast", "causal", "notes")


def _file(folder: Path, name: str) -> Path:
    for p in (folder / name, folder / COLLECTED[name]):
        if p.is_file():
            return p
    also = f" (nor {COLLECTED[name]})" if COLLECTED[name] != name else ""
    raise ArtifactError(f"{folder}: no {name}{also}: not a finished study")


def _json(folder: Path, name: str) -> dict[str, Any]:
    path = _file(folder, name)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from None


def num(x: float | None, spec: str = "+.3f") -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, spec)


def _protocol(manifest: dict[str, Any]) -> list[str]:
    req = manifest["splits"]["requests"]
    how = "the file's own split column" if req["made"] == "file" else f"hashed with seed {req['seed']}"
    return [
        f"Protocol: the request set `{req['set']}` is split by `{req['key']}` ({how}) into "
        f"{req['n']['selection']} selection and {req['n']['evaluation']} evaluation items. Directions, the layer "
        "search and the candidate scores use selection items only; every number below is on evaluation items."
    ]


def _selection(sel: dict[str, Any]) -> list[str]:
    c = sel["chosen"]
    eligible = sum(1 for x in sel["candidates"] if x["eligible"])
    lines = [
        f"Direction chosen by causal scores on the selection items: `{c['hook']}` @ {c['position']} "
        f"({c['method']}): refusal log-odds change per class gap {num(c['score'])} (adding {num(c['addition'])}, "
        f"subtracting {num(c['subtraction'])} nats; random directions up to {num(c['random_score'], '.3f')}; "
        f"zero-ablation {num(c['ablation'])}); KL on harmless {num(c['kl_harmless'], '.3f')}; held-out persona "
        f"accuracy {num(c['accuracy'], '.2f')}; cosine with the refusal readout {num(c['readout_cos'], '+.2f')}; "
        f"{eligible} of {len(sel['candidates'])} candidates eligible; layers {sel['excluded_layers']} excluded "
        "as the readout zone."
    ]
    if sel.get("fallback"):
        lines.append(f"**{sel['note']}**")
    return lines


def _recovery(folder: Path) -> list[str]:
    table = _json(folder, "directions.json")["table"]
    cells = "; ".join(
        f"{r['layer']}: {num(r.get('dom_acc_pair'), '.2f')} / {num(r.get('acc_pair'), '.2f')}"
        for r in table
        if r["position"] == table[0]["position"]
    )
    return [
        f"Persona recovery on held-out persona pairs of the contrast set, by layer at {table[0]['position']} "
        f"(accuracy, difference of means / probe): {cells}."
    ]


def _arm_rows(
    levels: list[dict[str, Any]], arms: list[dict[str, Any]], measures: tuple[str, ...]
) -> list[str]:
    lines = [
        "| arm | seeds | " + " | ".join(m.replace("_", " ") for m in measures) + " |",
        "|---|---|" + "---|" * len(measures),
    ]
    for lv in levels:
        cells = " | ".join(fmt(lv.get(k)) for k in measures)
        lines.append(f"| {lv['arm']} | {lv['n_seeds']} | {cells} |")
    for a in arms:
        cells = " | ".join(fmt(a.get(k, {}).get("difference")) for k in measures)
        lines.append(f"| {a['arm']} - control | {a['n_seeds']['arm']}/{a['n_seeds']['control']} | {cells} |")
    return lines


def _arm_table(link: dict[str, Any]) -> list[str]:
    lines = [
        "Change from the base to the final checkpoint (mean over seeds and items; 95% CI resampling seeds, then "
        "items); `arm - control` rows are differences of changes.",
        "",
        *_arm_rows(link.get("arm_levels", []), link["arms"], MEASURES),
    ]
    for variant, by in link.get("arms_by_variant", {}).items():
        lines += ["", f"Evaluation items of variant `{variant}` only:", ""]
        lines += _arm_rows(by["arm_levels"], by["arms"], EVAL_MEASURES)
    return lines


def _correlations(link: dict[str, Any]) -> list[str]:
    pooled = [c for c in link["correlations"]["pooled"] if c["method"] == "spearman"]
    if not pooled:
        return []
    lines = [
        "Spearman of the harmful shift with each outcome across checkpoints: pooled over runs (95% CI from a "
        "cluster bootstrap over runs, the shared base point counted once) and within runs (mean of per-run "
        "correlations, CI over runs).",
        "",
        "| outcome | pooled | within runs | runs | points |",
        "|---|---|---|---|---|",
    ]
    for c in pooled:
        lines.append(f"| {c['y']} | {fmt(c)} | {fmt(c['within'])} | {c['n']} | {c['n_points']} |")
    return lines


def _search(link: dict[str, Any]) -> list[str]:
    s = link.get("direction_search") or {}
    if not s.get("best"):
        return []
    lines = [
        f"Direction search over {len(s['all'])} tracked candidates, Spearman of the harmful shift with "
        f"{s['outcome']} ({s['note']}):"
    ]
    for tag, title in (("best", "in-sample best"), ("naive", "naive (last layer, difference of means)")):
        d = s.get(tag)
        if d:
            held = f"; held-out runs {fmt(d['confirm'])}" if d.get("confirm") else ""
            lines.append(
                f"- {title}: `{d['hook']}` @ {d['position']} ({d['method']}): search runs {fmt(d['search'])}{held}"
            )
    chosen = next(
        (
            d
            for d in s["all"]
            if (d["hook"], d["position"], d["method"]) == (link["hook"], link["position"], link.get("method"))
        ),
        None,
    )
    if chosen:
        held = f"; held-out runs {fmt(chosen['confirm'])}" if chosen.get("confirm") else ""
        lines.append(f"- chosen on selection items: search runs {fmt(chosen['search'])}{held}")
    return lines


def _forecast(link: dict[str, Any]) -> list[str]:
    fc = link.get("forecast") or {}
    if not fc:
        return []
    lines = [
        "Forecast of each run's final outcome from its first k checkpoints only, mean |error| over runs (95% CI "
        "over runs): the shift extrapolated in log-step and mapped through outcome ~ shift, against "
        f"carrying the last value forward and a log-step extrapolation of the outcome itself (k = "
        f"{', '.join(map(str, SHOWN_K))} and the last; every k is in link.json).",
        "",
        "| outcome | k | shift | log-step | carry-forward | runs |",
        "|---|---|---|---|---|---|",
    ]
    for y, f in fc.items():
        rows = {(r["k"], r["method"]): r for r in f["summary"]}
        ks = sorted({k for k, _ in rows})
        for k in [k for k in ks if k in SHOWN_K or k == ks[-1]]:
            cells = " | ".join(fmt_mae(rows.get((k, m))) for m in ("shift", "log_step", "carry_forward"))
            n = max(r["n_runs"] for (kk, _), r in rows.items() if kk == k)
            lines.append(f"| {y} | {k} | {cells} | {n} |")
    return lines


def _causal(folder: Path) -> list[str]:
    import pandas as pd

    causal = _json(folder, "causal.json")
    curves = pd.read_csv(_file(folder, "curves.csv"))
    steer = curves[curves["mode"] == "steer"]
    col = "p_refuse_harmful" if steer["p_refuse_harmful"].notna().any() else "refusal_logodds_harmful"
    chosen = steer[steer["direction"] == "chosen"].set_index("alpha")[col]
    rand = steer[steer["direction"].str.startswith("random")].groupby("alpha")[col].agg(["min", "max"])
    cells = ", ".join(
        f"{a:g}: {v:.3f} ({rand['min'].get(a, math.nan):.3f} to {rand['max'].get(a, math.nan):.3f})"
        for a, v in chosen.items()
    )
    lines = [
        f"Steering the base along `{causal['hook']}` @ {causal['position']} ({causal.get('method', 'dom')}) on the "
        f"evaluation items, {col.replace('_', ' ')} by alpha in class gaps (random directions of the same norm): "
        f"{cells}."
    ]
    align = causal.get("readout_alignment", {})
    if "chosen" in align:
        lines.append(
            f"Cosine with the refusal readout: {align['chosen']:+.2f} (random 95th percentile {align['random_95']:.2f})."
        )
    for key, title in (
        ("ablation_restored", "Ablation (projected out at every layer)"),
        (
            "undo_restored",
            f"Undo (the checkpoint's shift along the direction, {num(causal.get('undo_shift'))}, removed)",
        ),
    ):
        parts = []
        for name, outcomes in causal.get(key, {}).items():
            vals = "; ".join(
                f"{o} {fmt(v) if v.get('value') is not None else 'undefined (no change to undo)'}"
                for o, v in outcomes.items()
            )
            parts.append(f"  - {name}: {vals}")
        if parts:
            lines += [
                f"- {title} on the final VSFA checkpoint, share of its change from the base undone:",
                *parts,
            ]
    return lines


def render_study(
    folder: str | Path, manifest: dict[str, Any] | None = None, parts: tuple[str, ...] = PARTS
) -> str:
    """The study's results as Markdown, from its artifacts (see the module docstring); ``manifest``: the study
    manifest when it is not written yet (the study renders its summary just before); ``parts``: which of
    :data:`PARTS` to render, in their order (a README shows the headline ones)."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ArtifactError(f"unknown report part {unknown[0]!r}; choose from {', '.join(PARTS)}")
    folder = Path(folder)
    manifest = manifest or _json(folder, "manifest.json")
    sel, link = (_json(folder, n) for n in ("selection.json", "link.json"))
    render = {
        "protocol": lambda: _protocol(manifest),
        "recovery": lambda: _recovery(folder),
        "selection": lambda: _selection(sel),
        "arms": lambda: _arm_table(link),
        "correlations": lambda: _correlations(link),
        "search": lambda: _search(link),
        "forecast": lambda: _forecast(link),
        "causal": lambda: _causal(folder),
        "notes": lambda: [f"Note: {n}" for n in link.get("notes", [])],
    }
    blocks = [render[name]() for name in PARTS if name in parts]
    return "\n\n".join("\n".join(b) for b in blocks if b) + "\n"


def collect(study: str | Path, dest: str | Path, figures: bool = True) -> Path:
    """Copy the files :func:`render_study` reads (and the figures' PNGs) from a study folder to ``dest``."""
    study, dest = Path(study), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in COLLECTED:
        shutil.copyfile(_file(study, name), dest / name)
    if figures and (study / "figures").is_dir():
        for png in sorted((study / "figures").glob("*.png")):
            shutil.copyfile(png, dest / png.name)
    write_text_atomic(dest / "summary.md", render_study(dest))
    return dest


def readme_blocks(readme: str | Path) -> list[tuple[str, str]]:
    """``(folder, body)`` of every report block in a README."""
    return [(m["dir"], m["body"]) for m in BLOCK.finditer(Path(readme).read_text(encoding="utf-8"))]


def _render_block(readme: Path, m: re.Match) -> str:
    """A README block's rendering: ``<!-- report:DIR -->`` all parts, ``<!-- report:DIR#arms,... -->`` some."""
    parts = tuple(m["parts"].split(",")) if m["parts"] else PARTS
    return render_study(readme.parent / m["dir"], parts=parts)


def update_readme(readme: str | Path) -> list[str]:
    """Re-render every report block of ``readme`` from its folder; returns the folders whose block changed."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    changed = []

    def sub(m: re.Match) -> str:
        body = _render_block(readme, m)
        if body != m["body"]:
            changed.append(m["dir"])
        opening = m[0][: m.start("body") - m.start()]
        return f"{opening}{body}<!-- /report:{m['dir']} -->"

    new = BLOCK.sub(sub, text)
    if changed:
        write_text_atomic(readme, new)
    return changed


def check_readme(readme: str | Path) -> list[str]:
    """The folders whose README block differs from its rendering (empty: every number is regenerable)."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    return [m["dir"] for m in BLOCK.finditer(text) if _render_block(readme, m) != m["body"]]


@dataclass
class ReportConfig:
    """Settings of ``vsfa report``."""

    study: list[Path] = field(default_factory=list)
    """Study folder(s) to render (default: the README's blocks)."""
    collect: Path | None = None
    """Copy the study's report files and figures here first."""
    readme: Path = Path("README.md")
    """README whose report blocks to update or check."""
    check: bool = False
    """Exit 1 if a README block differs from its rendering."""


@dataclass
class ReportResult:
    """What ``vsfa report`` prints, and its exit code (1: a README block is stale)."""

    text: str
    code: int = 0


def run_report(cfg: ReportConfig) -> ReportResult:
    """Results tables rendered from a study's artifacts; update or check the README's report blocks."""
    from vsfa.errors import ConfigError

    if cfg.collect is not None:
        if len(cfg.study) != 1:
            raise ConfigError("--collect takes exactly one study folder")
        return ReportResult(f"collected {collect(cfg.study[0], cfg.collect)}")
    if cfg.study:
        return ReportResult("\n".join(render_study(folder) for folder in cfg.study))
    if cfg.check:
        stale = check_readme(cfg.readme)
        for d in stale:
            logger.warning(f"{cfg.readme}: report block {d} differs from its rendering (run `vsfa report`)")
        return ReportResult("", 1 if stale else 0)
    changed = update_readme(cfg.readme)
    text = f"updated {', '.join(changed)}" if changed else f"{cfg.readme}: every report block is up to date"
    return ReportResult(text)
