"""Directions from contrast activations, layer/position selection, and the Direction artifact.

:func:`derive` reads a contrast store (e.g. the persona set) and, for every hook and position in it, computes
the difference-of-means direction (raw and unit), a logistic probe (:mod:`probes.linear`) with cross-validation
grouped by question and by persona pair, Cohen's d, the probe-DoM cosine, the separation of a second set
(harmful vs harmless requests) along the unit DoM direction, and a norm-matched random-direction baseline.
Every row goes into the per-layer table; a :class:`SelectionRule` picks one hook/position from it, combining
held-out-pair accuracy with the harmful-vs-harmless separation (never accuracy alone: on SmolLM2 the layer with
the best probe accuracy separated harmful from harmless at chance).

The artifact (:class:`DirectionSet`) is two files: ``<name>.safetensors`` (per hook and position: ``dom`` raw
vector, probe ``probe_w``/``probe_b`` in raw activation space) and ``<name>.json`` (provenance: model and its
fingerprint, checkpoint, contrast set, n per class, hooks, positions, method, the hook convention -- its
identifier ``convention`` and its exact statement ``hook_convention`` (:data:`probes.store.HOOK_CONVENTION_NOTE`:
``hook_resid_post`` of the last layer is HF's last hidden state *before* the final norm) --, the selection rule
and choice, and the full table), written last; ``<name>.table.csv`` holds the table for humans.
:func:`load_direction` returns one :class:`Direction`; :func:`project` projects activations on it.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probes.hooked import parse_hook_name
from probes.linear import auroc, cosine, dom, fit_probe, grouped_cv, grouped_cv_many, random_baseline, unit
from probes.store import HOOK_CONVENTION, HOOK_CONVENTION_NOTE, ActivationStore
from vsfa.errors import ArtifactError, ConfigError, DataError
from vsfa.io import atomic_path, read_json, sha256_file, write_json_atomic, write_text_atomic
from vsfa.stats import cohens_d

DIRECTIONS_KIND = "vsfa.directions"
DIRECTIONS_VERSION = 1


# ----------------------------------------------------------------------------------------------- Direction
@dataclass
class Direction:
    """One direction at one hook and position.

    ``vector`` is the raw (unnormalised) direction: the difference of means for ``method="dom"``, the probe's
    raw-space normal for ``method="probe"`` (then ``bias`` is its intercept). ``meta`` carries the provenance of
    the set it came from (model, checkpoint, contrast, n per class, hook convention).
    """

    vector: torch.Tensor
    hook: str
    position: str
    method: str = "dom"
    bias: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def layer(self) -> int:
        return parse_hook_name(self.hook)[0]

    @property
    def hook_kind(self) -> str:
        return parse_hook_name(self.hook)[1]

    @property
    def norm(self) -> float:
        return float(self.vector.norm())

    @property
    def unit(self) -> torch.Tensor:
        n = self.vector.norm()
        return self.vector / n if n > 0 else self.vector

    def project(self, acts: torch.Tensor | np.ndarray) -> np.ndarray:
        """Projection of activations ``[n, d]`` on the unit direction (activation units)."""
        return project(acts, self)


def shift_vector(base: ActivationStore, tuned: ActivationStore, hook: str, position: str) -> Direction:
    """Fine-tuning shift: mean over the same items of (checkpoint - base) activations, as a Direction."""
    if base.column("id") != tuned.column("id"):
        raise ArtifactError(f"{base.folder} and {tuned.folder} hold different items; cannot pair them")
    delta = (tuned.load(hook, position).double() - base.load(hook, position).double()).mean(0).float()
    meta = {
        "model": {"source": base.manifest["model"]["source"]},
        "checkpoint": tuned.manifest["model"].get("adapter"),
        "contrast": {
            "name": base.set_name,
            "store_key": base.key,
            "n_per_class": base.manifest["set"]["counts"],
        },
        "stores": {"base": str(base.folder), "checkpoint": str(tuned.folder)},
    }
    return Direction(delta, hook, position, "shift", None, meta)


def project(acts: torch.Tensor | np.ndarray, direction: Direction | torch.Tensor | np.ndarray) -> np.ndarray:
    """``acts [n, d] @ unit(direction)`` as float64 numpy; widths must agree."""
    vec = direction.vector if isinstance(direction, Direction) else direction
    u = unit(vec)
    x = acts.detach().cpu().double().numpy() if isinstance(acts, torch.Tensor) else np.asarray(acts, float)
    if x.shape[-1] != u.shape[0]:
        raise ArtifactError(f"activations have width {x.shape[-1]}, the direction {u.shape[0]}")
    return x @ u


# ----------------------------------------------------------------------------------------------- selection
@dataclass
class SelectionRule:
    """How to pick the hook/position from the table.

    ``score = a^(1-w) * s^w`` (``combine="geometric"``) or ``(1-w)*a + w*s`` (``"weighted"``), where
    ``a = 2*acc - 1`` is the held-out accuracy rescaled to [0, 1] (``accuracy="pair"``: held out by persona pair,
    falling back to by-question when the set has no pairs) and ``s = 2*AUROC - 1`` the harmful-vs-harmless
    separation along the unit DoM direction (harmful must project on the positive side), both clipped at 0.
    Rows below ``min_accuracy`` or ``min_separation``, and the last ``exclude_last_frac`` of layers, are not
    eligible. ``w`` must be > 0: selection never rests on accuracy alone.
    """

    combine: str = "geometric"
    """Selection rule: geometric | weighted."""
    weight_separation: float = 0.5
    """Selection rule: weight of the separation, (0, 1]."""
    accuracy: str = "pair"
    """Held-out accuracy: pair (by persona pair) | question."""
    min_accuracy: float = 0.6
    """Selection rule: minimum held-out accuracy."""
    min_separation: float = 0.6
    """Selection rule: minimum harmful-vs-harmless AUROC."""
    exclude_last_frac: float = 0.0
    """Share of the last layers not eligible."""

    def __post_init__(self) -> None:
        if self.combine not in ("geometric", "weighted"):
            raise ConfigError(
                f"selection rule: combine must be 'geometric' or 'weighted', not {self.combine!r}"
            )
        if not 0 < self.weight_separation <= 1:
            raise ConfigError(
                "selection rule: weight_separation must be in (0, 1] (selection never rests on accuracy alone)"
            )
        if self.accuracy not in ("pair", "question"):
            raise ConfigError(f"selection rule: accuracy must be 'pair' or 'question', not {self.accuracy!r}")
        if not 0 <= self.exclude_last_frac < 1:
            raise ConfigError("selection rule: exclude_last_frac must be in [0, 1)")

    def accuracy_of(self, row: dict[str, Any]) -> float:
        if self.accuracy == "pair" and _finite(row.get("acc_pair")):
            return float(row["acc_pair"])
        return float(row.get("acc_q", float("nan")))

    def score(self, row: dict[str, Any]) -> float:
        """The row's score (NaN when it has no separation or accuracy)."""
        acc, sep = self.accuracy_of(row), row.get("sep_auroc", float("nan"))
        if not (_finite(acc) and _finite(sep)):
            return float("nan")
        a, s = max(0.0, 2 * acc - 1), max(0.0, 2 * sep - 1)
        w = self.weight_separation
        return a ** (1 - w) * s**w if self.combine == "geometric" else (1 - w) * a + w * s

    def eligible(self, row: dict[str, Any], n_layers: int) -> bool:
        if row["layer"] >= n_layers * (1 - self.exclude_last_frac):
            return False
        return self.accuracy_of(row) >= self.min_accuracy and row.get("sep_auroc", 0) >= self.min_separation


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def select(
    rows: list[dict[str, Any]], rule: SelectionRule, n_layers: int
) -> tuple[dict[str, Any] | None, str]:
    """The best eligible row under ``rule`` and a one-line note on how it was chosen."""
    scored = [(rule.score(r), r) for r in rows]
    scored = [(s, r) for s, r in scored if _finite(s)]
    if not scored:
        return None, "no row has both a held-out accuracy and a separation AUROC: nothing selected"
    eligible = [(s, r) for s, r in scored if rule.eligible(r, n_layers)]
    if eligible:
        s, r = max(eligible, key=lambda t: t[0])
        return r, f"best {rule.combine} score {s:.3f} among {len(eligible)} eligible of {len(rows)} rows"
    s, r = max(scored, key=lambda t: t[0])
    return r, (
        f"WARNING: no row meets min_accuracy={rule.min_accuracy} and min_separation={rule.min_separation}; "
        f"best score {s:.3f} taken anyway"
    )


