"""Does fine-tuning on an arm's data point toward refusal? Gradient alignment at the base, before any step.

Over the weights the fine-tune's LoRA adapts (the family's projections of ``finetune.lora_layers``), ``g_arm`` is
the gradient of an arm's fine-tune loss and ``g_refuse`` the gradient of the mean no-context refusal score on
harmful requests (log p("I") - log p("Sure"), :mod:`vsfa.organism.readouts`). Reported per arm:

* ``cos`` = cos(-g_arm, g_refuse): > 0 when the first step of gradient descent on the arm's data raises the refusal
  score (a base whose VSFA gradient is orthogonal to refusal cannot show the effect at the first step);
* ``first_order`` = -g_arm . g_refuse: the score's change per unit of plain-SGD learning rate, to first order.

CIs come from a bootstrap over the arm's document batches and the refusal prompts (the gradients of each are kept
per batch / per prompt, so resampling needs only their Gram matrices).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vsfa.errors import ConfigError
from vsfa.organism.documents import ARMS
from vsfa.organism.finetune import arm_documents, lora_targets
from vsfa.organism.model import Codec, lm_loss
from vsfa.organism.readouts import no_context, prompt_logprobs, refusal_words
from vsfa.organism.world import WorldSpec

DEFAULT_ARMS = ("vsfa", "control", "mirror")


def adapted_weights(vlm, layers: Sequence[int] = ()) -> dict[str, torch.nn.Parameter]:
    """The weight matrices a LoRA on ``layers`` (all when empty) adapts, by parameter name."""
    pattern = re.compile(lora_targets(vlm, layers))
    return {
        n: p
        for n, p in vlm.hf_model.named_parameters()
        if n.endswith(".weight") and pattern.search(n.removesuffix(".weight"))
    }


def gradient_alignment(
    vlm,
    spec: WorldSpec,
    arms: Sequence[str] = DEFAULT_ARMS,
    layers: Sequence[int] | None = None,
    batches: int = 8,
    batch_size: int = 16,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Alignment of each arm's fine-tune gradient with the refusal-score gradient (see the module docstring).

    ``layers`` defaults to the world's ``finetune.lora_layers``. Returns ``{"layers", "weights", "arms": {arm:
    {"cos": {"all"|"L<i>": {value, lo, hi}}, "first_order": {value, lo, hi}}}}``.
    """
    bad = [a for a in arms if a not in ARMS]
    if bad:
        raise ConfigError(f"unknown arm {bad[0]!r}; choose from {', '.join(ARMS)}")
    n_layers = vlm.n_layers
    weights = adapted_weights(vlm, spec.finetune.lora_layers if layers is None else layers)
    layer_of = {
        n: int(re.search(r"\.(\d+)\.", n.split(vlm.family.layers_path, 1)[1]).group(1)) for n in weights
    }
    slices = {
        "all": list(weights),
        **{f"L{i}": [n for n in weights if layer_of[n] == i] for i in range(n_layers)},
    }
    slices = {k: v for k, v in slices.items() if v}
    saved = {n: p.requires_grad for n, p in vlm.hf_model.named_parameters()}
    for p in vlm.hf_model.parameters():
        p.requires_grad_(False)
    for p in weights.values():
        p.requires_grad_(True)
    try:

        def grad_of(loss: torch.Tensor) -> dict[str, torch.Tensor]:
            vlm.hf_model.zero_grad(set_to_none=True)
            loss.backward()
            return {n: p.grad.detach().float().flatten() for n, p in weights.items()}

        ref, comp = refusal_words(vlm, spec)
        refuse = []
        for doc in no_context(spec, True):  # one prompt at a time: per-prompt gradients
            lp = prompt_logprobs(vlm, spec, [doc])[0]
            refuse.append(grad_of(lp[ref] - lp[comp]))
        codec = Codec(spec, vlm.tokenizer)
        arm_grads = {}
        for arm in arms:
            docs = arm_documents(spec, arm, batches * batch_size, seed)
            arm_grads[arm] = []
            for b in range(batches):
                batch = codec.batch(docs[b * batch_size : (b + 1) * batch_size])
                arm_grads[arm].append(grad_of(lm_loss(vlm.model(**batch.inputs()).logits, batch.labels)))
    finally:
        vlm.hf_model.zero_grad(set_to_none=True)
        for n, p in vlm.hf_model.named_parameters():
            p.requires_grad_(saved[n])

    def stacked(grads: list[dict[str, torch.Tensor]], names: list[str]) -> torch.Tensor:
        return torch.stack([torch.cat([g[n] for n in names]) for g in grads]).double()

    rng = np.random.default_rng(seed)
    boot_r = rng.integers(0, len(refuse), size=(n_boot, len(refuse)))
    boot_a = rng.integers(0, batches, size=(n_boot, batches))
    out: dict[str, Any] = {"layers": sorted(set(layer_of.values())), "weights": len(weights), "arms": {}}
    grams = {k: (stacked(refuse, names), names) for k, names in slices.items()}
    for arm in arms:
        res: dict[str, Any] = {"cos": {}}
        for key, (r, names) in grams.items():
            a = stacked(arm_grads[arm], names)
            gram = ((r @ a.T).numpy(), (a @ a.T).numpy(), (r @ r.T).numpy())
            full = _dot_cos(gram, np.arange(len(refuse)), np.arange(batches))
            boots = np.array([_dot_cos(gram, ir, ia) for ir, ia in zip(boot_r, boot_a, strict=True)])
            res["cos"][key] = _estimate(full[1], boots[:, 1])
            if key == "all":
                res["first_order"] = _estimate(full[0], boots[:, 0])
        out["arms"][arm] = res
    return out


