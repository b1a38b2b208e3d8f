"""The one training loop (HF Trainer): checkpoint schedule, plain peft checkpoints with manifests, exact resume.

:func:`run_loop` owns a run folder: it refuses a folder holding another run, resumes an interrupted one, skips a
complete one, and around the Trainer writes the loss log, the checkpoints (through
:mod:`vsfa.training.checkpoints`, the only writer of that layout) and the run manifest. What is trained comes from
a :class:`Job` the caller builds once the folder is checked: the model (LoRA-wrapped or partly unfrozen), a batch
source (a map-style data set of encoded records, or an endless stream), optionally its own loss, and callbacks
(e.g. readouts at evaluation steps). Two callers: :func:`train` (``vsfa train``, the study's runs: LoRA SFT on a
VQA data folder) and :func:`vsfa.organism.finetune.finetune` (``vsfa organism finetune``: a document stream and
readouts).

Run folder::

    RUN/config.toml            resolved config (``vsfa train``; written before training)
    RUN/identity.json          what makes this run this run: config (minus out/runtime), data hash, base fingerprint
    RUN/loss.jsonl             one row per logged step: step, loss, learning_rate, grad_norm, epoch, seconds
    RUN/checkpoints/step-NNNNNN/   plain peft adapter (adapter_config.json, adapter_model.safetensors)
                                   + manifest.json, written last (a folder without it is incomplete)
    RUN/state/checkpoint-N/    the Trainer's resume state (optimizer, scheduler, RNG, data position)
    RUN/manifest.json          written when the run is complete

Rerunning the same command after a crash resumes from the newest checkpoint that has both its manifest and its
Trainer state; the Trainer restores optimizer, scheduler, RNG and data order, so the result equals an
uninterrupted run. A folder holding a different run (other config, data or base model) is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vsfa.config import to_dict, to_toml
from vsfa.errors import ArtifactError, ConfigError
from vsfa.io import MANIFEST as MANIFEST_NAME
from vsfa.io import (
    absolute_path,
    dumps,
    first_difference,
    is_complete,
    output_lock,
    read_json,
    read_manifest,
    write_json_atomic,
    write_manifest,
    write_text_atomic,
)
from vsfa.training.checkpoints import (
    CHECKPOINTS,
    STEP_RE,
    checkpoint_meta,
    list_checkpoints,
    step_dir,
    write_checkpoint,
)
from vsfa.training.collate import PaddingCollator, RecordDataset
from vsfa.training.config import OptimSection, TrainConfig, identity
from vsfa.training.schedule import checkpoint_steps, total_steps

logger = logging.getLogger(__name__)
STATE = "state"
LOSS_LOG = "loss.jsonl"
IDENTITY = "identity.json"
_STATE_RE = re.compile(r"^checkpoint-(\d+)$")

__all__ = [
    "Job",
    "RunState",
    "TrainResult",
    "list_checkpoints",
    "read_loss_log",
    "run_loop",
    "step_dir",
    "train",
    "truncate_jsonl",
]


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda:<LOCAL_RANK>`` when CUDA is available, else ``cpu``."""
    if device == "auto":
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device is {device!r} but no CUDA device is available")
    return device


def _tristate(value: str, auto: bool) -> bool:
    return auto if value == "auto" else value == "true"


# ------------------------------------------------------------------------------------------ run folder
@dataclass
class RunState:
    """What is on disk before training: resume step (0 = fresh) and whether the run is already complete."""

    resume_step: int
    resume_state: Path | None
    complete: bool