# ------------------------------------------------------------------------------------------------ derive
def derive(
    contrast: ActivationStore,
    separation: ActivationStore | None = None,
    rule: SelectionRule | None = None,
    positions: list[str] | None = None,
    C: float = 1.0,
    n_splits: int = 5,
    n_random: int = 32,
    seed: int = 0,
    batched_cv: bool = False,
) -> DirectionSet:
    """Per hook and position: DoM + probe + metrics; select one row; return the :class:`DirectionSet`.

    ``batched_cv`` cross-validates every hook x position at once (:func:`probes.linear.grouped_cv_many`, one
    batched L-BFGS in torch) instead of one scikit-learn loop per row: the same folds and objective, held-out
    AUROCs within about 1e-3, many times faster on large contrasts."""
    rule = rule or SelectionRule()
    y_all = contrast.y()
    split = np.array(contrast.column("split"))
    extract = split == "extract"
    if not extract.any():
        extract = np.ones(len(y_all), dtype=bool)
    heldout = (split == "heldout") & ~extract
    counts = {
        contrast.manifest["set"]["positive"]: int(y_all[extract].sum()),
        contrast.manifest["set"]["negative"]: int((1 - y_all[extract]).sum()),
    }
    for label, n in counts.items():
        if n == 0:
            raise DataError(f"{contrast.folder}: class {label!r} is empty in the extract split")
    ye = y_all[extract]
    groups_q = np.array(contrast.column("group"))[extract]
    pairs = contrast.column("pair")
    has_pairs = len({p for p in pairs if p is not None}) >= 2
    groups_p = np.array([str(p) for p in pairs])[extract]
    positions = positions or contrast.positions
    sep_y = sep_sel = None
    if separation is not None:
        sep_y = separation.y()
        # the separation set's own split: its extract (selection) items choose the layer, heldout ones only report
        sep_sel = np.array(separation.column("split")) != "heldout"
        if not sep_sel.any():
            raise DataError(
                f"{separation.folder}: separation set {separation.set_name!r} has no extract items"
            )
        if sep_y[sep_sel].min() == sep_y[sep_sel].max():
            raise DataError(f"{separation.folder}: separation set {separation.set_name!r} has an empty class")
    cv_many: dict[tuple[str, str], dict[str, Any]] = {}
    if batched_cv:
        keys = [(h, p) for p in positions for h in contrast.hooks]
        stack = np.stack([contrast.load(h, p).float().numpy()[extract] for h, p in keys])
        for suffix, groups in (("q", groups_q), ("pair", groups_p if has_pairs else None)):
            results = (
                grouped_cv_many(stack, ye, groups, n_splits, C) if groups is not None else [None] * len(keys)
            )
            for key, cv in zip(keys, results, strict=True):
                cv_many.setdefault(key, {})[suffix] = cv
        del stack
    rows, tensors = [], {}
    for position in positions:
        for hook in contrast.hooks:
            x_all = contrast.load(hook, position).double().numpy()
            xe = x_all[extract]
            raw = dom(xe, ye)
            u = unit(raw)
            fit = fit_probe(xe, ye, C=C)
            proj = xe @ u
            layer, kind = parse_hook_name(hook)
            row: dict[str, Any] = {
                "hook": hook,
                "layer": layer,
                "hook_kind": kind,
                "position": position,
                "n_pos": int(ye.sum()),
                "n_neg": int(len(ye) - ye.sum()),
                "dom_norm": float(np.linalg.norm(raw)),
                "median_norm": float(np.median(np.linalg.norm(xe, axis=1))),
                "d": cohens_d(proj[ye == 1], proj[ye == 0]),
                "cos_probe_dom": cosine(fit.w, raw),
            }
            if batched_cv:
                cv_q, cv_p = cv_many[hook, position]["q"], cv_many[hook, position]["pair"]
            else:
                cv_q = grouped_cv(xe, ye, groups_q, n_splits, C)
                cv_p = grouped_cv(xe, ye, groups_p, n_splits, C) if has_pairs else None
            for suffix, cv in (("q", cv_q), ("pair", cv_p)):
                for k in ("acc", "auroc", "dom_acc", "dom_auroc", "d"):
                    row[f"{k}_{suffix}"] = cv[k] if cv else float("nan")
            if heldout.any():
                xh, yh = x_all[heldout], y_all[heldout]
                row["test_acc"] = fit.accuracy(xh, yh)
                row["test_dom_d"] = cohens_d((xh @ u)[yh == 1], (xh @ u)[yh == 0])
            sep_x = sep_y_sel = None
            if separation is not None:
                sep_all = separation.load(hook, position).double().numpy()
                sp, sy = sep_all[sep_sel] @ u, sep_y[sep_sel]
                row["sep_auroc"] = auroc(sp, sy)
                row["sep_d"] = cohens_d(sp[sy == 1], sp[sy == 0])
                held_y = sep_y[~sep_sel]
                if held_y.size and held_y.min() != held_y.max():
                    row["sep_auroc_heldout"] = auroc(sep_all[~sep_sel] @ u, held_y)
                sep_x, sep_y_sel = sep_all[sep_sel], sy
            row.update(random_baseline(xe, ye, row["dom_norm"], sep_x, sep_y_sel, n=n_random, seed=seed))
            rows.append(row)
            tensors[_tkey(hook, position, "dom")] = torch.from_numpy(raw).float()
            tensors[_tkey(hook, position, "probe_w")] = torch.from_numpy(fit.w).float()
            tensors[_tkey(hook, position, "probe_b")] = torch.tensor([fit.b], dtype=torch.float32)
    n_layers = int(contrast.manifest["model"]["n_layers"])
    chosen, note = (
        select(rows, rule, n_layers)
        if separation is not None
        else (
            None,
            "no separation set: nothing selected (the rule needs harmful-vs-harmless separation)",
        )
    )
    for r in rows:
        r["score"] = rule.score(r)
        r["selected"] = (
            chosen is not None and r["hook"] == chosen["hook"] and r["position"] == chosen["position"]
        )
    m = contrast.manifest
    meta = {
        "kind": DIRECTIONS_KIND,
        "version": DIRECTIONS_VERSION,
        "convention": HOOK_CONVENTION,
        "hook_convention": HOOK_CONVENTION_NOTE,
        "d_model": contrast.d_model,
        "n_layers": n_layers,
        "model": {
            "source": m["model"]["source"],
            "fingerprint": _base_fingerprint(m["model"]["source"]),
            "key": m["model"].get("key"),
            "family": m["model"]["family"],
            "dtype": m["model"].get("dtype"),
        },
        "checkpoint": m["model"].get("adapter"),
        "contrast": {
            **{k: m["set"][k] for k in ("name", "key", "positive", "negative", "source")},
            "n_per_class": counts,
            "store": str(contrast.folder),
            "store_key": contrast.key,
        },
        "separation": (
            {
                "name": separation.set_name,
                "store": str(separation.folder),
                "store_key": separation.key,
                "counts": separation.manifest["set"]["counts"],
            }
            if separation is not None
            else None
        ),
        "capture": m["capture"],
        "hooks": contrast.hooks,
        "positions": list(positions),
        "method": "dom",
        "methods": {
            "dom": "difference of means, positive minus negative class, extract split (raw; unit = dom/|dom|)",
            "probe": f"logistic regression (C={C}) on features standardised by pooled within-class SD; "
            "raw-space normal w = coef/scale, bias b",
        },
        "cv": {"n_splits": n_splits, "groups": ["question", "persona pair"] if has_pairs else ["question"]},
        "random_baseline": {"n": n_random, "seed": seed, "norm": "matched to |dom| per row"},
        "rule": asdict(rule),
        "selected": (
            {
                "hook": chosen["hook"],
                "layer": chosen["layer"],
                "position": chosen["position"],
                "score": chosen["score"],
            }
            if chosen
            else None
        ),
        "selection_note": note,
        "table": rows,
    }
    return DirectionSet(meta, tensors)


