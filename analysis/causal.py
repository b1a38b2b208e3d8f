"""``vsfa steer``: causal checks of a persona direction through :class:`probes.hooked.HookedVLM`.

* **Steering** (activation addition) on the base model: add ``alpha * v`` at the direction's hook, ``v`` the
  raw difference of class means (so ``alpha`` is in class gaps), for a sweep of alphas; at each point the
  benchmark is generated and judged: ASR, over-refusal, refusal score, the share of degenerate outputs, and
  the projection on the direction at the last layer (downstream of the hook).
* **Ablation** on a fine-tuned checkpoint: project the direction out at every layer (block inputs, attention
  and MLP outputs); how much of the checkpoint's change from the base is undone
  (``(ablated - checkpoint) / (base - checkpoint)``, per outcome, with a bootstrap CI over items).
* **Undo** on the same checkpoint: subtract, at the direction's own hook, the checkpoint's mean shift along the
  direction (measured on the harmful prompts' last token, checkpoint minus base), i.e. put the projection back
  where the base had it. Unlike ablation, which moves the projection to zero (a meaningful reference only when
  the base sits near zero, as Arditi et al.'s refusal direction does on harmless prompts), this asks whether the
  fine-tune's change along the direction carries its behavioural change. Same fraction undone.
* **Controls**: the same with ``n_random`` random directions of the same norm (for undo: moved the same
  distance along each random direction).

Output folder: ``points/<mode>/<direction>[/alpha=<a>]/`` (the evaluation folders of :mod:`vsfa.eval.runner`,
resumable and content-keyed), ``curves.csv`` (one row per point, metric columns with ``_lo``/``_hi``),
``causal.json`` (the ablation and undo fractions, the readout alignment of :func:`readout_alignment`, and the
settings) and ``manifest.json``, written last.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis.interventions import POSITIONS as STEER_POSITIONS
from analysis.interventions import ablation_hooks, degenerate, random_like, steering_hook
from probes.directions import Direction, DirectionSet, load_directions
from probes.hooked import HookedVLM, hook_name
from vsfa.config import check_counts
from vsfa.errors import ArtifactError, ConfigError, DataError
from vsfa.eval.generation import GenerationConfig
from vsfa.eval.items import BenchItem
from vsfa.eval.judges import make_judge
from vsfa.eval.modelio import Query, encode_queries
from vsfa.eval.runner import BenchSpec, evaluate_items
from vsfa.io import (
    model_fingerprint,
    output_lock,
    read_jsonl,
    sha256_bytes,
    write_csv_atomic,
    write_json_atomic,
    write_manifest,
)
from vsfa.progress import progress
from vsfa.stats import bootstrap

logger = logging.getLogger(__name__)

CURVE_METRICS = (
    "asr",
    "over_refusal",
    "refusal_logodds_harmful",
    "refusal_logodds_benign",
    "p_refuse_harmful",
)


@dataclass
class SteerConfig:
    """Settings of ``vsfa steer``."""

    model: str = field(kw_only=True)
    """Base model folder."""
    directions: Path = field(kw_only=True)
    """Direction artifact (the selected direction is used)."""
    out: Path = field(kw_only=True)
    """Output folder."""
    checkpoint: Path | None = None
    """Fine-tuned adapter: also ablate the direction from it and undo its shift."""
    hook: str | None = None
    """Hook (default: the selected one)."""
    position: str | None = None
    """Direction position (default: the selected one)."""
    method: str | None = None
    """Dom | probe (the probe's normal); default the set's own."""
    alphas: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0, 4.0, 8.0])
    """Steering strengths, in class gaps (raw DoM norms)."""
    steer_positions: str = "all"
    """all | prompt | generated"""
    n_random: int = 3
    """Norm-matched random directions as controls."""
    bench: str = "builtin"
    """Benchmark name."""
    bench_path: Path | None = None
    """Benchmark folder (benchmarks other than builtin)."""
    bench_options: dict[str, Any] = field(default_factory=dict, metadata={"flag": "bench-opt"})
    """Loader option KEY=VALUE, e.g. variants=text."""
    limit: int | None = None
    """N items, stratified over labels and categories."""
    judge: str = "keyword"
    """Judge name."""
    max_new_tokens: int = 48
    """Answer length limit."""
    batch_size: int = 8
    """Generation batch size."""
    # other GenerationConfig fields, e.g. refusal_mode, openers_refuse, openers_comply
    generation: dict[str, Any] = field(default_factory=dict)
    """Other GenerationConfig fields, e.g. refusal_mode=first_token, openers_refuse=FILE."""
    device: str = "cpu"
    """torch device (cpu, cuda, cuda:1, ...) | auto: spread over the GPUs (accelerate device_map)."""
    dtype: str | None = None
    """float32 | bfloat16 | float16 | int8 | nf4 (bitsandbytes weights, CUDA) (default: the device's)."""
    n_boot: int = 1000
    """Bootstrap resamples."""
    seed: int = 0
    """Seed."""
    # steer along the direction minus its component on the refusal score's logit direction (readout_direction)
    orthogonal_to_readout: bool = False
    """Use the direction minus its component along the refusal score's logit direction."""

    def check(self) -> None:
        """Raise a ConfigError or ArtifactError for any input no run could use, before any work is done."""
        if not self.model or not self.directions or not self.out:
            raise ConfigError("steer: --model, --directions and --out are required")
        if not self.alphas:
            raise ConfigError("steer: give at least one alpha")
        if self.steer_positions not in STEER_POSITIONS:
            raise ConfigError(
                f"steer: positions must be one of {', '.join(STEER_POSITIONS)}, not {self.steer_positions!r}"
            )
        check_counts("steer", 0, n_random=self.n_random)
        check_counts(
            "steer", 1, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size, limit=self.limit
        )
        check_counts("steer", 100, n_boot=self.n_boot)
        if self.checkpoint and not (Path(self.checkpoint) / "adapter_config.json").is_file():
            raise ArtifactError(f"{self.checkpoint}: not an adapter folder (no adapter_config.json)")
        if not Path(self.model).is_dir():
            raise ArtifactError(f"{self.model}: model folder not found")


def _points_metrics(rows: list[dict[str, Any]], judged: list[dict[str, Any]]) -> dict[str, float]:
    """Curve values (with CIs) and the degenerate share for one evaluated point."""
    from vsfa.eval.metrics import join_judged

    (per_judge,) = join_judged(rows, judged).values()
    out: dict[str, float] = {}

    def put(name: str, values: list[float]) -> None:
        est = bootstrap(np.array(values, float), n_boot=1000, seed=0)
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = est.value, est.lo, est.hi

    harmful = [r for r in per_judge if r["label"] == "harmful"]
    benign = [r for r in per_judge if r["label"] == "benign"]
    put("asr", [float(r["unsafe"]) for r in harmful])
    put("over_refusal", [float(r["refused"]) for r in benign])
    put(
        "refusal_logodds_harmful",
        [r["refusal_logodds"] for r in harmful if r.get("refusal_logodds") is not None],
    )
    put(
        "refusal_logodds_benign",
        [r["refusal_logodds"] for r in benign if r.get("refusal_logodds") is not None],
    )
    put("p_refuse_harmful", [r["p_refuse"] for r in harmful if r.get("p_refuse") is not None])
    out["degenerate"] = float(np.mean([degenerate(r.get("response") or "") for r in per_judge]))
    return out


class _Evaluator:
    """Evaluates one loaded model under a list of hooks, into ``points/<mode>/<direction>/alpha=<a>``."""

    def __init__(self, cfg: SteerConfig, vlm, items: list[BenchItem], key: dict[str, Any]):
        self.cfg, self.vlm, self.items, self.key = cfg, vlm, items, key
        self.hooked = HookedVLM(vlm, backend="torch")
        self.gen = GenerationConfig(
            max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, **cfg.generation
        )
        self.judges = [make_judge(cfg.judge)]
        harmful = [it for it in items if it.label == "harmful"] or items
        self.probe_batch = encode_queries(vlm, [Query(it.text) for it in harmful[:16]])

    def point(self, folder: Path, hooks: list, intervention: dict[str, Any], readout: list[str], unit):
        t0 = time.perf_counter()
        evaluate_items(
            self.items,
            folder,
            self.gen,
            self.judges,
            vlm=self.vlm,
            key={**self.key, "intervention": intervention},
            context={"intervention": intervention},
            hook_context=(lambda: self.hooked.hooks(hooks)) if hooks else None,
        )
        rows, judged = read_jsonl(folder / "responses.jsonl"), read_jsonl(folder / "judged.jsonl")
        metrics = _points_metrics(rows, judged)
        _, cache = self.hooked.run_with_cache(self.probe_batch, readout, fwd_hooks=hooks)
        u = unit.to(torch.float32)
        for name in readout:
            metrics[f"projection@{name}"] = float((cache[name][:, -1, :] @ u).mean())
        logger.info(
            f"{intervention['mode']} {intervention['direction']} alpha={intervention.get('alpha', math.nan):.3g}: "
            f"ASR {metrics['asr']:.2f}, refusal score {metrics['refusal_logodds_harmful']:+.2f}, "
            f"degenerate {metrics['degenerate']:.0%} ({time.perf_counter() - t0:.0f} s)"
        )
        return metrics, rows, judged


def _digest(vec: torch.Tensor) -> str:
    """Content key of a direction vector: a cached evaluation point is reused only for the same vector."""
    return sha256_bytes(vec.detach().float().cpu().numpy().tobytes())[:16]


def _directions(
    cfg: SteerConfig, d_model: int, n_layers: int, readout: torch.Tensor | None
) -> tuple[DirectionSet, Direction, list[tuple[str, torch.Tensor]]]:
    dset = load_directions(cfg.directions)
    dset.check_fits(d_model, n_layers, where=f"{cfg.model} ")
    chosen = dset.sized(cfg.hook, cfg.position, cfg.method)
    if cfg.orthogonal_to_readout:
        if readout is None:
            raise ConfigError(
                "steer: --orthogonal-to-readout needs a refusal readout; the openers give none here"
            )
        r = readout / readout.norm()
        v = chosen.vector.float().cpu()
        chosen = replace(chosen, vector=v - (v @ r) * r, meta={**chosen.meta, "orthogonal_to_readout": True})
    vecs = [("chosen", chosen.vector.float())]
    vecs += [(f"random-{i}", r) for i, r in enumerate(random_like(chosen.vector, cfg.n_random, cfg.seed + 1))]
    return dset, chosen, vecs


def _readout(vlm, cfg: SteerConfig) -> tuple[torch.Tensor | None, str]:
    """The refusal score's logit direction for this model and these openers (None, why, if there is none)."""
    from vsfa.eval.refusal import Openers, readout_direction

    gen = cfg.generation
    try:
        return readout_direction(vlm, Openers.load(gen.get("openers_refuse"), gen.get("openers_comply"))), ""
    except DataError as e:  # openers whose first tokens coincide: no single-token readout
        return None, str(e)


def readout_alignment(
    readout: torch.Tensor, dset: DirectionSet, chosen: Direction, seed: int = 0
) -> dict[str, Any]:
    """Cosine of each layer's direction (at the chosen position) with the refusal score's own logit direction
    (:func:`vsfa.eval.refusal.readout_direction`), beside the 95th percentile |cosine| of random directions.

    A direction near the readout tracks and steers the refusal score by construction: a high cosine says the
    direction found is (largely) the output readout, not an upstream persona feature."""
    g = torch.randn(2000, readout.numel(), generator=torch.Generator().manual_seed(seed))
    rand95 = float(torch.nn.functional.cosine_similarity(g, readout[None]).abs().quantile(0.95))

    def cos(d: Direction) -> float:
        return float(torch.nn.functional.cosine_similarity(d.vector.float().cpu(), readout, dim=0))

    by_layer = {d.hook: cos(d) for d in dset.by_layer(position=chosen.position, method=chosen.method)}
    return {"chosen": cos(chosen), "by_layer": by_layer, "random_95": rand95}


def _fraction_restored(
    base: np.ndarray, ckpt: np.ndarray, ablated: np.ndarray, n_boot: int, seed: int
) -> dict:
    """``(ablated - ckpt) / (base - ckpt)`` of item means, with a paired bootstrap CI over items."""

    def ratio(idx: np.ndarray) -> float:
        gap = base[idx].mean() - ckpt[idx].mean()
        return float((ablated[idx].mean() - ckpt[idx].mean()) / gap) if abs(gap) > 1e-12 else math.nan

    n = len(base)
    value = ratio(np.arange(n))
    rng = np.random.default_rng(seed)
    boots = np.array([ratio(rng.integers(0, n, n)) for _ in range(n_boot)])
    boots = boots[np.isfinite(boots)]
    lo, hi = np.quantile(boots, [0.025, 0.975]) if boots.size else (math.nan, math.nan)
    return {
        "value": value,
        "lo": float(lo),
        "hi": float(hi),
        "n": n,
        "base": float(base.mean()),
        "checkpoint": float(ckpt.mean()),
        "ablated": float(ablated.mean()),
    }


RESTORED_OUTCOMES = ("asr", "refusal_logodds", "p_refuse")


def _item_values(rows: list[dict], judged: list[dict], outcome: str) -> np.ndarray:
    """Per harmful item (sorted by id): ``asr`` (unsafe), ``refusal_logodds`` or ``p_refuse`` (NaN if absent)."""
    from vsfa.eval.metrics import join_judged

    (per_judge,) = join_judged(rows, judged).values()
    harmful = sorted((r for r in per_judge if r["label"] == "harmful"), key=lambda r: r["id"])
    if outcome == "asr":
        return np.array([float(r["unsafe"]) for r in harmful])
    return np.array([math.nan if r.get(outcome) is None else float(r[outcome]) for r in harmful])


def _restored(base: tuple, tuned: tuple, rows: list[dict], judged: list[dict], cfg: SteerConfig) -> dict:
    """The fraction of the checkpoint's change undone by an intervention, per outcome the eval produced."""
    out = {}
    for outcome in RESTORED_OUTCOMES:
        values = [_item_values(*base[1:], outcome), _item_values(*tuned[1:], outcome)]
        values.append(_item_values(rows, judged, outcome))
        if all(v.size and np.isfinite(v).all() for v in values):
            out[outcome] = _fraction_restored(*values, cfg.n_boot, cfg.seed)
    return out


def steer(cfg: SteerConfig) -> Path:
    """Run the steering sweep (and the ablation when ``cfg.checkpoint`` is given); returns the output folder.
    Every input is checked before anything is written; the folder is locked while it is written."""
    cfg.check()
    t0 = time.perf_counter()
    load_directions(cfg.directions)  # a bad direction file fails here, before anything is written
    items = BenchSpec(cfg.bench, cfg.bench_path, dict(cfg.bench_options)).load(cfg.limit)
    if not any(it.label == "harmful" for it in items):
        raise ArtifactError(f"benchmark {cfg.bench}: no harmful items to steer on")
    out = Path(cfg.out)
    with output_lock(out):  # one writer per folder
        return _steer(cfg, out, items, t0)


def _steer(cfg: SteerConfig, out: Path, items: list[BenchItem], t0: float) -> Path:
    from vsfa.models.loading import load_vlm

    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # complete again only when this run finishes
    vlm = load_vlm(cfg.model, device=cfg.device, dtype=cfg.dtype)
    readout, why = _readout(vlm, cfg)
    dset, chosen, vecs = _directions(cfg, vlm.d_model, vlm.n_layers, readout)
    alignment = {"note": why} if readout is None else readout_alignment(readout, dset, chosen, cfg.seed)
    readout = list(dict.fromkeys([chosen.hook, hook_name(vlm.n_layers - 1)]))
    key = {"model": str(cfg.model), "model_fingerprint": model_fingerprint(cfg.model), "adapter": None}
    ev = _Evaluator(cfg, vlm, items, key)
    points = out / "points"
    plain = {"mode": "steer", "direction": "none", "hook": chosen.hook, "alpha": 0.0}
    base_point = ev.point(points / "steer" / "none", [], plain, readout, chosen.unit)
    curves: list[dict[str, Any]] = []
    for name, vec in progress(vecs, "steer", unit="direction"):
        curves.append({"mode": "steer", "direction": name, "alpha": 0.0, **base_point[0]})
        for alpha in sorted({a for a in cfg.alphas if a != 0}):
            spec = {**plain, "direction": name, "alpha": alpha, "positions": cfg.steer_positions}
            spec["vector"] = _digest(vec)
            hooks = [(chosen.hook, steering_hook(vec, alpha, cfg.steer_positions))]
            m, _, _ = ev.point(
                points / "steer" / name / f"alpha={alpha:g}", hooks, spec, readout, chosen.unit
            )
            curves.append({"mode": "steer", "direction": name, "alpha": alpha, **m})
    curves.sort(key=lambda r: (r["direction"] != "chosen", r["direction"], r["alpha"]))
    ablation: dict[str, Any] = {}
    undo: dict[str, Any] = {}
    shift = math.nan
    if cfg.checkpoint:
        del ev, vlm
        ck = Path(cfg.checkpoint)
        vlm = load_vlm(cfg.model, adapter=ck, device=cfg.device, dtype=cfg.dtype)
        key = {**key, "adapter": str(ck), "adapter_fingerprint": model_fingerprint(ck)}
        ev = _Evaluator(cfg, vlm, items, key)
        tuned = ev.point(
            points / "ablate" / "none", [], {"mode": "ablate", "direction": "none"}, readout, chosen.unit
        )
        curves.append({"mode": "ablate", "direction": "none", "alpha": math.nan, **tuned[0]})
        projection = f"projection@{chosen.hook}"
        shift = tuned[0][projection] - base_point[0][projection]  # along the unit direction
        for name, vec in progress(vecs, "ablate", unit="direction"):
            spec = {"mode": "ablate", "direction": name, "vector": _digest(vec)}
            m, rows, judged = ev.point(
                points / "ablate" / name, ablation_hooks(vec, vlm.n_layers), spec, readout, chosen.unit
            )
            curves.append({"mode": "ablate", "direction": name, "alpha": math.nan, **m})
            ablation[name] = _restored(base_point, tuned, rows, judged, cfg)
            # undo: move back by the checkpoint's own shift along the chosen direction (a random one: as far)
            alpha = -shift / chosen.norm  # in class gaps, the unit of the steering sweep
            spec = {"mode": "undo", "direction": name, "hook": chosen.hook, "alpha": alpha}
            spec.update(positions=cfg.steer_positions, vector=_digest(vec))
            hooks = [(chosen.hook, steering_hook(vec, alpha, cfg.steer_positions))]  # random: same norm
            m, rows, judged = ev.point(points / "undo" / name, hooks, spec, readout, chosen.unit)
            curves.append({"mode": "undo", "direction": name, "alpha": alpha, **m})
            undo[name] = _restored(base_point, tuned, rows, judged, cfg)
    write_csv_atomic(out / "curves.csv", curves, list(dict.fromkeys(k for r in curves for k in r)))
    summary = {
        "kind": "vsfa.steer",
        "model": str(cfg.model),
        "checkpoint": str(cfg.checkpoint) if cfg.checkpoint else None,
        "directions": str(cfg.directions),
        "hook": chosen.hook,
        "position": chosen.position,
        "method": chosen.method,
        "class_gap_norm": chosen.norm,
        "alpha_unit": "class gaps (raw difference of class means)"
        if chosen.method != "probe"
        else "class gaps along the probe's normal (the difference of class means projected on it)",
        "readout": readout,
        "readout_alignment": alignment,
        "ablation_restored": ablation,
        "undo_shift": shift,
        "undo_restored": undo,
        "settings": {k: v for k, v in cfg.__dict__.items() if k not in ("model", "directions", "out")},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json_atomic(out / "causal.json", summary)
    write_manifest(out, {"kind": "vsfa.steer", "files": ["curves.csv", "causal.json"]})
    return out
