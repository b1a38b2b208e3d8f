"""Pretrain the organism from scratch on documents of its world, and save it as a normal model folder.

The folder holds ``config.json`` + weights (a stock ``LlavaForConditionalGeneration``), the processor files,
``organism_world.json`` (the exact specification it was trained on), ``pretrain_log.jsonl`` and, written last,
``manifest.json`` (seed, steps, loss, world digest, wall time, readouts of the finished model).

This loop stays apart from the one training loop (:mod:`vsfa.training.loop`, which also runs ``vsfa organism
finetune``) because it is a different job: it trains every weight of a freshly initialised model, not an adapter
on a base, with its own warm-up + cosine schedule, and its product is a model folder, not a run of checkpoints;
its bit-for-bit reproducibility from world file + seed (what makes the shipped base rebuildable) is pinned to
this loop's exact order of operations.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vsfa.errors import ArtifactError, ConfigError
from vsfa.io import atomic_dir, dumps, output_lock, write_manifest
from vsfa.organism.documents import sample_document
from vsfa.organism.model import Codec, lm_loss, new_model
from vsfa.organism.world import WorldSpec
from vsfa.progress import progress as progress_bar

WORLD_FILE = "organism_world.json"
LOG_FILE = "pretrain_log.jsonl"

Progress = Callable[[dict[str, Any]], None]


def lr_at(step: int, spec: WorldSpec) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_lr_ratio`` x lr at the last step."""
    p = spec.pretrain
    if step < p.warmup:
        return p.lr * (step + 1) / p.warmup
    t = (step - p.warmup) / max(1, p.steps - p.warmup)
    return p.lr * (p.min_lr_ratio + (1 - p.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Use ``n`` torch CPU threads inside the block (``None``: leave the setting alone)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def autocast(device: str, precision: str):
    """bf16 autocast context (or a no-op for ``fp32``)."""
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"precision must be fp32 or bf16, not {precision!r}")
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16")


def pretrain(
    spec: WorldSpec,
    seed: int,
    out: str | Path,
    device: str = "cpu",
    precision: str = "fp32",
    progress: Progress | None = None,
    readouts: bool = True,
    threads: int | None = None,
    snapshots: Sequence[int] = (),
) -> Path:
    """Pretrain an organism for ``spec.pretrain.steps`` steps and save it to ``out`` (atomically).

    Documents are generated on the fly from ``random.Random(seed)``; the weights are initialised from
    ``torch.manual_seed(seed)``. ``progress`` receives each log record (step, loss, lr, elapsed seconds).
    ``threads`` sets torch's CPU threads for the run (1 is fastest for this model size on a busy machine).
    ``snapshots`` lists steps at which the model is also saved, as a complete folder ``<out>-stepNNNNNN``
    (same files; the learning-rate schedule is the full run's, so a snapshot is not a shorter run).
    """
    with torch_threads(threads):
        return _pretrain(spec, seed, Path(out), device, precision, progress, readouts, set(snapshots))


def _save(folder, model, processor, spec, log, readouts, info) -> None:
    model.eval()
    with output_lock(folder), atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / WORLD_FILE).write_text(dumps(spec.to_dict()) + "\n")
        (tmp / LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in log))
        summary: dict[str, Any] = {}
        if readouts:
            from vsfa.models.loading import load_vlm
            from vsfa.organism.readouts import base_summary

            summary = base_summary(load_vlm(tmp), spec)
        write_manifest(tmp, {**info, "readouts": summary})
    model.train()


