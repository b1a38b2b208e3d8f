"""Helpers shared by test modules (not fixtures): small artifacts in the layouts the toolkit writes."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def lora_checkpoint(base: Path, out: Path, layers: str | None = None, step: int = 1, **extra) -> Path:
    """A LoRA checkpoint of ``base`` in the layout `vsfa train` writes, with random (non-zero) B matrices.

    ``layers``: a regex alternative of decoder layers (e.g. ``"1"`` or ``"0|1"``) for the LoRA to sit on; default:
    the family's own target regex (every layer).
    """
    from peft import LoraConfig, get_peft_model

    from vsfa.io import model_fingerprint
    from vsfa.models.loading import load_vlm

    vlm = load_vlm(base)
    torch.manual_seed(0)
    target = (
        rf"model\.language_model\.layers\.({layers})\..*\.(q_proj|v_proj|down_proj)"
        if layers is not None
        else vlm.family.lora_target_regex
    )
    cfg = LoraConfig(r=4, target_modules=target, init_lora_weights=False, **extra)
    get_peft_model(vlm.hf_model, cfg).save_pretrained(out)
    manifest = {"step": step, "base_model": str(base), "base_model_fingerprint": model_fingerprint(base)}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def reply(handler, payload: bytes, code: int = 200) -> None:
    """Send ``payload`` as a JSON response from a stub server's ``BaseHTTPRequestHandler``."""
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)