def _base_fingerprint(source: str) -> str | None:
    from vsfa.io import model_fingerprint

    try:
        return model_fingerprint(source)
    except OSError:
        return None


def _tkey(hook: str, position: str, what: str) -> str:
    return f"{hook}@{position}/{what}"


# ------------------------------------------------------------------------------------------- DirectionSet
TABLE_COLUMNS = (
    "hook",
    "position",
    "n_pos",
    "n_neg",
    "acc_q",
    "acc_pair",
    "auroc_pair",
    "dom_acc_pair",
    "d",
    "cos_probe_dom",
    "test_acc",
    "sep_auroc",
    "sep_d",
    "sep_auroc_heldout",
    "rand_d95",
    "rand_sep95",
    "dom_norm",
    "median_norm",
    "score",
    "selected",
)


@dataclass
class DirectionSet:
    """Directions for every hook/position of one contrast, with their table and provenance (``meta``)."""

    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def table(self) -> list[dict[str, Any]]:
        return self.meta["table"]

    @property
    def hooks(self) -> list[str]:
        return list(self.meta["hooks"])

    @property
    def positions(self) -> list[str]:
        return list(self.meta["positions"])

    @property
    def d_model(self) -> int:
        return int(self.meta["d_model"])

    @property
    def selected(self) -> dict[str, Any] | None:
        return self.meta.get("selected")

    def get(
        self, hook: str | None = None, position: str | None = None, method: str | None = None
    ) -> Direction:
        """One direction; hook/position default to the selected ones, method to the set's (``dom``)."""
        sel = self.selected or {}
        hook = hook or sel.get("hook")
        position = position or sel.get("position") or (self.positions[0] if self.positions else None)
        method = method or sel.get("method") or self.meta.get("method", "dom")
        where = self.meta.get("path", "directions")
        if hook is None:
            raise ArtifactError(f"{where}: no layer was selected; name a hook")
        key = _tkey(hook, position, "probe_w" if method == "probe" else method)
        if key not in self.tensors:
            raise ArtifactError(f"{where}: no {method} direction at {hook} / {position}")
        bias = float(self.tensors[_tkey(hook, position, "probe_b")][0]) if method == "probe" else None
        row = next((r for r in self.table if r["hook"] == hook and r["position"] == position), {})
        meta = {k: self.meta.get(k) for k in ("convention", "model", "checkpoint", "contrast", "d_model")}
        meta["hook_convention"] = self.meta.get("hook_convention", HOOK_CONVENTION_NOTE)
        meta["row"] = row
        return Direction(self.tensors[key].clone(), hook, position, method, bias, meta)

    def methods(self, hook: str, position: str) -> list[str]:
        """The direction methods stored at ``hook`` / ``position``: ``dom``, and ``probe`` where a probe was fit."""
        return ["dom"] + (["probe"] if _tkey(hook, position, "probe_w") in self.tensors else [])

    def with_selected(self, hook: str, position: str, method: str, note: str) -> DirectionSet:
        """The same directions with another selected candidate (e.g. chosen by causal scores, see
        :mod:`analysis.selection`); the table's ``selected`` flags and the selection note follow."""
        if method not in self.methods(hook, position):
            raise ArtifactError(
                f"{self.meta.get('path', 'directions')}: no {method} direction at {hook} / {position}"
            )
        meta = {k: v for k, v in self.meta.items() if k != "table"}
        layer = parse_hook_name(hook)[0]
        meta["selected"] = {"hook": hook, "layer": layer, "position": position, "method": method}
        meta["selection_note"] = note
        meta["table"] = [
            {**r, "selected": (r["hook"], r["position"]) == (hook, position)} for r in self.table
        ]
        return DirectionSet(meta, dict(self.tensors))

    def sized(
        self, hook: str | None = None, position: str | None = None, method: str | None = None
    ) -> Direction:
        """:meth:`get`, with the vector's norm the class gap along it: the difference of means as it is, the
        probe's normal (whose raw size depends on the regularisation) scaled to the difference of class means
        projected on it. Alphas and shifts "in class gaps" use this size."""
        d = self.get(hook, position, method)
        if d.method != "probe":
            return d
        gap = float(self.get(d.hook, d.position, "dom").vector.float() @ d.unit.float())
        return Direction(d.unit.float() * gap, d.hook, d.position, d.method, None, d.meta)

    def by_layer(self, position: str | None = None, method: str | None = None) -> list[Direction]:
        """All directions at one position (default: the selected one), in layer order."""
        position = position or (self.selected or {}).get("position") or self.positions[0]
        return [self.get(h, position, method) for h in self.hooks]

    def check_fits(self, d_model: int, n_layers: int, hook_kind: str | None = None, where: str = "") -> None:
        """Raise an ArtifactError unless this set fits a model of this width/depth (and hook kind)."""
        path = self.meta.get("path", "directions")
        if self.meta.get("convention") != HOOK_CONVENTION:
            raise ArtifactError(
                f"{path}: hook convention {self.meta.get('convention')!r} is not this toolkit's ({HOOK_CONVENTION})"
            )
        if self.d_model != d_model:
            raise ArtifactError(
                f"{path}: directions have width {self.d_model}, the model {where}has {d_model}"
            )
        for h in self.hooks:
            layer, kind = parse_hook_name(h)
            if layer >= n_layers:
                raise ArtifactError(
                    f"{path}: hook {h} does not exist in a {n_layers}-layer model {where}".strip()
                )
            if hook_kind is not None and kind != hook_kind:
                raise ArtifactError(f"{path}: directions are at {kind}, not the requested {hook_kind}")

    def table_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(TABLE_COLUMNS), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in self.table:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
        return buf.getvalue()

    def format_table(self, position: str | None = None) -> str:
        """A readable per-layer table (one position)."""
        position = position or (self.selected or {}).get("position") or self.positions[0]
        head = (
            f"{'hook':<26}{'acc(Q)':>7}{'acc(pair)':>10}{'d':>7}{'cos(p,dom)':>11}"
            f"{'sep AUROC':>10}{'rand d95':>9}{'rand sep95':>11}{'|dom|':>9}{'score':>7}"
        )
        lines = [f"position {position}; contrast {self.meta['contrast']['name']}", head]
        for r in self.table:
            if r["position"] != position:
                continue
            mark = " *" if r.get("selected") else ""
            lines.append(
                f"{r['hook']:<26}{_f(r.get('acc_q')):>7}{_f(r.get('acc_pair')):>10}{_f(r.get('d'), 2):>7}"
                f"{_f(r.get('cos_probe_dom')):>11}{_f(r.get('sep_auroc')):>10}{_f(r.get('rand_d95'), 2):>9}"
                f"{_f(r.get('rand_sep95')):>11}{_f(r.get('dom_norm'), 3):>9}{_f(r.get('score')):>7}{mark}"
            )
        others = [p for p in self.positions if p != position]
        if others:
            lines.append(f"(positions {', '.join(others)}: see the .table.csv / JSON)")
        sel = self.selected
        lines.append(
            f"selected: {sel['hook']} @ {sel['position']} ({self.meta['selection_note']})"
            if sel
            else f"selected: none ({self.meta['selection_note']})"
        )
        return "\n".join(lines)

    def save(self, path: str | Path) -> Path:
        """Write ``<stem>.safetensors``, ``<stem>.table.csv``, then ``<stem>.json`` (last; marks complete)."""
        from safetensors.torch import save_file

        stem = _stem(path)
        st = stem.with_suffix(".safetensors")
        with atomic_path(st) as tmp:
            save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(tmp))
        write_text_atomic(stem.with_suffix(".table.csv"), self.table_csv())
        meta = {k: v for k, v in self.meta.items() if k != "path"}
        meta["tensors"] = {"file": st.name, "sha256": sha256_file(st)}
        write_json_atomic(stem.with_suffix(".json"), meta)
        self.meta["path"] = str(stem.with_suffix(".json"))
        return stem.with_suffix(".json")