def prepare_run_dir(run_dir: Path, ident: dict[str, Any]) -> RunState:
    """Check the folder holds this run (or nothing), clean incomplete leftovers, find the resume point."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ArtifactError(f"{run_dir}: output path exists and is not a folder")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        ident_file = run_dir / IDENTITY
        if not ident_file.is_file():
            raise ArtifactError(
                f"{run_dir}: output folder holds other files (not a vsfa run); choose another out"
            )
        theirs = read_json(ident_file, ArtifactError)
        ours = json.loads(dumps(ident))
        if theirs != ours:
            raise ArtifactError(
                f"{run_dir}: output folder holds a different run ({first_difference(ours, theirs)}); "
                "choose another out or delete the folder"
            )
        if is_complete(run_dir):
            return RunState(0, None, True)
    done = {s for s, _ in list_checkpoints(run_dir)}
    states = {}
    state_root = run_dir / STATE
    if state_root.is_dir():
        for p in state_root.iterdir():
            m = _STATE_RE.match(p.name)
            if m and p.is_dir():
                states[int(m.group(1))] = p
    resumable = sorted(done & set(states))
    resume = resumable[-1] if resumable else 0
    if _is_main():  # leftovers of an interrupted run: temp folders, incomplete or newer checkpoints and state
        ck_root = run_dir / CHECKPOINTS
        for p in ck_root.iterdir() if ck_root.is_dir() else []:
            m = STEP_RE.match(p.name)
            if m is None or not is_complete(p) or int(m.group(1)) > resume:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        for p in state_root.iterdir() if state_root.is_dir() else []:
            m = _STATE_RE.match(p.name)
            if m is None or int(m.group(1)) > resume:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        (run_dir / MANIFEST_NAME).unlink(missing_ok=True)
        truncate_jsonl(run_dir / LOSS_LOG, resume)
    return RunState(resume, states.get(resume), False)


def truncate_jsonl(path: Path, step: int) -> None:
    """Keep the rows of a per-step JSONL log (``loss.jsonl``, a readout trajectory) up to ``step``."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if row.get("step", 0) <= step:
            keep.append(line + "\n")
    write_text_atomic(path, "".join(keep))


# ------------------------------------------------------------------------------------------ callbacks
def _callbacks(run_dir: Path, schedule: set[int], meta: dict[str, Any], keep_state: str, quiet: bool):
    from transformers import TrainerCallback

    class ScheduleCallback(TrainerCallback):
        """Save (and log) exactly at the scheduled steps."""

        def on_step_end(self, args, state, control, **kw):
            control.should_save = state.global_step in schedule
            if state.global_step in schedule:
                control.should_log = True
            return control

    class LossLogCallback(TrainerCallback):
        """Append each logged step to RUN/loss.jsonl; remember the loss per step for checkpoint manifests."""

        def __init__(self):
            self.loss_at: dict[int, float] = {}
            self.t0 = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or "loss" not in logs or not state.is_world_process_zero:
                return
            row = {
                "step": state.global_step,
                "loss": float(logs["loss"]),
                "learning_rate": float(logs.get("learning_rate", 0.0)),
                "grad_norm": float(logs["grad_norm"]) if logs.get("grad_norm") is not None else None,
                "epoch": float(state.epoch or 0.0),
                "seconds": round(time.perf_counter() - self.t0, 3),
            }
            self.loss_at[state.global_step] = row["loss"]
            with open(run_dir / LOSS_LOG, "a") as f:
                f.write(dumps(row, indent=None) + "\n")

    loss_log = LossLogCallback()

    class CheckpointCallback(TrainerCallback):
        """After the Trainer saved its state, publish the plain peft checkpoint (manifest last)."""

        def on_save(self, args, state, control, **kw):
            step = state.global_step
            if not state.is_world_process_zero:
                return
            src = Path(args.output_dir) / f"checkpoint-{step}"
            write_checkpoint(run_dir, step, src, meta, loss_log.loss_at.get(step))
            if keep_state == "last":
                for p in Path(args.output_dir).iterdir():
                    m = _STATE_RE.match(p.name)
                    if m and int(m.group(1)) < step:
                        shutil.rmtree(p, ignore_errors=True)
            if quiet is False and not sys.stderr.isatty():
                loss = loss_log.loss_at.get(step)
                logger.info(
                    f"step {step}/{state.max_steps} loss {loss if loss is None else f'{loss:.4f}'} -> "
                    f"{step_dir(run_dir, step)}"
                )

    return [ScheduleCallback(), loss_log, CheckpointCallback()], loss_log


