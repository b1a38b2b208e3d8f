"""Shared pieces of the measures: the benchmark models, device sync, and the result row."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Measure:
    """One row of the ``vsfa bench`` table: ``value`` against ``goal`` (``value <= goal`` passes)."""

    name: str
    value: float | None
    goal: float | None
    unit: str = "x"
    detail: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.value is None:
            return "not measured"
        if self.goal is None:
            return "info"
        return "pass" if self.value <= self.goal else "FAIL"


def build_llava(
    out: Path, hidden: int = 512, layers: int = 8, heads: int = 8, kv_heads: int | None = None, inter: int = 0
) -> Path:
    """A random-weight LLaVA (tiny processor and tokenizer) with a bigger language model, saved as a folder.

    The default (d=512, 8 layers) makes the forward, not Python, dominate; ``hidden=576, layers=30, heads=9,
    kv_heads=3, inter=1536`` is SmolLM2-135M's language-model shape (the smol-llava demo), small vocabulary.
    """
    from vsfa.models.tiny import save_tiny

    text = dict(hidden_size=hidden, intermediate_size=inter or 4 * hidden, num_hidden_layers=layers)
    text |= dict(num_attention_heads=heads, num_key_value_heads=kv_heads or heads, head_dim=hidden // heads)
    return save_tiny("llava", out, text=text)


def syncer(device: str):
    """A function that waits for the device's queued work (a no-op on CPU)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None