def _f(v: Any, digits: int = 2) -> str:
    return f"{v:.{digits}f}" if _finite(v) else "-"


def _stem(path: str | Path) -> Path:
    p = Path(path)
    for suffix in (".json", ".safetensors", ".table.csv"):
        if p.name.endswith(suffix):
            return p.with_name(p.name[: -len(suffix)])
    return p


def load_directions(path: str | Path) -> DirectionSet:
    """Read a Direction artifact (``.json`` sidecar + ``.safetensors``); checks kind, convention, hashes."""
    from safetensors.torch import load_file

    stem = _stem(path)
    side = stem.with_suffix(".json")
    if not side.is_file():
        raise ArtifactError(f"{side}: direction sidecar not found (missing or interrupted before completion)")
    meta = read_json(side, ArtifactError)
    if meta.get("kind") != DIRECTIONS_KIND:
        raise ArtifactError(f"{side}: not a direction file (kind {meta.get('kind')!r})")
    if meta.get("convention") != HOOK_CONVENTION:
        raise ArtifactError(
            f"{side}: hook convention {meta.get('convention')!r} is not this toolkit's ({HOOK_CONVENTION})"
        )
    st = side.with_name(meta.get("tensors", {}).get("file", stem.name + ".safetensors"))
    if not st.is_file():
        raise ArtifactError(f"{st}: direction tensors not found")
    if sha256_file(st) != meta["tensors"]["sha256"]:
        raise ArtifactError(f"{st}: tensors do not match the sidecar {side.name} (sha256 differs)")
    tensors = load_file(str(st))
    for k, v in tensors.items():
        if not torch.isfinite(v).all():
            raise ArtifactError(f"{st}: non-finite values in {k}")
        if k.endswith("/dom") and v.shape != (meta["d_model"],):
            raise ArtifactError(f"{st}: {k} has shape {tuple(v.shape)}, sidecar says width {meta['d_model']}")
    meta["table"] = [
        {k: (float("nan") if v is None else v) for k, v in r.items()} for r in meta.get("table", [])
    ]
    meta["path"] = str(side)
    return DirectionSet(meta, tensors)


