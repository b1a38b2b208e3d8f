"""The checkpoint layout, written in exactly one place.

``RUN/checkpoints/step-NNNNNN/`` is a plain peft adapter folder (``adapter_config.json``,
``adapter_model.safetensors``: ``PeftModel.from_pretrained`` loads it) plus a ``manifest.json`` written last; the
folder is assembled under a temporary name and renamed into place, so a folder without its manifest (a kill in
between) is incomplete and never listed. Step 0 is the base model and has no folder.

Every manifest carries the same fields (:func:`checkpoint_meta` builds them, :func:`write_checkpoint` adds ``step``
and ``loss``): ``kind``, ``base_model`` (absolute folder), ``base_model_fingerprint``, ``family``, ``data``,
``data_hash``, ``arm``, ``variant``, ``labelled``, ``seed``, ``total_steps``, ``config``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from vsfa.io import atomic_dir, is_complete, write_manifest

CHECKPOINTS = "checkpoints"
CHECKPOINT_KIND = "vsfa-checkpoint"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
STEP_RE = re.compile(r"^step-(\d{6})$")


def step_dir(run_dir: str | Path, step: int) -> Path:
    """``RUN/checkpoints/step-NNNNNN``."""
    return Path(run_dir) / CHECKPOINTS / f"step-{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run (those with a manifest), sorted by step. Step 0 (the base) is not listed."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = STEP_RE.match(p.name)
        if m and p.is_dir() and is_complete(p):
            out.append((int(m.group(1)), p))
    return sorted(out)


def checkpoint_meta(
    *,
    base_model: str,
    base_model_fingerprint: str | None,
    family: str,
    data: str,
    data_hash: str | None,
    seed: int,
    total_steps: int,
    config: dict[str, Any],
    arm: str = "",
    variant: str = "",
    labelled: bool = False,
) -> dict[str, Any]:
    """The manifest fields every checkpoint of a run shares (all but ``step`` and ``loss``)."""
    return {
        "kind": CHECKPOINT_KIND,
        "data_hash": data_hash,
        "data": data,
        "base_model": base_model,
        "base_model_fingerprint": base_model_fingerprint,
        "family": family,
        "seed": seed,
        "config": config,
        "arm": arm,
        "variant": variant,
        "labelled": labelled,
        "total_steps": total_steps,
    }


def write_checkpoint(
    run_dir: str | Path, step: int, adapter_from: str | Path, meta: dict[str, Any], loss: float | None
) -> Path:
    """Publish ``RUN/checkpoints/step-NNNNNN/``: the adapter files of folder ``adapter_from`` (where the model's
    ``save_pretrained`` wrote them), then the manifest (``meta`` from :func:`checkpoint_meta` + step + loss)."""
    src = Path(adapter_from)
    with atomic_dir(step_dir(run_dir, step)) as tmp:
        for name in ADAPTER_FILES:
            shutil.copy2(src / name, tmp / name)
        write_manifest(tmp, {**meta, "step": step, "loss": loss})
    return step_dir(run_dir, step)
