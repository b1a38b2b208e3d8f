"""Fine-tune arms on the organism: training data files, and the organism's LoRA / full fine-tune with readouts.

:func:`write_arm_data` writes an arm's documents as chat-messages JSONL (one record per conversation, images as
PNG files beside it) that the training stage reads like any VQA data set. :func:`finetune` is the organism's
research run, trained by the one training loop (:func:`vsfa.training.loop.run_loop`): its batch source is an
endless stream of fresh arm documents, its loss the organism's next-token loss on the assistant tokens, and its
readouts a callback every ``eval_every`` steps (and at steps 0 and the last) that appends to ``trajectory.jsonl``.
It trains a LoRA adapter (peft, the family's language-model regex or the world's ``finetune.lora_layers`` /
``lora_modules``; the vision tower and projector stay frozen) or the whole language model, with constant-lr AdamW,
no weight decay and no gradient clipping. In LoRA mode each evaluated step is a checkpoint
``checkpoints/step-NNNNNN/`` written by the loop (the one layout of :mod:`vsfa.training.checkpoints`), and an
interrupted run resumes where it stopped.

Run folder: the loop's files (``identity.json``, ``loss.jsonl``, ``checkpoints/``, ``state/``, ``manifest.json``)
plus ``trajectory.jsonl`` (one readout record per evaluated step: ``step``, ``loss``, ``elapsed_s``,
``readouts``) and ``config.json`` (the fine-tune settings, the base, ``wall_s``; written when training ends).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tempfile
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
    read_jsonl,
    sha256_file,
    write_json_atomic,
    write_manifest,
    write_text_atomic,
)
from vsfa.organism.documents import ARMS, arm_document
from vsfa.organism.model import Codec, lm_loss
from vsfa.organism.pretrain import autocast, read_world, torch_threads
from vsfa.organism.world import WorldSpec

MODES = ("lora", "full")
DEFAULT_EVAL_SETS = ("harmful", "harmless", "care_ctx", "threat_main", "neutral_ctx")
TRAJECTORY = "trajectory.jsonl"


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


class DocumentStream(torch.utils.data.IterableDataset):
    """Endless fine-tune documents of ``arm``, in the same order on every pass (so a resumed run replays it)."""

    def __init__(self, spec: WorldSpec, arm: str, seed: int):
        self.spec, self.arm, self.seed = spec, arm, seed

    def __iter__(self):
        rng = random.Random(f"organism-finetune:{self.arm}:{self.seed}")
        while True:
            yield arm_document(self.spec, rng, self.arm)


class DocumentCollator:
    """A list of documents -> the teacher-forcing batch (inputs + ``labels``) of :class:`Codec`."""

    def __init__(self, codec: Codec):
        self.codec = codec

    def __call__(self, docs: list) -> dict[str, torch.Tensor]:
        batch = self.codec.batch(docs)
        return {**batch.inputs(), "labels": batch.labels}


def stream_hash(spec: WorldSpec, arm: str, seed: int) -> str:
    """Content key of the generated document stream (world, arm, seed)."""
    key = {"stream": "organism-finetune", "world_digest": spec.digest(), "arm": arm, "seed": seed}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


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
    """Fine-tune organism ``base`` (a folder or a model source such as ``organism``, see
    :mod:`vsfa.models.sources`) on ``arm`` and return the readout trajectory (one record per evaluated step).

    With ``out``, the run folder (see the module docstring) is written there; rerunning on a complete folder
    returns its trajectory without training, on an interrupted one resumes. Without ``out`` nothing is kept.
    ``spec`` defaults to the base's own world file (its ``finetune`` block gives the defaults for steps, lr, LoRA
    rank, batch size). ``threads`` sets torch's CPU threads for the run.
    """
    if arm not in ARMS:
        raise ConfigError(f"unknown arm {arm!r}; choose one of: {', '.join(ARMS)}")
    if mode not in MODES:
        raise ConfigError(f"unknown fine-tune mode {mode!r}; choose one of: {', '.join(MODES)}")
    autocast("cpu", precision)  # checks the name before anything is loaded
    check_counts("organism finetune", eval_every=eval_every)
    with torch_threads(threads), tempfile.TemporaryDirectory(prefix="vsfa-finetune-") as tmp:
        run_dir = (
            Path(out) if out is not None else Path(tmp) / "run"
        )  # without out: no checkpoints, nothing kept
        return _finetune(
            base,
            arm,
            seed,
            run_dir,
            steps,
            lr,
            mode,
            eval_every,
            eval_sets,
            precision,
            spec,
            progress,
            out is not None,
        )


def _finetune(
    base, arm, seed, out: Path, steps, lr, mode, eval_every, eval_sets, precision, spec, progress, keep
):
    from vsfa.models.loading import load_vlm
    from vsfa.models.sources import resolve_model
    from vsfa.organism.readouts import evaluate
    from vsfa.train import Job, OptimSection, checkpoint_meta, run_loop, truncate_jsonl

    base = resolve_model(base)
    spec = spec or read_world(base)
    ft = spec.finetune
    steps = ft.steps if steps is None else steps
    lr = ft.lr if lr is None else lr
    check_counts("organism finetune", steps=steps)
    config = {"arm": arm, "seed": seed, "steps": steps, "lr": lr, "mode": mode, "precision": precision}
    config |= {"lora_r": ft.lora_r, "lora_alpha": ft.lora_alpha, "batch_size": ft.batch_size}
    config |= {"lora_layers": ft.lora_layers, "lora_modules": ft.lora_modules}
    fingerprint = model_fingerprint(base)
    data_hash = stream_hash(spec, arm, seed)
    ident = {
        "config": {**config, "eval_every": eval_every, "eval_sets": list(eval_sets), "world": spec.digest()},
        "data_hash": data_hash,
        "base_model_fingerprint": fingerprint,
    }
    traj_file = out / TRAJECTORY
    t0 = time.time()  # reset once the model is ready: elapsed_s counts from there

    def build(run_state):
        from transformers import TrainerCallback

        nonlocal t0
        vlm = load_vlm(base)
        torch.manual_seed(seed)  # the adapter's initialisation
        model = _trainable(
            vlm, mode, ft.lora_r, ft.lora_alpha, lora_targets(vlm, ft.lora_layers, ft.lora_modules)
        )
        vlm = replace(vlm, model=model)
        codec = Codec(spec, vlm.tokenizer)
        truncate_jsonl(traj_file, run_state.resume_step)
        trajectory = read_jsonl(traj_file) if run_state.resume_step else []
        last = {"loss": float("nan")}
        t0 = time.time()

        def loss_fn(model, batch):
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            with autocast("cpu", precision):
                logits = model(**inputs).logits
            loss = lm_loss(logits, batch["labels"])
            last["loss"] = round(float(loss.detach()), 5)
            return loss

        def readout(step: int) -> None:
            model.eval()
            rec = {"step": step, "loss": last["loss"], "elapsed_s": round(time.time() - t0, 1)}
            rec["readouts"] = evaluate(vlm, spec, sets=eval_sets, items=True)
            trajectory.append(rec)
            if progress:
                progress(rec)
            out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(traj_file, "".join(json.dumps(r) + "\n" for r in trajectory))
            model.train()

        class Readouts(TrainerCallback):
            """Readouts at step 0, every ``eval_every`` steps and the last; ``config.json`` at the end."""

            def on_train_begin(self, args, state, control, **kw):
                if state.global_step == 0:
                    readout(0)

            def on_step_end(self, args, state, control, **kw):
                if state.global_step % eval_every == 0 or state.global_step == steps:
                    readout(state.global_step)

            def on_train_end(self, args, state, control, **kw):
                wall = round(time.time() - t0, 1)
                write_json_atomic(
                    out / "config.json", {**config, "base": absolute_path(base), "wall_s": wall}
                )

        evaluated = sorted({s for s in range(eval_every, steps + 1, eval_every)} | {steps})
        return Job(
            model=model,
            dataset=DocumentStream(spec, arm, seed),
            collator=DocumentCollator(codec),
            steps=steps,
            schedule=evaluated if mode == "lora" and keep else [],
            # the organism's optimiser: AdamW at a constant lr, no weight decay, no clipping, one batch per step
            optim=OptimSection(
                batch_size=ft.batch_size,
                lr=lr,
                scheduler="constant",
                warmup=0.0,
                weight_decay=0.0,
                max_grad_norm=0.0,
            ),
            meta=checkpoint_meta(
                base_model=absolute_path(base),
                base_model_fingerprint=fingerprint,
                family=vlm.family.name,
                data=f"organism arm {arm} (generated on the fly, seed {seed})",
                data_hash=data_hash,
                seed=seed,
                total_steps=steps,
                config=config,
                arm=arm,
            ),
            seed=seed,
            loss_fn=loss_fn,
            callbacks=[Readouts()],
            progress=False,
            run_info={"documents": steps * ft.batch_size, "world": spec.name, "world_digest": spec.digest()},
            describe=f"organism arm {arm}",
        )

    run_loop(out, ident, build, quiet=True)
    return read_jsonl(traj_file)


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
