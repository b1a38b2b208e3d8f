"""Where a peft adapter acts: which language-model decoder layers carry adapted modules.

A LoRA adapter restricted to some layers (the organism's recipe trains layers 2-3 only) leaves every residual
below its first adapted layer exactly as in the base model: a shift measured there is 0 by construction, not
a finding. :func:`adapter_placement` reads that placement from the adapter folder without loading a model:

* from ``adapter_model.safetensors``' tensor names (only its header is read): the modules the adapter really
  changes, whatever ``target_modules`` / ``layers_to_transform`` / ``modules_to_save`` said;
* without that file, from ``adapter_config.json``'s ``layers_to_transform`` when it is set; otherwise the
  placement is unknown (``None``).

The family registry gives the decoder-layer path (``Family.layers_path``); adapted modules outside the decoder
layers that feed the residual stream (embeddings, projector, vision tower) make every layer movable.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from vsfa.errors import ArtifactError
from vsfa.models.registry import Family

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."
# what follows the module name in a peft tensor name (LoRA factors, saved module copies, trainable tokens ...)
_SUFFIX = re.compile(
    r"\.(lora_[A-Za-z_]+|modules_to_save|original_module|token_adapter|trainable_tokens)\b.*$"
)


@dataclass(frozen=True)
class AdapterPlacement:
    """The decoder layers with adapted modules, and adapted modules upstream of the decoder layers."""

    n_layers: int
    layers: frozenset[int]
    upstream: tuple[str, ...] = ()  # adapted modules outside the decoder layers that feed them
    source: str = WEIGHTS

    def has_adapter(self, layer: int) -> bool:
        """True when decoder layer ``layer`` (0-based) carries an adapted module."""
        return layer % self.n_layers in self.layers

    def fixed(self, layer: int, kind: str = "hook_resid_post") -> bool:
        """True when the activation at ``blocks.{layer}.{kind}`` equals the base model's by construction: no
        adapted module upstream of the decoder and none in the layers it depends on (below ``layer`` for
        ``hook_resid_pre``, up to and including ``layer`` for the other hook kinds)."""
        if self.upstream:
            return False
        layer %= self.n_layers
        last = layer - 1 if kind == "hook_resid_pre" else layer
        return not any(i <= last for i in self.layers)

    def describe(self) -> str:
        """E.g. ``layers 2, 3 (of 4)``."""
        where = f"layers {', '.join(map(str, sorted(self.layers)))}" if self.layers else "no decoder layer"
        extra = f" + {', '.join(self.upstream)}" if self.upstream else ""
        return f"{where} (of {self.n_layers}){extra}"


def adapter_placement(adapter: str | Path, family: Family, n_layers: int) -> AdapterPlacement | None:
    """The placement of the peft adapter in folder ``adapter`` on a model of ``family`` with ``n_layers``
    decoder layers; ``None`` when it cannot be told without loading weights (no safetensors file and no
    ``layers_to_transform``)."""
    folder = Path(adapter)
    cfg_file = folder / CONFIG
    if not cfg_file.is_file():
        raise ArtifactError(f"{folder}: no {CONFIG} (not a peft adapter folder)")
    try:
        config = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{cfg_file}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ArtifactError(f"{cfg_file}: expected a JSON object")
    weights = folder / WEIGHTS
    if weights.is_file():
        return _from_names(_tensor_names(weights), family, n_layers)
    chosen = config.get("layers_to_transform")
    if chosen is None:
        return None
    chosen = [chosen] if isinstance(chosen, int) else chosen
    if not isinstance(chosen, list) or not all(isinstance(i, int) for i in chosen):
        raise ArtifactError(f"{cfg_file}: layers_to_transform must be an integer or a list of integers")
    return AdapterPlacement(n_layers, frozenset(i % n_layers for i in chosen), source=CONFIG)


def _tensor_names(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as e:  # a truncated or foreign file
        raise ArtifactError(f"{path}: cannot read the safetensors header ({type(e).__name__}: {e})") from None


def _from_names(names: list[str], family: Family, n_layers: int) -> AdapterPlacement:
    in_layer = re.compile(rf"(?:^|\.){re.escape(family.layers_path)}\.(\d+)\.")
    downstream = (family.final_norm_path, "lm_head")  # after the last residual: they move no hook
    layers: set[int] = set()
    upstream: set[str] = set()
    for name in names:
        m = in_layer.search(name)
        if m:
            layers.add(int(m.group(1)) % n_layers)
            continue
        module = _SUFFIX.sub("", name.removeprefix(PEFT_PREFIX))
        if not any(module == d or module.endswith("." + d) or module.startswith(d + ".") for d in downstream):
            upstream.add(module)
    return AdapterPlacement(n_layers, frozenset(layers), tuple(sorted(upstream)), WEIGHTS)