# ------------------------------------------------------------------------------------------ model
def attach_lora(vlm, cfg: TrainConfig):
    """Wrap the HF model with peft LoRA on the registry's language-model regex; everything else frozen."""
    from peft import LoraConfig, get_peft_model

    family = vlm.family
    modules_to_save = list(cfg.lora.modules_to_save)
    if cfg.lora.train_projector:
        modules_to_save.append(family.projector_path)
    target = cfg.lora.target_regex or family.lora_target_regex
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=target,
        modules_to_save=modules_to_save or None,
        bias="none",
    )
    model = vlm.hf_model
    model.config.use_cache = False
    try:
        peft_model = get_peft_model(model, lora)
    except ValueError as e:
        raise ConfigError(f"lora.target_regex {target!r}: {str(e).splitlines()[0]}") from None
    return peft_model


# ------------------------------------------------------------------------------------------ the loop
@dataclass
class Job:
    """What one run of the loop trains; built by the caller once the run folder is checked (a complete run
    loads nothing).

    ``dataset``: a map-style data set (shuffled by the Trainer) or an ``IterableDataset`` (an endless stream, read
    in order; on resume the Trainer replays it up to the resume step). ``collator`` turns a list of its items
    into a batch dict. ``loss_fn(model, batch) -> loss`` replaces the model's own loss (the batch's ``labels``
    stay in the dict for it); it must be a mean over the batch. ``meta``: the checkpoint manifest fields
    (:func:`vsfa.training.checkpoints.checkpoint_meta`). ``files``: text files written into the run folder
    before training (the resolved config). ``run_info``: further run-manifest fields.
    """

    model: Any
    dataset: Any
    collator: Callable[[list], dict[str, Any]]
    steps: int
    schedule: list[int]
    optim: OptimSection
    meta: dict[str, Any]
    seed: int
    device: str = "cpu"
    bf16: bool = False
    gradient_checkpointing: bool = False
    keep_state: str = "last"
    dataloader_workers: int = 0
    trainer_args: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    loss_fn: Callable[[Any, dict[str, Any]], torch.Tensor] | None = None
    callbacks: Sequence[Any] = ()
    files: dict[str, str] = field(default_factory=dict)
    run_info: dict[str, Any] = field(default_factory=dict)
    describe: str = ""  # what is trained on, for the start line (e.g. "40 records")


@dataclass
class TrainResult:
    """Outcome of a run: run folder, steps, checkpoints, and whether it resumed or was already complete."""

    run_dir: Path
    total_steps: int
    checkpoints: list[tuple[int, Path]]
    resumed_from: int
    already_complete: bool
    final_loss: float | None
    seconds: float


def run_loop(
    run_dir: str | Path,
    ident: dict[str, Any],
    build: Callable[[RunState], Job],
    quiet: bool = False,
) -> TrainResult:
    """Run (or resume, or skip if complete) the run ``ident`` describes in ``run_dir``.

    ``build(run_state)`` is called once the folder is checked, under its lock, and returns the :class:`Job`.
    """
    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    lock = output_lock(run_dir) if _is_main() else contextlib.nullcontext()
    with lock:  # a second writer on this folder stops here (exit 2), before anything is touched
        run_state = prepare_run_dir(run_dir, ident)
        if run_state.complete:
            man = read_manifest(run_dir)
            return TrainResult(
                run_dir, man["total_steps"], list_checkpoints(run_dir), 0, True, man.get("final_loss"), 0.0
            )
        job = build(run_state)
        if _is_main():
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(run_dir / IDENTITY, ident)
            for name, text in job.files.items():
                write_text_atomic(run_dir / name, text)
        with warnings.catch_warnings():  # transformers' own v6 deprecation notices, not the user's concern
            warnings.filterwarnings("ignore", category=FutureWarning)
            _fit(run_dir, job, run_state, quiet)

        ckpts = list_checkpoints(run_dir)
        losses = read_loss_log(run_dir)
        seconds = time.perf_counter() - t_start
        if _is_main():
            write_manifest(
                run_dir,
                {
                    **{k: v for k, v in job.meta.items() if k != "kind"},
                    "kind": "vsfa-run",
                    **job.run_info,
                    "schedule": job.schedule,
                    "checkpoints": [f"{CHECKPOINTS}/{p.name}" for _, p in ckpts],
                    "final_loss": losses[-1]["loss"] if losses else None,
                    "first_loss": losses[0]["loss"] if losses else None,
                    "resumed_from": run_state.resume_step,
                    "device": job.device,
                    "bf16": job.bf16,
                    "gradient_checkpointing": job.gradient_checkpointing,
                    "versions": _versions(),
                },
            )
        return TrainResult(
            run_dir,
            job.steps,
            ckpts,
            run_state.resume_step,
            False,
            losses[-1]["loss"] if losses else None,
            seconds,
        )


