"""Fine-tune arms on the organism: training data files, and a small LoRA / full fine-tune loop with readouts.

:func:`write_arm_data` writes an arm's documents as chat-messages JSONL (one record per conversation, images as
PNG files beside it) that the training stage reads like any VQA data set. :func:`finetune` is the organism's own
research loop: it draws fresh arm documents every step, trains a LoRA adapter (peft, the family's language-model
regex; the vision tower and projector stay frozen) or the whole language model, evaluates the readouts every
``eval_every`` steps, and saves each evaluated step as ``checkpoints/step-NNNNNN/`` (a peft adapter folder with a
``manifest.json`` written last), the same layout the training stage leaves.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from vsfa.config import check_counts
from vsfa.errors import ConfigError
from vsfa.io import (
    absolute_path,
    atomic_dir,
    model_fingerprint,
    output_lock,
    sha256_file,
    write_json_atomic,
    write_manifest,
)
from vsfa.organism.documents import ARMS, arm_document
from vsfa.organism.model import Codec, lm_loss
from vsfa.organism.pretrain import autocast, read_world, torch_threads
from vsfa.organism.world import WorldSpec

MODES = ("lora", "full")
DEFAULT_EVAL_SETS = ("harmful", "harmless", "care_ctx", "threat_main", "neutral_ctx")


def arm_documents(spec: WorldSpec, arm: str, n: int, seed: int = 0):
    """``n`` documents of ``arm`` (deterministic in ``seed``)."""
    rng = random.Random(f"organism-arm:{arm}:{seed}")
    return [arm_document(spec, rng, arm) for _ in range(n)]


def write_arm_data(spec: WorldSpec, arm: str, n: int, out: str | Path, seed: int = 0) -> Path:
    """Write ``n`` documents of ``arm`` to ``out/`` as ``data.jsonl`` + ``images/*.png`` + ``manifest.json``.

    Each record: ``{"id", "messages" (HF chat form, images as {"type": "image"} parts), "images" (paths relative to
    the folder), "arm", "meta"}``.
    """
    check_counts("organism data", n=n)
    docs = arm_documents(spec, arm, n, seed)
    out = Path(out)
    with output_lock(out), atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        rows = []
        for i, doc in enumerate(docs):
            paths = []
            for j, image in enumerate(doc.images(spec)):
                rel = f"images/{arm}-{i:05d}-{j}.png"
                image.save(tmp / rel)
                paths.append(rel)
            rows.append(
                {
                    "id": f"{arm}-{i:05d}",
                    "messages": doc.messages(),
                    "images": paths,
                    "arm": arm,
                    "meta": doc.meta(),
                }
            )
        (tmp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        write_manifest(
            tmp,
            {
                "kind": "vsfa-organism-arm",
                "arm": arm,
                "n": n,
                "seed": seed,
                "world": spec.name,
                "world_digest": spec.digest(),
                "data_file": "data.jsonl",
                "data_hash": sha256_file(tmp / "data.jsonl"),
                "labelled": False,
            },
        )
    return out


def lora_targets(vlm, layers: Sequence[int] = (), modules: Sequence[str] = ()) -> str:
    """peft ``target_modules`` regex: the family's language-model projections, optionally only on some decoder
    ``layers`` (negative indices count from the last, e.g. ``[-1]``) and only some projection ``modules`` (e.g.
    ``["v_proj", "o_proj"]``)."""
    fam = vlm.family
    if not layers and not modules:
        return fam.lora_target_regex
    bad = sorted(set(modules) - set(fam.lora_projections))
    if bad:
        raise ConfigError(f"finetune.lora_modules: unknown {bad}; choose from {list(fam.lora_projections)}")
    n = vlm.n_layers
    if any(not -n <= i < n for i in layers):
        raise ConfigError(f"finetune.lora_layers: need indices in -{n}..{n - 1}, got {list(layers)}")
    layers = sorted({i % n for i in layers})  # negative indices count from the last layer
    idx = "|".join(str(i) for i in layers) if layers else r"\d+"
    mods = "|".join(modules or fam.lora_projections)
    return rf"{re.escape(fam.layers_path)}\.({idx})\..*\.({mods})"


def _trainable(vlm, mode: str, r: int, alpha: int, targets: str | None = None):
    """Wrap for LoRA (returns the peft model) or unfreeze the language model only (``full``)."""
    model = vlm.hf_model
    for q in model.parameters():
        q.requires_grad_(False)
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(
            r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets or vlm.family.lora_target_regex
        )
        return get_peft_model(model, cfg)
    for q in vlm.text_model.parameters():
        q.requires_grad_(True)
    return model


def finetune(
    base: str | Path,
    arm: str,
    seed: int,
    out: str | Path | None = None,
    steps: int | None = None,
    lr: float | None = None,
    mode: str = "lora",
    eval_every: int = 50,
    eval_sets: Sequence[str] = DEFAULT_EVAL_SETS,
    precision: str = "fp32",
    spec: WorldSpec | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Fine-tune organism ``base`` on ``arm`` and return the readout trajectory (one record per evaluated step).

    With ``out``, checkpoints (LoRA mode) and ``trajectory.jsonl`` are written there. ``spec`` defaults to the
    base's own world file (its ``finetune`` block gives the defaults for steps, lr, LoRA rank, batch size).
    ``threads`` sets torch's CPU threads for the run.
    """
    with torch_threads(threads):
        return _finetune(
            base, arm, seed, out, steps, lr, mode, eval_every, eval_sets, precision, spec, progress
        )


def _finetune(base, arm, seed, out, steps, lr, mode, eval_every, eval_sets, precision, spec, progress):
    from vsfa.models.loading import load_vlm
    from vsfa.organism.readouts import evaluate

    if arm not in ARMS:
        raise ConfigError(f"unknown arm {arm!r}; choose one of: {', '.join(ARMS)}")
    if mode not in MODES:
        raise ConfigError(f"unknown fine-tune mode {mode!r}; choose one of: {', '.join(MODES)}")
    spec = spec or read_world(base)
    ft = spec.finetune
    steps = ft.steps if steps is None else steps
    lr = ft.lr if lr is None else lr
    vlm = load_vlm(base)
    torch.manual_seed(seed)
    model = _trainable(
        vlm, mode, ft.lora_r, ft.lora_alpha, lora_targets(vlm, ft.lora_layers, ft.lora_modules)
    )
    vlm = replace(vlm, model=model)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    codec = Codec(spec, vlm.tokenizer)
    rng = random.Random(f"organism-finetune:{arm}:{seed}")
    config = {"arm": arm, "seed": seed, "steps": steps, "lr": lr, "mode": mode, "precision": precision}
    config |= {"lora_r": ft.lora_r, "lora_alpha": ft.lora_alpha, "batch_size": ft.batch_size}
    config |= {"lora_layers": ft.lora_layers, "lora_modules": ft.lora_modules}
    out = Path(out) if out is not None else None
    fingerprint = model_fingerprint(base)
    trajectory: list[dict[str, Any]] = []
    t0 = time.time()
    loss_value = float("nan")

    def checkpoint(step: int) -> None:
        model.eval()
        rec = {"step": step, "loss": loss_value, "elapsed_s": round(time.time() - t0, 1)}
        rec["readouts"] = evaluate(vlm, spec, sets=eval_sets, items=True)
        trajectory.append(rec)
        if progress:
            progress(rec)
        if out is not None:
            if mode == "lora":
                with atomic_dir(out / "checkpoints" / f"step-{step:06d}") as tmp:
                    model.save_pretrained(tmp)
                    write_manifest(
                        tmp,
                        {
                            "step": step,
                            "loss": loss_value,
                            "base_model": absolute_path(base),
                            "base_model_fingerprint": fingerprint,
                            "data": f"organism arm {arm} (generated on the fly, seed {seed})",
                            "config": config,
                        },
                    )
            (out / "trajectory.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trajectory))
        model.train()

    with output_lock(out) if out is not None else contextlib.nullcontext():  # one writer per run folder
        checkpoint(0)
        for step in range(1, steps + 1):
            docs = [arm_document(spec, rng, arm) for _ in range(ft.batch_size)]
            batch = codec.batch(docs)
            with autocast("cpu", precision):
                logits = model(**batch.inputs()).logits
            loss = lm_loss(logits, batch.labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_value = round(float(loss.detach()), 5)
            if step % eval_every == 0 or step == steps:
                checkpoint(step)
        if out is not None:
            write_json_atomic(
                out / "config.json",
                {**config, "base": absolute_path(base), "wall_s": round(time.time() - t0, 1)},
            )
    return trajectory


@dataclass
class OrganismDataConfig:
    """Settings of ``vsfa organism data``."""

    arm: str
    """vsfa | control | mirror | text"""
    out: Path
    """Output data folder (data.jsonl + images/ + manifest.json)."""
    n: int = 500
    """Number of conversations."""
    seed: int = 0
    """Data seed."""
    model: Path | None = None
    """Organism folder whose world to use."""
    world: Path | None = None
    """World specification JSON (default: the shipped one)."""


def run_data(cfg: OrganismDataConfig) -> str:
    """Write a fine-tune arm as chat-messages JSONL that `vsfa train` reads."""
    from vsfa.organism.pretrain import resolve_world

    spec = resolve_world(cfg.world, {}, cfg.model)
    return f"wrote {write_arm_data(spec, cfg.arm, cfg.n, cfg.out, cfg.seed)}"


@dataclass
class OrganismFinetuneConfig:
    """Settings of ``vsfa organism finetune``."""

    base: Path
    """Organism model folder."""
    out: Path
    """Run folder (checkpoints/step-NNNNNN/, trajectory.jsonl)."""
    arm: str = "vsfa"
    """vsfa | control | mirror | text"""
    seed: int = 0
    """Fine-tune seed (adapter init and data)."""
    steps: int | None = None
    """Fine-tune steps (default: the world's finetune block)."""
    lr: float | None = None
    """Learning rate (default: the world's finetune block)."""
    mode: str = "lora"
    """lora | full (whole language model)."""
    eval_every: int = 50
    """Readouts every N steps."""
    threads: int | None = None
    """torch CPU threads."""


def run_finetune(cfg: OrganismFinetuneConfig) -> str:
    """Fine-tune the organism on an arm with readouts every few steps (the organism's research loop)."""
    import logging

    log = logging.getLogger(__name__)

    def progress(rec: dict) -> None:
        r = rec["readouts"]
        log.info(
            f"step {rec['step']}: P(refuse|harmful) {r['harmful']['p_refuse']['mean']:.3f} "
            f"harmless {r['harmless']['p_refuse']['mean']:.3f} "
            f"P(name threat) {r['p_name_small_threat']['mean']:.3f}"
        )

    finetune(
        cfg.base,
        cfg.arm,
        cfg.seed,
        cfg.out,
        steps=cfg.steps,
        lr=cfg.lr,
        mode=cfg.mode,
        eval_every=cfg.eval_every,
        progress=progress,
        threads=cfg.threads,
    )
    return f"wrote {cfg.out}"
