"""Hook-vs-HF fidelity check: does ``blocks.{l}.hook_resid_post`` match HF ``output_hidden_states``?

TransformerLens has had hook-vs-HF bugs on some architectures; this check catches them on the exact model.
The reference runs first on a fresh plain HF model (eager attention, as the bridge uses), then the hooked
model runs the same batch.

What is compared (the hook convention, :data:`probes.store.HOOK_CONVENTION_NOTE`): for every layer ``l`` but
the last, ``blocks.{l}.hook_resid_post`` against HF ``hidden_states[l+1]`` as they are. For the last layer
``L-1`` the two are *not* the same quantity: HF's ``hidden_states[L]`` comes after the final norm
(``Family.final_norm_path``), the hook gives the un-normed residual that the toolkit stores and derives
directions from. There the check compares ``final_norm(blocks.{L-1}.hook_resid_post)`` with
``hidden_states[L]``, so its last-layer row tests the hook *through* the norm, not equality of the raw values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from probes.hooked import HookedVLM, hook_name
from vsfa.models.loading import LoadedVLM, load_vlm

CHECK_PROMPTS = (
    "What is in the image?",
    "Describe the scene in one short sentence, please.",
    "What colour is the object?",
)


def check_images(n: int, size: int = 64, seed: int = 0) -> list[Image.Image]:
    """Simple deterministic test images: a coloured background with a shape."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        bg = tuple(int(c) for c in rng.integers(0, 256, 3))
        fg = tuple(int(c) for c in rng.integers(0, 256, 3))
        im = Image.new("RGB", (size, size), bg)
        x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
        ImageDraw.Draw(im).ellipse([x0, y0, x0 + size // 3, y0 + size // 3], fill=fg)
        images.append(im)
    return images


def check_batch(vlm: LoadedVLM):
    """The check's multimodal batch: three prompts of different lengths (so padding is exercised)."""
    texts = [
        vlm.render([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}])
        for q in CHECK_PROMPTS
    ]
    return vlm.encode(texts, [[im] for im in check_images(len(texts))])


@dataclass
class FidelityReport:
    """Max relative error per layer of hooked resid_post vs HF hidden states (real tokens only)."""

    source: str
    family: str
    backend: str
    rel_err: list[float]
    logits_rel_err: float

    @property
    def max_rel_err(self) -> float:
        return max([*self.rel_err, self.logits_rel_err])

    def table(self) -> str:
        rows = [f"{'layer':>5}  {'max rel err':>12}"]
        rows += [f"{i:>5}  {e:12.3e}" for i, e in enumerate(self.rel_err)]
        rows.append(f"{'logits':>5}  {self.logits_rel_err:12.3e}")
        return "\n".join(rows)


def _rel_err(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    a, b = a[mask.bool()].float(), b[mask.bool()].float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def run_fidelity_check(
    path: str | Path,
    adapter: str | Path | None = None,
    backend: str = "auto",
    device: str = "cpu",
    dtype: str | None = None,
) -> FidelityReport:
    """Compare hooked resid_post of every layer with HF ``output_hidden_states`` on a few multimodal inputs
    (the last layer through the final norm, see the module docstring)."""
    ref = load_vlm(
        path,
        adapter=adapter,
        merge=adapter is not None,
        device=device,
        dtype=dtype,
        attn_implementation="eager",
    )
    batch = check_batch(ref)
    with torch.no_grad():
        out = ref.model(**batch, output_hidden_states=True)
    hidden = [h.float().cpu() for h in out.hidden_states]
    ref_logits = out.logits.float().cpu()
    final_norm = ref.hf_model.get_submodule(ref.family.final_norm_path)
    mask = batch["attention_mask"].cpu()

    vlm = load_vlm(
        path,
        adapter=adapter,
        merge=adapter is not None,
        device=device,
        dtype=dtype,
        attn_implementation="eager",
    )
    hooked = HookedVLM(vlm, backend=backend)
    names = hooked.hook_names()
    logits, cache = hooked.run_with_cache(check_batch(vlm), names, return_logits=True)
    errs = []
    for layer in range(hooked.n_layers):
        act = cache[hook_name(layer)]
        if layer == hooked.n_layers - 1:
            with torch.no_grad():
                act = final_norm(act.to(device=vlm.device, dtype=vlm.dtype)).float().cpu()
        errs.append(_rel_err(act, hidden[layer + 1], mask))
    return FidelityReport(
        source=str(path),
        family=vlm.family.name,
        backend=hooked.backend,
        rel_err=errs,
        logits_rel_err=_rel_err(logits.float().cpu(), ref_logits, mask),
    )


@dataclass
class FidelityConfig:
    """Settings of ``vsfa models check``."""

    path: Path
    """Model folder."""
    adapter: Path | None = None
    """peft adapter folder (merged for the check)."""
    backend: str = "auto"
    """auto | bridge | torch"""
    device: str = "cpu"
    """torch device."""
    dtype: str | None = None
    """float32 (CPU default) | bfloat16 | float16"""
    bound: float = 1e-4
    """Fail (exit 1) when any layer's max relative error exceeds this."""


@dataclass
class FidelityVerdict:
    """A fidelity report and the bound it was held to."""

    report: FidelityReport
    bound: float

    @property
    def ok(self) -> bool:
        return self.report.max_rel_err <= self.bound

    def text(self) -> str:
        r = self.report
        verdict = "ok" if self.ok else "FAIL"
        return (
            f"{r.source}: family {r.family}, backend {r.backend}\n{r.table()}\n"
            f"{verdict}: max relative error {r.max_rel_err:.3e} (bound {self.bound:.0e})"
        )


def run_check(cfg: FidelityConfig) -> FidelityVerdict:
    """Hook-vs-HF fidelity: max relative error per layer of hooked resid_post vs HF hidden states."""
    report = run_fidelity_check(
        cfg.path, adapter=cfg.adapter, backend=cfg.backend, device=cfg.device, dtype=cfg.dtype
    )
    return FidelityVerdict(report, cfg.bound)
