"""A per-layer activation summary: the quickest look at a hooked VLM."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from probes.fidelity import check_batch
from probes.hooked import HookedVLM, hook_name
from vsfa.models.loading import load_vlm


def layer_summary(path: str | Path, adapter: str | Path | None = None, backend: str = "auto") -> str:
    """Load + hook a model, run a few image prompts, and tabulate resid_post norms per layer.

    Columns: mean L2 norm at the last prompt token, over image tokens, over text tokens, and the cosine
    between the last-token activations of the first two prompts (how input-specific the layer is).
    """
    vlm = load_vlm(path, adapter=adapter)
    hooked = HookedVLM(vlm, backend=backend)
    batch = check_batch(vlm)
    _, cache = hooked.run_with_cache(batch, hooked.hook_names())
    mask = batch["attention_mask"].bool().cpu()
    image = (batch["input_ids"] == vlm.image_token_id).cpu() & mask
    text = mask & ~image
    lines = [
        f"{vlm.source} | family {vlm.family.name} | backend {hooked.backend} | {hooked.n_layers} layers, "
        f"d_model {hooked.d_model} | {len(batch['input_ids'])} prompts, {int(image.sum())} image tokens",
        f"{'hook':<26}{'|h| last':>10}{'|h| image':>11}{'|h| text':>10}{'cos(last 0,1)':>15}",
    ]
    for layer in range(hooked.n_layers):
        act = cache[hook_name(layer)]
        norms = act.norm(dim=-1)
        last = act[:, -1]
        cos = torch.nn.functional.cosine_similarity(last[0], last[1], dim=0)
        img = f"{norms[image].mean():11.3f}" if image.any() else f"{'-':>11}"
        lines.append(
            f"{hook_name(layer):<26}{norms[:, -1].mean():10.3f}{img}{norms[text].mean():10.3f}{cos:15.3f}"
        )
    return "\n".join(lines)


@dataclass
class SummaryConfig:
    """Settings of ``vsfa models summary``."""

    path: Path
    """Model folder."""
    adapter: Path | None = None
    """peft adapter folder."""
    backend: str = "auto"
    """auto | bridge | torch"""


def run_summary(cfg: SummaryConfig) -> str:
    """Load, hook and print a per-layer activation summary on a few multimodal inputs."""
    return layer_summary(cfg.path, adapter=cfg.adapter, backend=cfg.backend)