def _trainer_class():
    from transformers import Trainer

    class LoopTrainer(Trainer):
        """The HF Trainer, with the job's own loss where it has one."""

        loss_fn: Callable | None = None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.loss_fn is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss = self.loss_fn(model, inputs)
            return (loss, None) if return_outputs else loss

    return LoopTrainer


def _fit(run_dir: Path, job: Job, run_state: RunState, quiet: bool) -> None:
    """Build the HF Trainer for ``job`` and train (resuming from ``run_state.resume_state`` when set)."""
    from transformers import PrinterCallback, ProgressCallback, TrainingArguments

    show_bar = job.progress and not quiet and sys.stderr.isatty()
    opt = job.optim
    args = TrainingArguments(
        output_dir=str(run_dir / STATE),
        per_device_train_batch_size=opt.batch_size,
        gradient_accumulation_steps=opt.grad_accum,
        learning_rate=opt.lr,
        lr_scheduler_type=opt.scheduler,
        warmup_steps=opt.warmup,
        weight_decay=opt.weight_decay,
        max_grad_norm=opt.max_grad_norm,
        optim=opt.optim,
        max_steps=job.steps,
        logging_strategy="steps",
        logging_steps=opt.log_every,
        save_strategy="steps",
        save_steps=job.steps + 1,  # the schedule callback decides
        save_total_limit=None,
        seed=job.seed,
        data_seed=job.seed,
        bf16=job.bf16,
        activation_checkpointing=job.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if job.gradient_checkpointing else None,
        disable_tqdm=not show_bar,
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=job.dataloader_workers,
        use_cpu=not job.device.startswith("cuda"),
        **{"report_to": "none", **job.trainer_args},
    )
    callbacks, _ = _callbacks(run_dir, set(job.schedule), job.meta, job.keep_state, quiet)
    trainer = _trainer_class()(
        model=job.model,
        args=args,
        train_dataset=job.dataset,
        data_collator=job.collator,
        callbacks=[*callbacks, *job.callbacks],
    )
    if job.loss_fn is not None:
        trainer.loss_fn = job.loss_fn
        trainer.loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides by grad_accum
    trainer.remove_callback(PrinterCallback)
    if not show_bar:
        trainer.remove_callback(ProgressCallback)
    if not quiet and not show_bar and _is_main():
        start = f"resuming at step {run_state.resume_step}" if run_state.resume_step else "starting"
        logger.info(f"{start}: {job.describe}, {job.steps} steps, checkpoints at {job.schedule}")
    trainer.train(resume_from_checkpoint=str(run_state.resume_state) if run_state.resume_state else None)