def load_direction(
    path: str | Path, hook: str | None = None, position: str | None = None, method: str | None = None
) -> Direction:
    """One :class:`Direction` from an artifact (default: the selected hook and position)."""
    return load_directions(path).get(hook, position, method)


def save_direction(direction: Direction, path: str | Path) -> Path:
    """Write a single direction (e.g. a fine-tuning shift vector) in the same artifact format."""
    key = _tkey(
        direction.hook, direction.position, "probe_w" if direction.method == "probe" else direction.method
    )
    tensors = {key: direction.vector.detach().float().cpu()}
    if direction.method == "probe":
        tensors[_tkey(direction.hook, direction.position, "probe_b")] = torch.tensor([direction.bias or 0.0])
    meta = {
        "kind": DIRECTIONS_KIND,
        "version": DIRECTIONS_VERSION,
        "convention": HOOK_CONVENTION,
        "hook_convention": HOOK_CONVENTION_NOTE,
        "d_model": int(direction.vector.shape[0]),
        "hooks": [direction.hook],
        "positions": [direction.position],
        "method": direction.method,
        **{
            k: v
            for k, v in direction.meta.items()
            if k not in ("convention", "hook_convention", "d_model", "row")
        },
        "selected": {"hook": direction.hook, "layer": direction.layer, "position": direction.position},
        "selection_note": "single direction",
        "table": [{"hook": direction.hook, "layer": direction.layer, "position": direction.position}],
    }
    meta.setdefault("contrast", {"name": "?"})
    return DirectionSet(meta, tensors).save(path)
