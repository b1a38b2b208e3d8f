"""LoRA fine-tuning of a VLM on a VSFA data folder: ``vsfa train --config run.toml``.

The public face of :mod:`vsfa.training`: ``train(cfg)``, ``load_config(path, overrides)``,
``list_checkpoints(run_dir)`` and the checkpoint contract (``RUN/checkpoints/step-NNNNNN/`` = plain peft adapter
folder + ``manifest.json`` written last; step 0 is the base model and has no folder).
"""

from __future__ import annotations

from vsfa.training.config import TrainConfig, config_from_dict, load_config, parse_overrides
from vsfa.training.loop import TrainResult, list_checkpoints, read_loss_log, step_dir, train
from vsfa.training.schedule import checkpoint_steps

__all__ = [
    "TrainConfig",
    "TrainResult",
    "checkpoint_steps",
    "config_from_dict",
    "list_checkpoints",
    "load_config",
    "parse_overrides",
    "read_loss_log",
    "step_dir",
    "train",
]
