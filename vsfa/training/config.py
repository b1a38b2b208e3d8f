"""The training config: dataclasses read from TOML (``vsfa train --config run.toml``), with documented defaults.

The paper's own hyper-parameters are not known (../shared/reference/paper.md §4); the defaults are the usual
LoRA-SFT starting point it suggests: r=16, alpha=32, dropout 0.05 on the language model's attention and MLP
projections, vision tower and projector frozen, lr 2e-4 with cosine decay and 3% warm-up, 2 epochs, batch 4.
For a set of ~700 images x 3 questions, epochs and lr are the knobs most likely to matter: sweep them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vsfa.config import from_dict, load_toml, parse_assignments, to_dict
from vsfa.errors import ConfigError


@dataclass
class ModelSection:
    """The base VLM."""

    base: str = ""
    """Model folder (required); its family must be in the registry."""
    dtype: str = "auto"
    """auto: bfloat16 on CUDA, float32 on CPU | float32 | bfloat16 | float16."""
    attn_implementation: str = ""
    """Empty: transformers' default | sdpa | eager | flash_attention_2."""


@dataclass
class DataSection:
    """The training data: a folder built by ``vsfa data build`` / ``vsfa data vlguard`` / ``subsets``."""

    path: str = ""
    """Data folder (data.jsonl + manifest.json) (required)."""
    train_on: str = "last"
    """Loss on the last assistant turn ("last") or every assistant turn ("all")."""


@dataclass
class LoraSection:
    """LoRA on the language model (peft)."""

    r: int = 16
    """LoRA rank."""
    alpha: int = 32
    """LoRA alpha."""
    dropout: float = 0.05
    """LoRA dropout."""
    target_regex: str = ""
    """Empty: the family registry's regex (language-model projections only)."""
    train_projector: bool = False
    """Also train the vision-language projector (full weights, peft modules_to_save)."""
    modules_to_save: list[str] = field(default_factory=list)
    """Extra fully-trained modules (names)."""


@dataclass
class OptimSection:
    """Optimisation (passed to the HF Trainer)."""

    epochs: float = 2.0
    """Training epochs."""
    max_steps: int | None = None
    """When set (>= 1), overrides epochs."""
    batch_size: int = 4
    """Batch size per device."""
    grad_accum: int = 1
    """Gradient accumulation steps."""
    lr: float = 2e-4
    """Peak learning rate."""
    scheduler: str = "cosine"
    """Any transformers scheduler name: cosine | linear | constant | ..."""
    warmup: float = 0.03
    """< 1: share of the steps; >= 1: steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    optim: str = "adamw_torch"
    """transformers optimizer name."""
    bf16: str = "auto"
    """auto: on where CUDA supports bf16 | true | false."""
    gradient_checkpointing: str = "auto"
    """auto: on for CUDA | true | false."""
    log_every: int = 1
    """Loss log interval in steps (scheduled checkpoint steps are always logged)."""


@dataclass
class CheckpointSection:
    """Checkpoint schedule: log-spaced early steps + every N + final (persona directions move most early)."""

    log_until: int = 64
    """Log-spaced steps 1, 2, 4, ... up to this step (0 = none)."""
    log_base: float = 2.0
    """Base of the log-spaced early steps."""
    every: int = 100
    """Every N steps (0 = none)."""
    final: bool = True
    """Checkpoint the last step."""
    steps: list[int] = field(default_factory=list)
    """Extra explicit steps."""
    keep_state: str = "last"
    """Optimizer/RNG state for resume: "last" (only the newest) | "all"."""


@dataclass
class RuntimeSection:
    """Settings that do not change the result (not part of the run's identity)."""

    device: str = "auto"
    """auto: cuda if available, else cpu."""
    progress: bool = True
    """Progress bar when on a terminal."""
    dataloader_workers: int = 0
    """DataLoader worker processes."""
    trainer_args: dict[str, Any] = field(default_factory=dict)
    """Extra transformers TrainingArguments, e.g. report_to, deepspeed, fsdp, fsdp_config (one the loop sets
    itself, other than report_to, is refused)."""


@dataclass
class TrainConfig:
    """A training run (``vsfa train --config run.toml``); the resolved config is saved as RUN/config.toml."""

    out: str = ""
    """Run folder (required)."""
    arm: str = ""
    """Label stored in checkpoint manifests; "" = the data manifest's arm (vsfa/control/vlguard)."""
    seed: int = 0
    """Training seed (data order, LoRA init)."""
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    lora: LoraSection = field(default_factory=LoraSection)
    train: OptimSection = field(default_factory=OptimSection)
    checkpoints: CheckpointSection = field(default_factory=CheckpointSection)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)

    def check(self, where: str = "config") -> None:
        """Required fields and ranges (:func:`validate`); errors name ``where`` and the field."""
        validate(self, where)


RUNTIME_ONLY = ("out", "runtime")  # top-level keys left out of a run's identity
_TRISTATE = ("auto", "true", "false")


