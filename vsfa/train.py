"""LoRA fine-tuning of a VLM: ``vsfa train --config run.toml``, and the one training loop under it.

The public face of :mod:`vsfa.training`: ``train(cfg)``, ``load_config(path, overrides)``,
``list_checkpoints(run_dir)`` and the checkpoint contract (``RUN/checkpoints/step-NNNNNN/`` = plain peft adapter
folder + ``manifest.json`` written last; step 0 is the base model and has no folder). ``run_loop`` with a ``Job``
is the loop itself, for trainers with their own batch source, loss or callbacks (the organism fine-tune).
"""

from __future__ import annotations

from vsfa.training.checkpoints import checkpoint_meta, step_dir, write_checkpoint
from vsfa.training.config import OptimSection, TrainConfig, config_from_dict, load_config, parse_overrides
from vsfa.training.loop import (
    Job,
    RunState,
    TrainResult,
    list_checkpoints,
    read_loss_log,
    run_loop,
    train,
    truncate_jsonl,
)
from vsfa.training.schedule import checkpoint_steps

__all__ = [
    "Job",
    "OptimSection",
    "RunState",
    "TrainConfig",
    "TrainResult",
    "checkpoint_meta",
    "checkpoint_steps",
    "config_from_dict",
    "list_checkpoints",
    "load_config",
    "parse_overrides",
    "read_loss_log",
    "run_loop",
    "step_dir",
    "train",
    "truncate_jsonl",
    "write_checkpoint",
]