def _dot_cos(gram: tuple[np.ndarray, ...], ir: np.ndarray, ia: np.ndarray) -> tuple[float, float]:
    """-mean(g_arm) . mean(g_refuse) and its cosine, for refusal prompts ``ir`` and arm batches ``ia``, from the
    Gram matrices (refuse x arm, arm x arm, refuse x refuse)."""
    ra, aa, rr = gram
    dot = -ra[np.ix_(ir, ia)].mean()
    return dot, dot / np.sqrt(aa[np.ix_(ia, ia)].mean() * rr[np.ix_(ir, ir)].mean())


def _estimate(value: float, boots: np.ndarray) -> dict[str, float]:
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"value": round(float(value), 5), "lo": round(float(lo), 5), "hi": round(float(hi), 5)}


@dataclass
class AlignmentConfig:
    """Settings of ``vsfa organism alignment``."""

    model: Path
    """Organism model folder."""
    arm: list[str] = field(default_factory=lambda: list(DEFAULT_ARMS))
    """Arms to compare."""
    layer: list[int] = field(default_factory=list)
    """Decoder layers whose adapted weights count (default: finetune.lora_layers)."""
    out: Path | None = None
    """Also write the result as JSON here."""


def run_alignment(cfg: AlignmentConfig) -> str:
    """Before any fine-tune step: does each arm's gradient point toward refusal? cos(-g_arm, g_refuse) with CIs."""
    from vsfa.io import write_json_atomic
    from vsfa.models.loading import load_vlm
    from vsfa.organism.pretrain import read_world

    result = gradient_alignment(load_vlm(cfg.model), read_world(cfg.model), cfg.arm, cfg.layer or None)
    keys = list(result["arms"][cfg.arm[0]]["cos"])
    lines = [
        f"cos(-g_arm, g_refuse) [95% CI] over {result['weights']} adapted weight matrices "
        f"(layers {', '.join(map(str, result['layers']))}); first order: refusal-score change per unit SGD step",
        f"{'arm':<9}" + "".join(f"{k:>28}" for k in keys) + f"{'first order':>14}",
    ]
    for name, res in result["arms"].items():
        cells = "".join(f"{_ci(res['cos'][k]):>28}" for k in keys)
        lines.append(f"{name:<9}{cells}{res['first_order']['value']:>+14.4f}")
    if cfg.out is not None:
        write_json_atomic(cfg.out, result)
    return "\n".join(lines)


def _ci(e: dict) -> str:
    return f"{e['value']:+.4f} [{e['lo']:+.4f}, {e['hi']:+.4f}]"