def validate(cfg: TrainConfig, where: str = "config") -> TrainConfig:
    """Check required fields and ranges; errors name the field."""
    for key, value in (("out", cfg.out), ("model.base", cfg.model.base), ("data.path", cfg.data.path)):
        if not str(value).strip():
            raise ConfigError(f"{where}: {key} is required")
    checks = [
        ("lora.r", cfg.lora.r >= 1),
        ("lora.alpha", cfg.lora.alpha > 0),
        ("lora.dropout", 0.0 <= cfg.lora.dropout < 1.0),
        ("train.epochs", cfg.train.epochs > 0 or cfg.train.max_steps is not None),
        ("train.max_steps", cfg.train.max_steps is None or cfg.train.max_steps >= 1),
        ("train.batch_size", cfg.train.batch_size >= 1),
        ("train.grad_accum", cfg.train.grad_accum >= 1),
        ("train.lr", cfg.train.lr > 0),
        ("train.warmup", cfg.train.warmup >= 0),
        ("train.log_every", cfg.train.log_every >= 1),
        ("train.bf16", cfg.train.bf16 in _TRISTATE),
        ("train.gradient_checkpointing", cfg.train.gradient_checkpointing in _TRISTATE),
        ("data.train_on", cfg.data.train_on in ("last", "all")),
        ("checkpoints.log_until", cfg.checkpoints.log_until >= 0),
        ("checkpoints.log_base", cfg.checkpoints.log_base > 1),
        ("checkpoints.every", cfg.checkpoints.every >= 0),
        ("checkpoints.steps", all(s >= 1 for s in cfg.checkpoints.steps)),
        ("checkpoints.keep_state", cfg.checkpoints.keep_state in ("last", "all")),
        ("runtime.dataloader_workers", cfg.runtime.dataloader_workers >= 0),
    ]
    if cfg.runtime.trainer_args:
        check_trainer_args(cfg.runtime.trainer_args, where)
    for key, ok in checks:
        if not ok:
            section, name = key.split(".")
            value = getattr(getattr(cfg, section), name)
            hint = " (leave it unset to train by epochs)" if key == "train.max_steps" else ""
            raise ConfigError(f"{where}: invalid value for {key}: {value!r}{hint}")
    return cfg


# TrainingArguments the loop sets from the config (or for exact resume and checkpointing); report_to is only
# defaulted ("none"), so a user may name trackers
LOOP_TRAINER_ARGS = (
    "output_dir",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "optim",
    "max_steps",
    "logging_strategy",
    "logging_steps",
    "save_strategy",
    "save_steps",
    "save_total_limit",
    "seed",
    "data_seed",
    "bf16",
    "activation_checkpointing",
    "activation_checkpointing_kwargs",
    "disable_tqdm",
    "remove_unused_columns",
    "label_names",
    "dataloader_num_workers",
    "use_cpu",
)


def check_trainer_args(extra: dict[str, Any], where: str = "config") -> None:
    """``runtime.trainer_args`` names only TrainingArguments fields the loop leaves to the user."""
    import dataclasses

    from transformers import TrainingArguments

    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    for key in extra:
        if key in LOOP_TRAINER_ARGS:
            raise ConfigError(
                f"{where}: runtime.trainer_args.{key} is set by vsfa train from the config; set that instead"
            )
        if key not in known:
            raise ConfigError(
                f"{where}: runtime.trainer_args.{key} is not a transformers TrainingArguments field"
            )


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["train.lr=1e-4", "out=runs/x"]`` -> dotted overrides with TOML-typed values (bare words as strings)."""
    return parse_assignments(pairs, "override")


def run_train(cfg: TrainConfig) -> str:
    """LoRA fine-tune a VLM on a data folder (resumes after a crash); quiet when logging is above INFO."""
    import logging

    from vsfa.training.loop import train

    result = train(cfg, quiet=not logging.getLogger("vsfa").isEnabledFor(logging.INFO))
    if result.already_complete:
        return f"{result.run_dir}: already complete ({result.total_steps} steps); nothing to do"
    resumed = f", resumed from step {result.resumed_from}" if result.resumed_from else ""
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    return (
        f"{result.run_dir}: {result.total_steps} steps{resumed}, final loss {loss}, "
        f"{len(result.checkpoints)} checkpoints, {result.seconds:.1f} s"
    )


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a run TOML, apply dotted overrides, validate. Unknown keys are errors naming file and key."""
    cfg = load_toml(TrainConfig, path, overrides)
    return validate(cfg, where=str(path))


def config_from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    """Build and validate a TrainConfig from a dict (notebooks, tests)."""
    return validate(from_dict(TrainConfig, data, where), where)


def identity(cfg: TrainConfig) -> dict[str, Any]:
    """The part of the resolved config that determines the result (everything but out and runtime)."""
    d = to_dict(cfg)
    if d["train"]["max_steps"] is None:  # recorded as 0 before max_steps became optional: same identity
        d["train"]["max_steps"] = 0
    return {k: v for k, v in d.items() if k not in RUNTIME_ONLY}