def _pretrain(spec, seed, out, device, precision, progress, readouts, snapshots) -> Path:
    if out.exists() and not (out / "manifest.json").is_file() and any(out.iterdir()):
        raise ArtifactError(f"{out}: folder exists and is not a finished organism; remove it or pick another")
    p = spec.pretrain
    model, processor = new_model(spec, seed)
    model.to(device).train()
    codec = Codec(spec, processor.tokenizer)
    decay = [q for n, q in model.named_parameters() if q.ndim >= 2]
    no_decay = [q for n, q in model.named_parameters() if q.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": p.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=p.lr,
        betas=tuple(p.betas),
    )
    rng = random.Random(f"organism-data:{seed}")
    log: list[dict[str, Any]] = []
    t0 = time.time()
    running = None
    queue: list[list] = []

    def info(steps_done: int, wall: float) -> dict[str, Any]:
        return {
            "kind": "vsfa-organism",
            "seed": seed,
            "steps": steps_done,
            "schedule_steps": p.steps,
            "batch_size": p.batch_size,
            "precision": precision,
            "final_loss": log[-1]["loss_ema"] if log else None,
            "world": spec.name,
            "world_digest": spec.digest(),
            "wall_s": round(wall, 1),
            "device": device,
            "torch_threads": torch.get_num_threads(),
        }

    for step in progress_bar(range(p.steps), "pretrain", unit="step"):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, spec)
        if not queue:
            queue = _bucketed(spec, rng, codec)
        batch = codec.batch(queue.pop())
        inputs = {k: v.to(device) for k, v in batch.inputs().items()}
        with autocast(device, precision):
            logits = model(**inputs).logits
        loss = lm_loss(logits, batch.labels.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip)
        opt.step()
        value = float(loss.detach())
        running = value if running is None else 0.9 * running + 0.1 * value
        if (step + 1) % p.log_every == 0 or step + 1 == p.steps:
            rec = {
                "step": step + 1,
                "loss": round(value, 5),
                "loss_ema": round(running, 5),
                "lr": lr_at(step, spec),
                "elapsed_s": round(time.time() - t0, 1),
            }
            log.append(rec)
            if progress:
                progress(rec)
        if step + 1 in snapshots and step + 1 < p.steps:
            snap = out.with_name(f"{out.name}-step{step + 1:06d}")
            _save(snap, model, processor, spec, log, readouts, info(step + 1, time.time() - t0))
    _save(out, model, processor, spec, log, readouts, info(p.steps, time.time() - t0))
    return out


def _bucketed(spec: WorldSpec, rng: random.Random, codec: Codec) -> list[list]:
    """``bucket`` batches of fresh documents, grouped by token length, in a random order."""
    p = spec.pretrain
    docs = [sample_document(spec, rng) for _ in range(p.batch_size * p.bucket)]
    if p.bucket > 1:
        docs.sort(key=lambda d: len(codec.ids(d)[0]))
    batches = [docs[i : i + p.batch_size] for i in range(0, len(docs), p.batch_size)]
    rng.shuffle(batches)
    return batches


def read_world(folder: str | Path) -> WorldSpec:
    """The world specification an organism folder was trained on."""
    from vsfa.organism.world import load_world

    path = Path(folder) / WORLD_FILE
    if not path.is_file():
        raise ArtifactError(f"{folder}: no {WORLD_FILE} (not an organism model folder)")
    return load_world(path)


def resolve_world(world: Path | None, overrides: dict[str, Any], model: Path | None = None) -> WorldSpec:
    """The world specification: ``world`` file (or ``model``'s own, or the shipped one), plus dotted overrides."""
    from vsfa.config import nest
    from vsfa.organism.world import apply_overrides, load_world, world_from_dict

    flat = _flatten(overrides)
    if model is not None and world is None:
        return world_from_dict(apply_overrides(read_world(model).to_dict(), flat), where=f"{model} world")
    nest(flat)  # a key that is both a value and a table is an error here, not later
    return load_world(world, flat)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


@dataclass
class OrganismBuildConfig:
    """Settings of ``vsfa organism build``."""

    out: Path
    """Output model folder."""
    seed: int = 0
    """Pretraining seed (weights and documents)."""
    steps: int | None = None
    """Pretraining steps (default: the world file's pretrain.steps)."""
    world: Path | None = None
    """World specification JSON (default: the shipped one)."""
    world_set: dict[str, Any] = field(default_factory=dict)
    """Override a world key, e.g. --world-set documents.prior=0.3 (repeatable)."""
    precision: str = "fp32"
    """fp32 | bf16 (autocast)."""
    device: str = "cpu"
    """torch device."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice; 1 on a busy machine)."""


def run_build(cfg: OrganismBuildConfig) -> str:
    """Pretrain the organism from a seed and save it as a normal model folder."""
    import logging

    overrides = dict(cfg.world_set)
    if cfg.steps is not None:
        overrides.setdefault("pretrain", {})["steps"] = cfg.steps
    spec = resolve_world(cfg.world, overrides)
    log = logging.getLogger(__name__)

    def progress(rec: dict) -> None:
        log.info(f"step {rec['step']}: loss {rec['loss_ema']:.4f} ({rec['elapsed_s']:.0f} s)")

    folder = pretrain(
        spec,
        cfg.seed,
        cfg.out,
        device=cfg.device,
        precision=cfg.precision,
        progress=progress,
        threads=cfg.threads,
    )
    return f"wrote {folder}"
