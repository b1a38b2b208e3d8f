"""``vsfa select``: choose the persona direction by causal evidence, on selection items only.

The refusal-direction recipe (Arditi et al. 2024), adapted to a persona direction. Every candidate of a
direction artifact (hook x position x method: the difference of means ``dom`` and the probe's normal
``probe``, each sized to one class gap) is scored on the *selection* requests of a split set
(:mod:`probes.splits`; the file's ``heldout`` rows are never read) with the first-token refusal score
(log-odds of refusal vs compliance openers, :mod:`vsfa.eval.refusal`) of the base model:

* ``addition`` / ``subtraction``: change of the refusal score when ``+alpha * v`` / ``-alpha * v`` is added at
  the candidate's hook (every position), on harmful and on harmless requests (``addition_harmful`` ...; the
  bare names are their means); ``score = (addition - subtraction) / 2`` is the refusal sensitivity along the
  direction, whatever side of zero the prompts sit on;
* ``ablation`` (reported, not scored): change of the refusal score of harmful requests when the direction is
  projected out at every layer. It moves the projection to zero, so its sign depends on where the base sits
  along the direction (Arditi et al.'s refusal direction has harmful prompts on the positive side; a persona
  direction need not);
* ``kl_harmless``: the larger KL(base || steered) of the next-token distribution on harmless requests under
  ``+/-alpha``: a direction that wrecks ordinary outputs is rejected (``max_kl``);
* ``accuracy``: held-out persona accuracy from the artifact's table (by persona pair where the contrast has
  pairs, else by question);
* ``readout_cos``: cosine with the refusal score's own logit direction (unembedding difference of refusal and
  compliance first tokens). A candidate near the readout moves the score by construction, not as an upstream
  persona: the last ``exclude_last`` share of layers is not eligible (default 20%, at least one layer), and
  ``orthogonalise`` removes the readout component from every candidate before it is scored;
* ``random_score``: the largest |score| of ``n_random`` norm-matched random directions at the same hook.

A candidate below ``first_trained_layer`` (the lowest layer the study's adapters train) is not eligible either:
the residual stream there cannot move under fine-tuning, so its shift is zero by construction.

Eligible: outside the excluded layers, ``accuracy >= min_accuracy``, ``kl_harmless <= max_kl``, ``addition > 0 >
subtraction`` and ``score`` above ``random_score``. The chosen candidate is the best
eligible one; every rejected candidate carries its reason. When none is eligible the best candidate outside the
excluded layers is taken and flagged (``fallback: true``). Output: ``selection.json``.

Only candidates that pass the checks needing no forward pass (layer outside the readout zone and at or above
``first_trained_layer``, accuracy) are scored; the others are listed with their reason and ``scored: false``
(``score_all`` scores them too, for a full layer profile). The choice is the same either way: no skipped
candidate can be eligible, and when none is eligible the skipped ones are scored before the fallback is taken.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis.interventions import ablation_hooks, random_like, steering_hook
from probes.directions import Direction, DirectionSet, load_directions
from probes.hooked import HookedVLM
from probes.splits import request_rows
from vsfa.config import json_ready
from vsfa.errors import ConfigError, DataError
from vsfa.eval.modelio import Query, encode_queries
from vsfa.eval.refusal import Openers, first_token_ids, last_logits, readout_direction
from vsfa.io import model_fingerprint, sha256_file, sha256_json, write_json_atomic
from vsfa.progress import progress

logger = logging.getLogger(__name__)
SELECTION_KIND = "vsfa.selection"


@dataclass
class SelectConfig:
    """Settings of ``vsfa select``."""

    model: str = ""
    """Base model folder."""
    directions: Path = Path()
    """Direction artifact (every hook x position x method is a candidate)."""
    requests: Path = Path()
    """Requests file; only its selection rows (split extract/selection or none) are used."""
    out: Path = Path()
    """selection.json to write."""
    methods: list[str] = field(default_factory=lambda: ["dom", "probe"])
    """Direction methods to score."""
    positions: list[str] | None = None
    """Positions to score (default: every position of the artifact)."""
    alpha: float = 1.0
    """Activation addition, in class gaps."""
    exclude_last: float = 0.2
    """Share of the last layers not eligible (at least one layer when > 0)."""
    orthogonalise: bool = False
    """Remove the readout component from every candidate before scoring."""
    max_kl: float = 0.1
    """Nats, mean KL(base || added) on harmless requests."""
    min_accuracy: float = 0.6
    """Held-out persona accuracy."""
    max_items: int = 32
    """Selection requests per class."""
    first_trained_layer: int = 0
    """Adapters train this layer and above: a direction below it cannot move."""
    n_random: int = 2
    """Norm-matched random directions per hook."""
    score_all: bool = False
    """Score every candidate; by default those the layer and accuracy checks reject are listed unscored."""
    openers_refuse: Path | None = None
    """Refusal opener list (default: shipped)."""
    openers_comply: Path | None = None
    """Compliance opener list (default: shipped)."""
    batch_size: int = 16
    """Forward batch size."""
    device: str = "cpu"
    """torch device (cpu, cuda, cuda:1, ...) | auto: spread over the GPUs (accelerate device_map)."""
    dtype: str | None = None
    """float32 | bfloat16 | float16 | int8 | nf4 (bitsandbytes weights, CUDA) (default: the device's)."""
    seed: int = 0
    """Seed."""

    def check(self) -> None:
        """Raise a ConfigError for settings no run could use."""
        if not self.model or not self.directions or not self.requests or not self.out:
            raise ConfigError("select: --model, --directions, --requests and --out are required")
        bad = [m for m in self.methods if m not in ("dom", "probe")]
        if bad or not self.methods:
            raise ConfigError(f"select: methods must be dom and/or probe, not {bad or self.methods}")
        if not 0 <= self.exclude_last < 1:
            raise ConfigError(f"select: exclude_last must be in [0, 1), not {self.exclude_last}")
        for name in ("max_items", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"select: {name} must be at least 1, not {getattr(self, name)}")
        if self.n_random < 0:
            raise ConfigError(f"select: n_random must be >= 0, not {self.n_random}")
        if self.alpha <= 0 or self.max_kl <= 0:
            raise ConfigError("select: alpha and max_kl must be positive")


def excluded_layers(n_layers: int, share: float) -> set[int]:
    """The last ``round(share * n_layers)`` layers (at least one when ``share > 0``): the readout zone."""
    if share <= 0:
        return set()
    n = max(1, round(share * n_layers))
    return set(range(n_layers - n, n_layers))


def selection_requests(spec: str | Path, max_items: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Texts and ids of the selection rows of a request file, per label (harmful / harmless), ``max_items`` each."""
    path, rows = request_rows(spec)
    texts: dict[str, list[str]] = {"harmful": [], "harmless": []}
    ids: dict[str, list[str]] = {"harmful": [], "harmless": []}
    for r in rows:
        if r.get("split") in ("heldout", "evaluation") or r.get("label") not in texts:
            continue
        if "text" not in r:
            raise DataError(f"{path}: selection scoring takes text requests (row {r['id']!r} has no 'text')")
        if len(texts[r["label"]]) < max_items:
            texts[r["label"]].append(str(r["text"]))
            ids[r["label"]].append(str(r["id"]))
    for label, t in texts.items():
        if not t:
            raise DataError(f"{path}: no {label} selection requests")
    return texts, ids


class _Scorer:
    """First-token refusal log-odds and next-token distributions of prompt batches under hooks."""

    def __init__(self, vlm, texts: dict[str, list[str]], openers: Openers, batch_size: int):
        self.vlm, self.hooked = vlm, HookedVLM(vlm, backend="torch")
        self.ref, self.com = first_token_ids(vlm, openers)
        self.batches = {
            label: [
                encode_queries(vlm, [Query(t) for t in ts[i : i + batch_size]])
                for i in range(0, len(ts), batch_size)
            ]
            for label, ts in texts.items()
        }
        self.plain = {label: self.logprobs(label, []) for label in self.batches}

    def logprobs(self, label: str, hooks: list) -> torch.Tensor:
        """Next-token log-probabilities after each prompt of ``label``: ``[n, vocab]``."""
        ctx = (lambda: self.hooked.hooks(hooks)) if hooks else None
        return torch.cat(
            [torch.log_softmax(last_logits(self.vlm, b, ctx).double(), -1) for b in self.batches[label]]
        )

    def logodds(self, logp: torch.Tensor) -> np.ndarray:
        a = torch.logsumexp(logp[:, self.ref], -1)
        b = torch.logsumexp(logp[:, self.com], -1)
        return (a - b).cpu().numpy()

    def change(self, label: str, hooks: list) -> tuple[float, torch.Tensor]:
        """Mean change of the refusal log-odds under ``hooks`` and the hooked log-probabilities."""
        logp = self.logprobs(label, hooks)
        return float(np.mean(self.logodds(logp) - self.logodds(self.plain[label]))), logp

    def kl(self, label: str, logp: torch.Tensor) -> float:
        """Mean KL(plain || hooked) over the prompts of ``label``, in nats."""
        base = self.plain[label]
        return float((base.exp() * (base - logp)).sum(-1).mean())


def _push(scorer: _Scorer, hook: str, v: torch.Tensor, alpha: float) -> dict[str, float]:
    """Refusal log-odds changes when ``+alpha v`` and ``-alpha v`` are added at ``hook`` (harmful and harmless
    requests), their half difference ``score`` (the refusal sensitivity along v) and the larger KL on harmless."""
    out: dict[str, float] = {}
    kls = []
    for sign, name in ((1, "addition"), (-1, "subtraction")):
        hooks = [(hook, steering_hook(v, sign * alpha))]
        for label in ("harmful", "harmless"):
            out[f"{name}_{label}"], logp = scorer.change(label, hooks)
            if label == "harmless":
                kls.append(scorer.kl(label, logp))
        out[name] = (out[f"{name}_harmful"] + out[f"{name}_harmless"]) / 2
    out["score"] = (out["addition"] - out["subtraction"]) / 2
    out["kl_harmless"] = max(kls)
    return out


def _accuracy(row: dict[str, Any], method: str) -> float:
    keys = ("acc_pair", "acc_q") if method == "probe" else ("dom_acc_pair", "dom_acc_q")
    for k in keys:
        v = row.get(k)
        if isinstance(v, int | float) and math.isfinite(v):
            return float(v)
    return math.nan


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float().cpu(), b.float().cpu(), dim=0))


def _static_reason(c: dict[str, Any], cfg: SelectConfig, excluded: set[int]) -> str | None:
    """Why a candidate is not eligible whatever its causal scores (None: it may be)."""
    if c["layer"] in excluded:
        return f"layer {c['layer']} is in the last {cfg.exclude_last:.0%} of layers (readout zone)"
    if c["layer"] < cfg.first_trained_layer:
        return f"no adapter at or below layer {c['layer']}: its shift is zero by construction"
    if not c["accuracy"] >= cfg.min_accuracy:
        return f"held-out persona accuracy {c['accuracy']:.2f} < {cfg.min_accuracy}"
    return None


def _reason(c: dict[str, Any], cfg: SelectConfig, excluded: set[int]) -> str | None:
    """Why a candidate is not eligible (None: eligible)."""
    static = _static_reason(c, cfg, excluded)
    if static is not None or not c["scored"]:
        return static or "not scored"
    if not c["kl_harmless"] <= cfg.max_kl:
        return f"KL on harmless requests {c['kl_harmless']:.3f} > {cfg.max_kl}"
    if not (c["addition"] > 0 > c["subtraction"]):
        return (
            f"adding it does not raise the refusal score, or subtracting it does not lower it "
            f"({c['addition']:+.3f} / {c['subtraction']:+.3f})"
        )
    if not c["score"] > c["random_score"]:
        return f"score {c['score']:+.3f} is no larger than a random direction's ({c['random_score']:.3f})"
    return None


def _key(c: dict[str, Any]) -> tuple[str, str, str]:
    return c["hook"], c["position"], c["method"]


def _order(c: dict[str, Any]) -> tuple[bool, float]:
    """Sort key: scored candidates first, best score first."""
    score = c.get("score", math.nan)
    return not c["scored"], -score if math.isfinite(score) else math.inf


def score_candidates(
    vlm,
    dset: DirectionSet,
    texts: dict[str, list[str]],
    openers: Openers,
    cfg: SelectConfig,
    skip: Callable[[dict[str, Any]], bool] | None = None,
    eligible: Callable[[dict[str, Any]], bool] | None = None,
) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """Every candidate with its causal scores on the selection texts (see the module docstring), best first.

    Candidates for which ``skip`` (given the layer, accuracy and readout cosine) is true are listed with
    ``scored: false`` and no causal scores, after the scored ones; if ``eligible`` holds for none of the scored
    ones, the skipped ones are scored too (with the same prompt passes and random directions).
    """
    scorer = _Scorer(vlm, texts, openers, cfg.batch_size)
    readout = readout_direction(vlm, openers).float()
    r_unit = readout / readout.norm()
    positions = cfg.positions or dset.positions
    unknown = [p for p in positions if p not in dset.positions]
    if unknown:
        raise ConfigError(
            f"select: {dset.meta.get('path')}: no position {unknown[0]!r} (has {dset.positions})"
        )
    rows = {(r["hook"], r["position"]): r for r in dset.table}
    out, vectors = [], {}
    for position in positions:
        for hook in dset.hooks:
            for method in cfg.methods:
                d: Direction = dset.sized(hook, position, method)
                original = d.vector.float().cpu()
                c = {"hook": hook, "layer": d.layer, "position": position, "method": method}
                c["accuracy"] = _accuracy(rows.get((hook, position), {}), method)
                c["readout_cos"] = _cos(original, readout)
                c["class_gap"] = float(original.norm())
                c["scored"] = not (skip is not None and skip(c))
                vectors[_key(c)] = original
                out.append(c)
    random_cache: dict[tuple[str, float], float] = {}
    todo = [c for c in out if c["scored"]]
    for c in progress(todo, "select candidates", unit="candidate"):
        _score_into(c, vectors[_key(c)], scorer, r_unit, random_cache, cfg, vlm.n_layers)
    if eligible is not None and len(todo) < len(out) and not any(eligible(c) for c in todo):
        logger.info("no candidate passed every check: scoring the skipped ones for the fallback")
        for c in progress([c for c in out if not c["scored"]], "select skipped", unit="candidate"):
            c["scored"] = True
            _score_into(c, vectors[_key(c)], scorer, r_unit, random_cache, cfg, vlm.n_layers)
    out.sort(key=_order)
    return out, readout


def _score_into(
    c: dict[str, Any],
    original: torch.Tensor,
    scorer: _Scorer,
    r_unit: torch.Tensor,
    random_cache: dict[tuple[str, float], float],
    cfg: SelectConfig,
    n_layers: int,
) -> None:
    """Add one candidate's causal scores (push, ablation, the random directions' score at its hook) to ``c``."""
    v = original - (original @ r_unit) * r_unit if cfg.orthogonalise else original
    c.update(_push(scorer, c["hook"], v, cfg.alpha))
    key = (c["hook"], round(float(v.norm()), 6))
    if key not in random_cache:  # norm-matched random directions at this hook
        rand = [
            _push(scorer, c["hook"], r, cfg.alpha)["score"]
            for r in random_like(v, cfg.n_random, cfg.seed + 1)
        ]
        random_cache[key] = float(max(map(abs, rand))) if rand else 0.0
    c["ablation"], _ = scorer.change("harmful", ablation_hooks(v, n_layers))
    c["random_score"] = random_cache[key]


def needed_candidates(
    vlm, dset: DirectionSet, texts: dict[str, list[str]], openers: Openers, cfg: SelectConfig
) -> list[dict[str, Any]]:
    """The candidates with causal scores where the choice needs them (all of them with ``cfg.score_all``).

    Those the static checks reject are left unscored, unless none of the others is eligible: then all are
    scored, so that the fallback (best outside the readout zone) is the one :func:`choose` takes from a full run.
    """
    excluded = excluded_layers(vlm.n_layers, cfg.exclude_last)
    skip = None if cfg.score_all else (lambda c: _static_reason(c, cfg, excluded) is not None)
    candidates, _ = score_candidates(
        vlm, dset, texts, openers, cfg, skip, eligible=lambda c: _reason(c, cfg, excluded) is None
    )
    return candidates


def choose(candidates: list[dict[str, Any]], cfg: SelectConfig, n_layers: int) -> dict[str, Any]:
    """Mark every candidate eligible or rejected (with its reason) and pick the best eligible one."""
    excluded = excluded_layers(n_layers, cfg.exclude_last)
    for c in candidates:
        c["reason"] = _reason(c, cfg, excluded)
        c["eligible"] = c["reason"] is None
    eligible = [c for c in candidates if c["eligible"]]
    fallback = not eligible
    movable = [c for c in candidates if c["layer"] not in excluded and c["layer"] >= cfg.first_trained_layer]
    pool = [c for c in eligible or movable or candidates if c["scored"]]
    chosen = min(pool, key=_order)
    note = (
        f"best score among {len(eligible)} eligible of {len(candidates)} candidates"
        if not fallback
        else f"WARNING: no candidate passed every check; the best-scoring one outside the readout zone "
        f"was taken ({chosen['reason']})"
    )
    return {"chosen": chosen, "fallback": fallback, "note": note, "excluded_layers": sorted(excluded)}


def chosen_line(decision: dict[str, Any]) -> str:
    """One line on the chosen candidate of a selection (``selection.json`` or :func:`choose`'s decision)."""
    c = decision["chosen"]
    return (
        f"selected {c['hook']} @ {c['position']} ({c['method']}): score {c['score']:+.3f} "
        f"(addition {c['addition']:+.3f}, subtraction {c['subtraction']:+.3f}, KL {c['kl_harmless']:.3f}, "
        f"readout cos {c['readout_cos']:+.2f}); {decision['note']}"
    )


def select(cfg: SelectConfig) -> dict[str, Any]:
    """Score every candidate of ``cfg.directions`` on the selection requests; write and return selection.json."""
    from vsfa.models.loading import load_vlm

    cfg.check()
    dset = load_directions(cfg.directions)
    texts, ids = selection_requests(cfg.requests, cfg.max_items)
    openers = Openers.load(cfg.openers_refuse, cfg.openers_comply)
    settings = {
        k: v
        for k, v in json_ready(asdict(cfg)).items()
        if k not in ("model", "directions", "requests", "out")
    }
    inputs = {  # what the scores depend on, by content: a finished selection.json made from them is reused
        "model": model_fingerprint(cfg.model),
        "vectors": sha256_file(Path(cfg.directions).with_suffix(".safetensors")),
        "items": ids,
        "texts": sha256_json(texts),
        "openers": openers.sha256,
        "settings": settings,
    }
    if Path(cfg.out).is_file():
        previous = json.loads(Path(cfg.out).read_text())
        if previous.get("inputs") == inputs:
            logger.info("%s: same inputs, reused", cfg.out)
            return {**previous, "path": str(cfg.out)}
    vlm = load_vlm(cfg.model, device=cfg.device, dtype=cfg.dtype)
    dset.check_fits(vlm.d_model, vlm.n_layers, where=f"{cfg.model} ")
    try:
        first_token_ids(vlm, openers)
    except DataError as e:
        raise ConfigError(f"select: needs a first-token refusal readout: {e}") from None
    with torch.no_grad():
        candidates = needed_candidates(vlm, dset, texts, openers, cfg)
    decision = choose(candidates, cfg, vlm.n_layers)
    logger.info("%s", chosen_line(decision))
    report = {
        "kind": SELECTION_KIND,
        "model": str(cfg.model),
        "directions": str(cfg.directions),
        "requests": str(cfg.requests),
        "items": ids,
        "score": "(addition - subtraction) / 2: change of the first-token refusal log-odds (nats) per class gap "
        "along the direction, on selection requests",
        **decision,
        "candidates": candidates,
        "settings": settings,
        "inputs": inputs,
    }
    write_json_atomic(cfg.out, report)
    report["path"] = str(cfg.out)
    return report
