"""The logic of ``vsfa directions`` and ``vsfa probe --checkpoint``: capture, derive, compare base vs checkpoint.

``run_directions`` captures a contrast set (persona by default) and a separation set (harmful vs harmless
requests) on a model, derives the per-layer directions and table (:mod:`probes.directions`) and writes the
Direction artifact.

``run_probe`` takes a fine-tuning checkpoint (a peft adapter folder with ``manifest.json``: ``base_model``,
``base_model_fingerprint``, ``step``, ...), loads base and base + adapter, captures the contrast set and the
evaluation sets on both (base activations come from the cache), and reports per layer:

* mean projection on the base (unit DoM) direction for base and checkpoint, per evaluation set, the paired
  shift with a bootstrap CI, the shift in units of the persona gap ``|dom|``, and the 95th percentile of |shift|
  along norm-matched random directions (the shift a direction-free drift would give);
* cosine between the direction re-derived at the checkpoint and the base one;
* accuracy of the base probe on checkpoint activations (held-out questions), beside its accuracy at the base;
* whether the layer carries an adapter (``has_adapter``, from the adapter's tensor names) and whether its
  activations equal the base's by construction (``fixed_by_construction``: no adapted module at or below it).

Defaults of a checkpoint that belongs to a study (``vsfa demo``; :func:`find_study`): the study's own
directions (``STUDY/directions/persona.json``) at the layer, position and method its causal selection chose
(``STUDY/selection.json``), the study's contrast set (recorded in those directions), the *evaluation* split of
its request set (``STUDY/splits/<requests>.evaluation.jsonl``) and its activation cache (``STUDY/acts``).
Explicit ``directions`` / ``sets`` / ``position`` / ``acts`` win, each on its own. Elsewhere: persona
directions derived on the base (``RUN/directions/persona-<fp>``), sets ``neutral`` and ``requests``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probes.capture import Capturer, CaptureSpec, ModelSpec, SweepLoader
from probes.contrasts import ContrastSet, load_set
from probes.directions import Direction, DirectionSet, SelectionRule, derive, load_directions, project
from probes.hooked import parse_hook_name
from probes.linear import cosine, dom, random_directions
from probes.store import HOOK_CONVENTION_NOTE, ActivationStore
from vsfa.config import check_counts
from vsfa.errors import ArtifactError, ConfigError
from vsfa.io import (
    fingerprint_matches,
    model_fingerprint,
    output_lock,
    read_json,
    read_manifest,
    recorded_path,
    reuse_or_replace,
    write_json_atomic,
)
from vsfa.models.adapters import AdapterPlacement, adapter_placement
from vsfa.models.loading import base_model_of
from vsfa.stats import paired_diff

logger = logging.getLogger(__name__)
DEFAULT_EVAL_SETS = ("neutral", "requests")
METHOD_NAMES = {"dom": "difference of means", "probe": "probe normal"}
STUDY_KIND = "vsfa.study"  # the kind of STUDY/manifest.json (vsfa.study)
# where a study keeps its directions when its manifest names none (studies written before it did)
STUDY_DIRECTIONS = "directions/persona.json"


@dataclass
class DirectionsConfig:
    """Settings of ``vsfa directions`` (TOML-loadable; ``[rule]`` is the :class:`SelectionRule`)."""

    model: str = field(kw_only=True)
    """Model folder."""
    adapter: Path | None = None
    """peft adapter folder (directions of a checkpoint)."""
    contrast: str = "persona"
    """Contrast set name or file."""
    separation: str | None = "requests"
    """Separation set for selection ('none': no separation)."""
    positions: list[str] = field(default_factory=lambda: ["last"])
    """Positions (last, eoi, image_mean, ...)."""
    layers: list[int] | None = field(default=None, metadata={"none": "all"})
    """'all' or comma-separated layer indices."""
    hook_kinds: list[str] = field(default_factory=lambda: ["hook_resid_post"])
    """Hook kinds."""
    out: Path | None = None
    """Artifact stem: writes OUT.safetensors, OUT.json, OUT.table.csv."""
    acts: Path | None = None
    """Activation cache root (default: beside OUT's run folder)."""
    max_questions: int | None = None
    """Use only this many neutral questions."""
    batch_size: int = 16
    """Forward batch size."""
    device: str = "cpu"
    """torch device (cpu, cuda, cuda:1, ...) | auto: spread over the GPUs (accelerate device_map)."""
    dtype: str | None = None
    """float32 | bfloat16 | float16 | int8 | nf4 (bitsandbytes weights, CUDA) (default: the device's)."""
    backend: str = "torch"
    """torch (fast) | bridge | auto"""
    C: float = 1.0
    """Inverse L2 strength of the logistic probes."""
    n_splits: int = 5
    """Cross-validation folds of the probes."""
    batched_cv: bool = False
    """Cross-validate every layer x position at once (batched L-BFGS in torch; AUROCs within ~1e-3 of the
    per-layer scikit-learn loop; for large contrasts)."""
    n_random: int = 32
    """Random directions for the null distribution."""
    seed: int = 0
    """Seed of splits and random directions."""
    rule: SelectionRule = field(default_factory=SelectionRule)
    overwrite: bool = False
    """Replace an artifact at --out derived from other inputs."""

    def __post_init__(self) -> None:
        if self.separation in ("none", ""):
            self.separation = None
        check_counts("directions", batch_size=self.batch_size, max_questions=self.max_questions)
        check_counts("directions", minimum=2, n_splits=self.n_splits)
        check_counts("directions", minimum=0, n_random=self.n_random)
        if not self.C > 0:
            raise ConfigError(f"directions: C must be > 0, not {self.C!r}")
        for name in (
            "min_accuracy",
            "min_separation",
        ):  # an accuracy and an AUROC: above 1 nothing is eligible
            value = getattr(self.rule, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"directions: rule.{name} must be in [0, 1], not {value!r}")

    def capture_spec(self) -> CaptureSpec:
        return CaptureSpec(
            positions=tuple(self.positions),
            layers=tuple(self.layers) if self.layers is not None else None,
            hook_kinds=tuple(self.hook_kinds),
        )


@dataclass
class CompareOptions:
    """Settings shared by everything that compares models along the fixed base directions (probe, track)."""

    base: str | None = None
    """Base model folder (default: base_model in the checkpoint's manifest)."""
    directions: Path | None = None
    """Direction artifact (default: derived on the base first)."""
    sets: list[str] = field(default_factory=lambda: list(DEFAULT_EVAL_SETS))
    """Evaluation sets (names or files)."""
    acts: Path | None = None
    """Activation cache root (default: RUN/acts)."""
    max_questions: int | None = None
    """Neutral questions for a derived persona set."""
    batch_size: int = 16
    """Forward batch size."""
    device: str = "cpu"
    """torch device (cpu, cuda, cuda:1, ...) | auto: spread over the GPUs (accelerate device_map)."""
    dtype: str | None = None
    """float32 | bfloat16 | float16 | int8 | nf4 (bitsandbytes weights, CUDA) (default: the device's)."""
    backend: str = "torch"
    """torch (fast) | bridge | auto"""
    n_boot: int = 2000
    """Bootstrap resamples for the CIs."""
    n_random: int = 32
    """Random directions for the null distribution."""
    seed: int = 0
    """Bootstrap and sampling seed."""

    def __post_init__(self) -> None:
        where = type(self).__name__.removesuffix("Config").lower()
        check_counts(where, batch_size=self.batch_size, max_questions=self.max_questions, n_boot=self.n_boot)
        check_counts(where, minimum=0, n_random=self.n_random)


@dataclass
class ProbeConfig(CompareOptions):
    """Settings of ``vsfa probe``. A checkpoint inside a study takes the study's directions, selection, sets
    and activation cache unless ``directions`` / ``sets`` / ``position`` / ``acts`` are given."""

    checkpoint: Path = field(kw_only=True)
    """Checkpoint folder (peft adapter + manifest.json)."""
    json: Path | None = None
    """Write the full report as JSON here."""
    position: str | None = None
    """Position (default: the study's choice for a checkpoint in a study, else the selected one)."""
    hook_kind: str | None = None
    """Require directions at this hook kind (e.g. hook_resid_post)."""
    directions: Path | None = None
    """Direction artifact (default: the study's for a checkpoint in a study, else persona directions derived
    on the base)."""
    acts: Path | None = None
    """Activation cache root (default: STUDY/acts for a checkpoint in a study, else RUN/acts)."""
    sets: list[str] | None = None
    """Evaluation sets or files (default: the evaluation split of the study's request set for a checkpoint in a
    study, else neutral, requests)."""


def default_acts_root(anchor: Path) -> Path:
    """``RUN/acts`` for a path inside ``RUN/directions`` or ``RUN/checkpoints``; else ``<parent>/acts``."""
    parent = anchor.parent
    if parent.name in ("directions", "checkpoints"):
        return parent.parent / "acts"
    return parent / "acts"


def model_dims(path: str | Path) -> tuple[int, int]:
    """``(n_layers, d_model)`` of a model folder's language model, from its config only (no weights)."""
    from transformers import AutoConfig

    from vsfa.models.loading import read_family

    read_family(path)  # folder / config / architecture checks with one-line errors
    text = AutoConfig.from_pretrained(path).get_text_config()
    return int(text.num_hidden_layers), int(text.hidden_size)


# ------------------------------------------------------------------------------------------- directions
def run_directions(cfg: DirectionsConfig) -> tuple[DirectionSet, Path, Capturer]:
    """Capture the contrast (+ separation) set on ``cfg.model``, derive directions, write the artifact."""
    if not cfg.model:
        raise ConfigError("directions: no model given")
    contrast = load_set(cfg.contrast, max_questions=cfg.max_questions)
    contrast.check_classes()
    separation = load_set(cfg.separation) if cfg.separation else None
    if separation is not None:
        separation.check_classes()
    out = Path(cfg.out) if cfg.out else Path("directions") / contrast.name
    out = _direction_stem(out)
    acts = Path(cfg.acts) if cfg.acts else default_acts_root(out)
    spec = ModelSpec(
        str(cfg.model), str(cfg.adapter) if cfg.adapter else None, cfg.dtype, cfg.device, backend=cfg.backend
    )
    capturer = Capturer(spec, acts, batch_size=cfg.batch_size)
    cspec = cfg.capture_spec()
    inputs = {  # content keys of both captures (model, adapter, set, positions, hooks) + the derivation
        "contrast": capturer.locate(contrast, cspec)[1],
        "separation": capturer.locate(separation, cspec)[1] if separation is not None else None,
        "rule": asdict(cfg.rule),
        "C": cfg.C,
        "n_splits": cfg.n_splits,
        "n_random": cfg.n_random,
        "seed": cfg.seed,
        **({"batched_cv": True} if cfg.batched_cv else {}),  # absent when off: earlier artifacts still match
    }
    sidecar = out.with_name(out.name + ".json")
    with output_lock(out):
        if reuse_or_replace(out, inputs, cfg.overwrite, manifest=sidecar):
            logger.info("%s: same inputs, reused", sidecar)
            return load_directions(sidecar), sidecar, capturer
        t0 = time.perf_counter()
        c_store = capturer.capture(contrast, cspec)
        s_store = capturer.capture(separation, cspec) if separation is not None else None
        logger.info(
            f"activations: {capturer.hits} from cache, {capturer.misses} computed "
            f"({time.perf_counter() - t0:.1f} s)"
        )
        dset = derive(
            c_store,
            s_store,
            cfg.rule,
            C=cfg.C,
            n_splits=cfg.n_splits,
            n_random=cfg.n_random,
            seed=cfg.seed,
            batched_cv=cfg.batched_cv,
        )
        dset.meta["contrast"]["spec"] = {"set": cfg.contrast, "max_questions": cfg.max_questions}
        if separation is not None:
            dset.meta["separation"]["spec"] = {"set": cfg.separation}
        dset.meta["inputs"] = inputs
        path = dset.save(out)
    return dset, path, capturer


def _direction_stem(path: Path) -> Path:
    """The artifact stem of ``--out`` (``x``, ``x.json``, ``x.safetensors`` and ``x.table.csv`` name one)."""
    for suffix in (".json", ".safetensors", ".table.csv"):
        if path.name.endswith(suffix):
            return path.with_name(path.name[: -len(suffix)])
    return path


# ------------------------------------------------------------------------------------------------ probe
def checkpoint_info(ckpt: Path, base: str | None) -> tuple[dict[str, Any], Path]:
    """The checkpoint manifest and the base model folder (checked against the recorded fingerprint)."""
    base_dir = base_model_of(ckpt, base)
    return read_manifest(ckpt), base_dir


def contrast_from_meta(meta: dict[str, Any], max_questions: int | None = None) -> ContrastSet:
    """The contrast set recorded in a direction artifact; ``max_questions`` keeps fewer of its questions."""
    spec = meta.get("spec") or {"set": meta.get("source") or meta["name"]}
    limits = [n for n in (spec.get("max_questions"), max_questions) if n is not None]
    return load_set(spec["set"], max_questions=min(limits, default=None))


def extract_test_masks(store: ActivationStore) -> tuple[np.ndarray, np.ndarray]:
    """(extract, test) masks: the held-out questions are the test items; without them, the extract ones."""
    split = np.array(store.column("split"))
    extract = split == "extract" if (split == "extract").any() else np.ones(store.n, dtype=bool)
    test = split == "heldout" if (split == "heldout").any() else extract
    return extract, test


def _paired(base: ActivationStore, tuned: ActivationStore) -> None:
    if base.column("id") != tuned.column("id"):
        raise ArtifactError(f"{base.folder} and {tuned.folder} hold different items; cannot pair them")


def base_directions(
    base_dir: Path, cfg: CompareOptions, acts: Path, hook_kind: str | None = None
) -> DirectionSet:
    """The fixed base directions: ``cfg.directions``, else ``ACTS/../directions/persona-<fp>`` (derived if absent).

    Checks that the directions were derived on ``base_dir`` (model fingerprint) and fit its width and depth
    (and ``hook_kind`` when given).
    """
    if cfg.directions:
        dset = load_directions(cfg.directions)
    else:
        dpath = acts.parent / "directions" / f"persona-{model_fingerprint(base_dir)[:12]}"
        if dpath.with_suffix(".json").is_file():
            dset = load_directions(dpath)
        else:
            logger.info("no --directions: deriving base directions into %s.json", dpath)
            dcfg = DirectionsConfig(
                model=str(base_dir),
                out=str(dpath),
                acts=str(acts),
                max_questions=cfg.max_questions,
                batch_size=cfg.batch_size,
                device=cfg.device,
                dtype=cfg.dtype,
                backend=cfg.backend,
                seed=cfg.seed,
            )
            dset, _, _ = run_directions(dcfg)
    fp = dset.meta.get("model", {}).get("fingerprint")
    if fp and not fingerprint_matches(fp, base_dir):
        raise ArtifactError(
            f"{dset.meta['path']}: directions were derived on {dset.meta['model'].get('source')}, "
            f"not on the base {base_dir}"
        )
    n_layers, d_model = model_dims(base_dir)
    dset.check_fits(d_model, n_layers, hook_kind, where=f"{base_dir} ")
    return dset


@dataclass(frozen=True)
class StudyDefaults:
    """What the study a checkpoint belongs to chose: its directions, their causal selection (hook, position,
    method) and the evaluation split of its request set."""

    folder: Path
    link: str  # how the checkpoint was tied to the study
    directions: Path
    chosen: dict[str, Any]
    sets: list[str]


def find_study(ckpt: Path) -> tuple[Path, str] | None:
    """``(STUDY, how)`` for a checkpoint that belongs to a study, else None.

    The rule: a checkpoint ``RUN/checkpoints/<step>`` belongs to the study named by ``"study"`` in
    ``RUN/manifest.json`` (written by ``vsfa demo``); without that field, to ``STUDY`` when it sits at
    ``STUDY/runs/<run>/checkpoints/<step>`` and ``STUDY`` holds a study (``study.json`` or a ``manifest.json``
    of kind ``vsfa.study``).
    """
    ckpt = ckpt.resolve()
    if ckpt.parent.name != "checkpoints":
        return None
    run = ckpt.parent.parent
    recorded = None
    if (run / "manifest.json").is_file():
        recorded = recorded_path(read_manifest(run).get("study"), run)
    if recorded:
        return Path(recorded), f"recorded in {run / 'manifest.json'}"
    study = run.parent.parent
    if run.parent.name == "runs" and (_is_study_manifest(study) or (study / "study.json").is_file()):
        return study, "found by its path STUDY/runs/<run>/checkpoints/<step>"
    return None


def _is_study_manifest(folder: Path) -> bool:
    try:
        return read_manifest(folder).get("kind") == STUDY_KIND
    except ArtifactError:
        return False


def study_defaults(study: Path, link: str) -> StudyDefaults:
    """The defaults ``vsfa probe`` takes from a complete study (``STUDY/manifest.json``, ``selection.json``)."""
    where = study / "manifest.json"
    if not where.is_file():
        raise ArtifactError(
            f"{study}: the study this checkpoint belongs to ({link}) is incomplete (no manifest.json); "
            "finish it with vsfa demo, or pass --directions and --sets"
        )
    manifest = read_manifest(study)
    if manifest.get("kind") != STUDY_KIND:
        raise ArtifactError(f"{where}: not a study manifest (kind {manifest.get('kind')!r})")
    sel = manifest.get("selection") or {}
    chosen = sel.get("chosen")
    sel_file = study / sel.get("file", "selection.json")
    if sel_file.is_file():
        chosen = read_json(sel_file, ArtifactError).get("chosen") or chosen
    if not chosen or not all(chosen.get(k) for k in ("hook", "position", "method")):
        raise ArtifactError(f"{sel_file}: no chosen hook / position / method")
    try:
        recorded = manifest["splits"]["requests"]["files"]["evaluation"]
    except (KeyError, TypeError):
        raise ArtifactError(
            f"{where}: no splits.requests.files.evaluation (the request set's split)"
        ) from None
    # the study's own copy of the split (STUDY/splits) first: a moved or copied study recorded the old path
    evaluation = study / "splits" / Path(recorded).name
    if not evaluation.is_file():
        evaluation = Path(recorded)
    return StudyDefaults(
        folder=study,
        link=link,
        directions=study / manifest.get("directions", STUDY_DIRECTIONS),
        chosen={k: chosen[k] for k in ("hook", "position", "method")},
        sets=[str(evaluation)],
    )


def _rel(path: Path | str, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def resolve_defaults(
    cfg: ProbeConfig, ckpt: Path
) -> tuple[ProbeConfig, StudyDefaults | None, dict[str, str], str]:
    """``cfg`` with the study's (or the generic) defaults filled in where it leaves them unset, the study,
    where each setting came from, and the one line that says so."""
    found = find_study(ckpt)
    need_study = cfg.directions is None or cfg.sets is None
    study = study_defaults(*found) if found and need_study else None
    origin = {
        "directions": "option" if cfg.directions else ("study" if study else "base"),
        "sets": "option" if cfg.sets is not None else ("study" if study else "generic"),
    }
    acts = cfg.acts or (found[0] / "acts" if found else None)
    out = replace(
        cfg,
        directions=cfg.directions or (study.directions if study else None),
        sets=cfg.sets if cfg.sets is not None else (list(study.sets) if study else list(DEFAULT_EVAL_SETS)),
        acts=acts,
    )
    parts = []
    if origin["directions"] == "study":
        c = study.chosen
        parts.append(
            f"directions {_rel(study.directions, study.folder)} at {c['hook']} / {c['position']} / "
            f"{c['method']} (its selection.json)"
        )
    elif origin["directions"] == "base":
        parts.append("persona directions derived on the base")
    if origin["sets"] == "study":
        parts.append(f"sets {', '.join(_rel(x, study.folder) for x in study.sets)} (its evaluation split)")
    elif origin["sets"] == "generic":
        parts.append(f"sets {', '.join(out.sets)}")
    given = [f"--{k}" for k, v in origin.items() if v == "option"]
    if study is not None:
        line = f"defaults from study {study.folder} ({study.link}): {'; '.join(parts)}"
    elif found:
        line = f"checkpoint of study {found[0]}: --directions and --sets given; activation cache {out.acts}"
    else:
        line = f"defaults (the checkpoint is in no study): {'; '.join(parts)}" if parts else ""
    if given and parts:
        line += f"; {' and '.join(given)} given"
    return out, study, origin, line


def run_probe(cfg: ProbeConfig) -> dict[str, Any]:
    """Compare a checkpoint with its base along the base directions, layer by layer; returns the report.

    A checkpoint in a study is compared along the study's chosen direction on the study's evaluation items
    (see :func:`find_study`); a selected layer that carries no adapter at or below it is flagged (its shift is 0
    by construction)."""
    t0 = time.perf_counter()
    ckpt = Path(cfg.checkpoint)
    manifest, base_dir = checkpoint_info(ckpt, cfg.base)
    cfg, study, origin, line = resolve_defaults(cfg, ckpt)
    acts = Path(cfg.acts) if cfg.acts else default_acts_root(ckpt)
    dset = base_directions(base_dir, cfg, acts, cfg.hook_kind)
    if line:  # once the directions loaded: bad input stays one line
        logger.info(line)
    dpath = Path(dset.meta["path"])
    if study is not None and origin["directions"] == "study":
        c = study.chosen
        if [(dset.selected or {}).get(k) for k in ("hook", "position", "method")] != list(c.values()):
            dset = dset.with_selected(c["hook"], c["position"], c["method"], "the study's causal selection")
    position = cfg.position or (dset.selected or {}).get("position") or dset.positions[0]
    if position not in dset.positions:
        raise ArtifactError(
            f"{dpath}: no directions at position {position!r} (has {', '.join(dset.positions)})"
        )
    method = (dset.selected or {}).get("method") or dset.meta.get("method", "dom")
    cspec = CaptureSpec.from_dict(dset.meta["capture"])
    contrast = contrast_from_meta(dset.meta["contrast"])
    contrast.check_classes()
    eval_sets = [load_set(s) for s in cfg.sets]
    sets = [contrast, *eval_sets]

    loader = SweepLoader()  # base and checkpoint share one read of the base weights
    base_spec = ModelSpec(str(base_dir), None, cfg.dtype, cfg.device, backend=cfg.backend)
    base_cap = Capturer(base_spec, acts, cfg.batch_size, loader=loader)
    base_stores = [base_cap.capture(s, cspec) for s in sets]
    ckpt_spec = ModelSpec(str(base_dir), str(ckpt), cfg.dtype, cfg.device, backend=cfg.backend)
    ckpt_cap = Capturer(ckpt_spec, acts, cfg.batch_size, loader=loader)
    ckpt_stores = [ckpt_cap.capture(s, cspec) for s in sets]
    loader.close()

    layers = compare(
        dset,
        position,
        (base_stores[0], ckpt_stores[0]),
        {s.name: (b, c) for s, b, c in zip(eval_sets, base_stores[1:], ckpt_stores[1:], strict=True)},
        n_boot=cfg.n_boot,
        n_random=cfg.n_random,
        seed=cfg.seed,
        method=method,
    )
    placement = _placement(ckpt, base_dir)
    warnings = mark_adapters(layers, placement)  # printed by format_report, kept in the JSON report
    c_base = base_stores[0]
    test = extract_test_masks(c_base)[1]
    report = {
        "checkpoint": str(ckpt),
        "step": manifest.get("step"),
        "arm": manifest.get("arm"),
        "base": str(base_dir),
        "directions": str(dpath),
        "position": position,
        "method": method,
        "selected": dset.selected,
        "study": str(study.folder) if study is not None else None,
        "defaults": {**origin, "line": line},
        "hook_convention": HOOK_CONVENTION_NOTE,
        "adapter": None
        if placement is None
        else {
            "layers": sorted(placement.layers),
            "upstream": list(placement.upstream),
            "source": placement.source,
        },
        "warnings": warnings,
        "contrast": {"name": contrast.name, "n": c_base.n, "test_items": int(test.sum())},
        "sets": [s.name for s in eval_sets],
        "layers": layers,
        "cache": {
            "base": {"hits": base_cap.hits, "computed": base_cap.misses},
            "checkpoint": {"hits": ckpt_cap.hits, "computed": ckpt_cap.misses},
        },
        "stores": {
            "base": {s.name: str(st.folder) for s, st in zip(sets, base_stores, strict=True)},
            "checkpoint": {s.name: str(st.folder) for s, st in zip(sets, ckpt_stores, strict=True)},
        },
        "settings": {"n_boot": cfg.n_boot, "n_random": cfg.n_random, "seed": cfg.seed, "ci": 0.95},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if cfg.json:
        write_json_atomic(cfg.json, report)
    return report


def _placement(ckpt: Path, base_dir: Path) -> AdapterPlacement | None:
    """Where the checkpoint's adapter acts, on the base's decoder layers (family registry: the layers path)."""
    from vsfa.models.loading import read_family

    return adapter_placement(ckpt, read_family(base_dir), model_dims(base_dir)[0])


def mark_adapters(layers: list[dict[str, Any]], placement: AdapterPlacement | None) -> list[str]:
    """Add ``has_adapter`` and ``fixed_by_construction`` to every row of :func:`compare` (None when the
    placement is unknown); return the warnings (the selected layer cannot move)."""
    warnings = []
    for row in layers:
        layer, kind = parse_hook_name(row["hook"])
        row["has_adapter"] = None if placement is None else placement.has_adapter(layer)
        row["fixed_by_construction"] = None if placement is None else placement.fixed(layer, kind)
        if row["selected"] and row["fixed_by_construction"]:
            warnings.append(
                f"the selected layer {row['hook']} has no adapter at or below it (the adapter is on "
                f"{placement.describe()}): its activations are the base's, so its shift is 0 by construction, "
                "not a measurement"
            )
    return warnings


def compare(
    dset: DirectionSet,
    position: str,
    contrast: tuple[ActivationStore, ActivationStore],
    evals: dict[str, tuple[ActivationStore, ActivationStore]],
    n_boot: int = 2000,
    n_random: int = 32,
    seed: int = 0,
    method: str | None = None,
) -> list[dict[str, Any]]:
    """Per-layer comparison of a checkpoint with its base (stores paired item by item).

    ``contrast`` = (base, checkpoint) stores of the contrast set (re-derived direction, base-probe accuracy on
    held-out questions); ``evals[name]`` = (base, checkpoint) stores whose projections on the base direction are
    compared (mean at base and checkpoint, paired shift with a bootstrap CI, shift in |dom| and base-SD units,
    95th percentile |shift| along random unit directions). ``method`` (default: the set's, ``dom``) gives the
    direction of ``row["sets"]``; the other methods go to ``row["other_methods"]``.
    """
    for b, c in [contrast, *evals.values()]:
        _paired(b, c)
    c_base, c_ckpt = contrast
    extract, test = extract_test_masks(c_base)
    y = c_base.y()
    rand = random_directions(dset.d_model, 1.0, n_random, seed)  # unit: projections are on unit vectors
    method = method or dset.meta.get("method", "dom")
    layers = []
    for hook in dset.hooks:
        main = dset.sized(hook, position, method)
        has_probe = f"{hook}@{position}/probe_w" in dset.tensors
        has_dom = f"{hook}@{position}/dom" in dset.tensors
        # the DoM (its norm is the class gap; the re-derived direction is compared with it), else the one direction
        d_dom = dset.get(hook, position, "dom") if method == "probe" and has_dom else main
        directions = {method: main}
        if has_probe and method != "probe":  # the probe's normal: a second candidate direction per layer
            directions["probe"] = dset.sized(hook, position, "probe")
        if method == "probe" and has_dom:
            directions["dom"] = d_dom
        stats = _sets_stats(evals, hook, position, directions, rand, n_boot, seed)
        row: dict[str, Any] = {"hook": hook, "layer": d_dom.layer, "dom_norm": d_dom.norm}
        row["sets"] = stats.pop(method)
        row["other_methods"] = stats
        xcb = c_base.load(hook, position).double().numpy()
        xcc = c_ckpt.load(hook, position).double().numpy()
        re_dom = dom(xcc[extract], y[extract])
        row["cos_rederived"] = cosine(re_dom, d_dom.vector.double().numpy())
        row["probe_acc_base"] = row["probe_acc_ckpt"] = float("nan")
        if has_probe:  # a single-direction artifact may carry no probe
            probe = dset.get(hook, position, "probe")
            w, bias = probe.vector.double().numpy(), float(probe.bias or 0.0)
            row["probe_acc_base"] = float((((xcb[test] @ w + bias) > 0) == (y[test] == 1)).mean())
            row["probe_acc_ckpt"] = float((((xcc[test] @ w + bias) > 0) == (y[test] == 1)).mean())
        sel = dset.selected or {}
        row["selected"] = sel.get("hook") == hook and sel.get("position") == position
        layers.append(row)
    return layers


def _sets_stats(
    evals: dict[str, tuple[ActivationStore, ActivationStore]],
    hook: str,
    position: str,
    directions: dict[str, Direction],
    rand: np.ndarray,
    n_boot: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Per method, per set: :func:`_shift_stats` along that method's direction, and per label when a set has
    several (harmful and harmless requests apart)."""
    out: dict[str, dict[str, Any]] = {m: {} for m in directions}
    for name, (b, c) in evals.items():
        xb, xc = b.load(hook, position), c.load(hook, position)
        lab = np.array(b.column("label"))
        labels = list(dict.fromkeys(lab))
        for m, d in directions.items():
            out[m][name] = _shift_stats(xb, xc, d, rand, n_boot, seed)
            if len(labels) > 1:
                out[m][name]["by_label"] = {
                    v: _shift_stats(xb[lab == v], xc[lab == v], d, rand, n_boot, seed) for v in labels
                }
    return out


def _shift_stats(
    xb: torch.Tensor, xc: torch.Tensor, d_dom: Direction, rand: np.ndarray, n_boot: int, seed: int
) -> dict[str, Any]:
    """Base vs checkpoint activations of the same items along one base direction.

    Mean projections, the paired shift with a bootstrap CI (also in |dom| and base-SD units), the 95th
    percentile |shift| along random unit directions, and the cosine between the mean fine-tuning shift vector
    and the direction beside the 95th percentile |cosine| of random directions with that shift vector.
    """
    pb, pc = project(xb, d_dom), project(xc, d_dom)
    shift = paired_diff(pc, pb, n_boot=n_boot, seed=seed)
    delta = (xc.double() - xb.double()).mean(0).numpy()
    rshift = np.abs(rand @ delta)
    delta_norm = float(np.linalg.norm(delta))
    sd = float(np.std(pb, ddof=1)) if len(pb) > 1 else float("nan")
    return {
        "n": int(len(pb)),
        "base_mean": float(pb.mean()),
        "ckpt_mean": float(pc.mean()),
        "shift": shift.value,
        "shift_lo": shift.lo,
        "shift_hi": shift.hi,
        "shift_sd": shift.value / sd if sd > 0 else float("nan"),
        "shift_gap": shift.value / d_dom.norm if d_dom.norm > 0 else float("nan"),
        "rand_shift95": float(np.quantile(rshift, 0.95)),
        "shift_norm": delta_norm,
        "shift_cos": float(delta @ d_dom.unit.double().numpy() / delta_norm)
        if delta_norm > 0
        else float("nan"),
        "shift_cos_rand95": float(np.quantile(rshift, 0.95) / delta_norm) if delta_norm > 0 else float("nan"),
    }


def _n(v: Any, fmt: str = "+.3f") -> str:
    return format(v, fmt) if isinstance(v, int | float) and math.isfinite(v) else "-"


def _lora(row: dict[str, Any]) -> str:
    """The ``lora`` column: yes (adapter on this layer), no (none on it, one below), none (shift 0 by
    construction), ? (unknown)."""
    if row.get("has_adapter") is None:
        return "?"
    return "yes" if row["has_adapter"] else ("none" if row["fixed_by_construction"] else "no")


def format_report(report: dict[str, Any]) -> str:
    """The terminal table: one block per evaluation set, then the direction-level columns, then warnings."""
    cache = report["cache"]
    adapter = report.get("adapter")
    lines = [
        f"checkpoint {report['checkpoint']} (step {report.get('step')}) vs base {report['base']}",
        f"directions {report['directions']} @ {report['position']} ({report.get('method', 'dom')}); "
        "* = selected layer",
        f"activations: base {cache['base']['hits']} from cache / {cache['base']['computed']} computed, "
        f"checkpoint {cache['checkpoint']['hits']} from cache / {cache['checkpoint']['computed']} computed",
    ]
    if adapter is not None:
        lines.append(
            f"adapter on layers {', '.join(map(str, adapter['layers'])) or '-'}"
            + (f" + {', '.join(adapter['upstream'])}" if adapter["upstream"] else "")
            + "; lora: yes = on this layer, no = not on it but below it, none = not on it or below "
            "(shift 0 by construction)"
        )
    own = report.get("method", "dom")
    methods = [own, *(report["layers"][0].get("other_methods", {}) if report["layers"] else {})]
    for name, method in ((name, m) for name in report["sets"] for m in methods):
        n = report["layers"][0]["sets"][name]["n"] if report["layers"] else 0
        lines += [
            "",
            f"set {name} (n={n}): projection on the unit base direction ({METHOD_NAMES.get(method, method)})",
            f"{'hook':<27}{'lora':>5}{'base':>9}{'ckpt':>9}{'shift [95% CI]':>27}{'/gap':>8}{'/SD':>7}"
            f"{'rand95':>8}",
        ]
        for row in report["layers"]:
            s = row["sets"][name] if method == own else row["other_methods"][method][name]
            ci = f"{_n(s['shift'])} [{_n(s['shift_lo'])}, {_n(s['shift_hi'])}]"
            lines.append(
                f"{row['hook'] + (' *' if row['selected'] else ''):<27}{_lora(row):>5}{_n(s['base_mean']):>9}"
                f"{_n(s['ckpt_mean']):>9}{ci:>27}{_n(s['shift_gap'], '+.2f'):>8}{_n(s['shift_sd'], '+.2f'):>7}"
                f"{_n(s['rand_shift95'], '.3f'):>8}"
            )
    lines += [
        "",
        f"direction at the checkpoint ({report['contrast']['name']}, {report['contrast']['test_items']} test items)",
        f"{'hook':<27}{'lora':>5}{'cos(re-derived, base)':>22}{'base probe acc: base':>22}{'ckpt':>7}",
    ]
    for row in report["layers"]:
        lines.append(
            f"{row['hook'] + (' *' if row['selected'] else ''):<27}{_lora(row):>5}"
            f"{_n(row['cos_rederived'], '.3f'):>22}{_n(row['probe_acc_base'], '.3f'):>22}"
            f"{_n(row['probe_acc_ckpt'], '.3f'):>7}"
        )
    lines += [f"warning: {w}" for w in report.get("warnings", [])]
    return "\n".join(lines)


def shift_table(
    dset: DirectionSet,
    base: ActivationStore,
    tuned: ActivationStore,
    position: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
):
    """Per layer, how far ``tuned`` moved from ``base`` along the base directions (a pandas DataFrame).

    ``base`` and ``tuned`` hold the same items (the contrast set captured on the base and on a checkpoint).
    Columns: the paired shift of the mean projection with its 95% bootstrap CI, the shift in class gaps, the
    95th percentile |shift| along random directions, the cosine of the direction re-derived on ``tuned``.
    """
    import pandas as pd

    position = position or (dset.selected or {}).get("position") or dset.positions[0]
    layers = compare(dset, position, (base, tuned), {"items": (base, tuned)}, n_boot=n_boot, seed=seed)
    return pd.DataFrame(
        [
            {
                "layer": row["layer"],
                "selected": row["selected"],
                "shift": row["sets"]["items"]["shift"],
                "ci_lo": row["sets"]["items"]["shift_lo"],
                "ci_hi": row["sets"]["items"]["shift_hi"],
                "shift_gap": row["sets"]["items"]["shift_gap"],
                "random95": row["sets"]["items"]["rand_shift95"],
                "cos_rederived": row["cos_rederived"],
            }
            for row in layers
        ]
    ).set_index("layer")
