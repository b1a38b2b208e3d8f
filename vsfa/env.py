"""Process-wide environment defaults: offline hub access and the TransformerLens torchvision guard.

Entry points call :func:`apply_offline_defaults` (the ``vsfa`` command, ``make``, the experiment scripts), so
that ``transformers`` never tries the network unless the user opted in with ``VSFA_ONLINE=1``. Importing
``vsfa`` does not: a notebook keeps its own environment.
"""

from __future__ import annotations

import os

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def apply_offline_defaults() -> None:
    """Set the hub-offline variables unless the user opted in to network access (``VSFA_ONLINE=1``)."""
    if os.environ.get("VSFA_ONLINE") == "1":
        return
    for var in _OFFLINE_VARS:
        os.environ.setdefault(var, "1")
    os.environ.setdefault("WANDB_MODE", "disabled")


def guard_torchvision_autoinstall() -> None:
    """Stop TransformerLens 4.x from pip-installing torchvision when a processor fails to load.

    That install would replace the CPU torch with a multi-GB CUDA build. We load processors ourselves.
    """
    try:
        from transformer_lens.model_bridge.sources.transformers import helpers
    except ImportError:  # other TL layout: nothing to guard
        return
    if hasattr(helpers, "_ensure_torchvision"):
        helpers._ensure_torchvision = lambda *a, **k: False


def torchvision_available() -> bool:
    """True when torchvision imports (real Qwen / SmolVLM processors need it)."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True