# ------------------------------------------------------------------------------------------ vsfa train
def train(
    cfg: TrainConfig,
    quiet: bool = False,
    vlm=None,
    data=None,
    base_fingerprint: str | None = None,
    extra_callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Run (or resume, or skip if complete) one LoRA training run described by ``cfg``.

    ``cfg.model.base`` is any model source (:func:`vsfa.models.sources.resolve_model`: a folder, ``tiny:<family>``,
    ``organism``, ``smol-llava``); manifests record the resolved folder. ``vlm``/``data``/``base_fingerprint`` let
    callers inject an in-memory model and data set (the GPU check); otherwise they are loaded from the base and
    ``cfg.data.path``. All input checks happen before the run folder is touched.
    """
    from vsfa.data.dataset import load_data
    from vsfa.io import model_fingerprint
    from vsfa.models.loading import load_vlm, read_family
    from vsfa.models.sources import resolve_model

    device = resolve_device(cfg.runtime.device)
    on_cuda = device.startswith("cuda")
    if data is None:
        data = load_data(cfg.data.path)
    base = cfg.model.base
    if vlm is None:
        base = resolve_model(cfg.model.base)
        read_family(base)  # unknown family: one clear error before anything else
        base_fingerprint = model_fingerprint(base)
    ident = {
        "config": identity(cfg),
        "data_hash": data.data_hash,
        "base_model_fingerprint": base_fingerprint,
    }

    def build(run_state: RunState) -> Job:
        nonlocal vlm
        bf16 = _tristate(cfg.train.bf16, on_cuda and torch.cuda.is_bf16_supported())
        grad_ckpt = _tristate(cfg.train.gradient_checkpointing, on_cuda)
        if vlm is None:
            dtype = cfg.model.dtype if cfg.model.dtype != "auto" else ("bfloat16" if bf16 else "float32")
            vlm = load_vlm(
                base, dtype=dtype, device=device, attn_implementation=cfg.model.attn_implementation or None
            )
        dataset = RecordDataset(vlm, data.conversations, data.images, cfg.data.train_on)
        steps = total_steps(
            len(dataset),
            cfg.train.batch_size,
            cfg.train.grad_accum,
            _world_size(),
            cfg.train.epochs,
            cfg.train.max_steps or 0,
        )
        from transformers import set_seed

        set_seed(cfg.seed)
        with warnings.catch_warnings():  # transformers' own v6 deprecation notices, not the user's concern
            warnings.filterwarnings("ignore", category=FutureWarning)
            model = attach_lora(vlm, cfg)
        meta = checkpoint_meta(
            base_model=absolute_path(base),
            base_model_fingerprint=base_fingerprint,
            family=vlm.family.name,
            data=absolute_path(cfg.data.path),
            data_hash=data.data_hash,
            seed=cfg.seed,
            total_steps=steps,
            config=to_dict(cfg),
            arm=cfg.arm or data.manifest.get("arm", ""),
            variant=data.manifest.get("variant", ""),
            labelled=bool(data.manifest.get("labelled", False)),
        )
        return Job(
            model=model,
            dataset=dataset,
            collator=PaddingCollator(vlm.tokenizer.pad_token_id),
            steps=steps,
            schedule=checkpoint_steps(steps, cfg.checkpoints),
            optim=cfg.train,
            meta=meta,
            seed=cfg.seed,
            device=device,
            bf16=bf16,
            gradient_checkpointing=grad_ckpt,
            keep_state=cfg.checkpoints.keep_state,
            dataloader_workers=cfg.runtime.dataloader_workers,
            trainer_args=cfg.runtime.trainer_args,
            progress=cfg.runtime.progress,
            callbacks=extra_callbacks,
            files={"config.toml": to_toml(to_dict(cfg))},
            run_info={
                "n_records": len(dataset),
                "max_seq_len": max(dataset.lengths()),
            },
            describe=f"{len(dataset)} records",
        )

    return run_loop(Path(cfg.out), ident, build, quiet=quiet)


def read_loss_log(run_dir: str | Path) -> list[dict]:
    """Rows of RUN/loss.jsonl (step, loss, learning_rate, grad_norm, epoch, seconds)."""
    path = Path(run_dir) / LOSS_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _versions() -> dict[str, str]:
    import peft
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
