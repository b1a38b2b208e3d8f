"""Step time of ``vsfa train`` (HF Trainer path) vs a minimal hand-written peft loop on the same batches.

Both train the same LoRA on the same model with the same optimizer, schedule, clipping and the very batches the
Trainer drew (recorded by its collator and replayed by the hand loop). Runs alternate (vsfa, hand, vsfa, ...)
so machine load hits both alike. A ``vsfa train`` step is timed between consecutive step starts (data loading,
forward, backward, optimizer, logging, callbacks), leaving out the steps that write a checkpoint.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from vsfa.perf.common import Measure, build_llava, syncer


def train_data(folder: Path, n_images: int = 40, size: int = 32) -> Path:
    """A small neutral-VQA data folder on procedural images."""
    from vsfa.data.build import build_variants

    return build_variants(folder, ["image"], procedural=n_images, procedural_size=size) / "image"


def run_vsfa(base: Path, data: Path, out: Path, steps: int, batch: int, device: str):
    """One ``vsfa train`` run; returns (step times without checkpoint steps, the batches it drew)."""
    import transformers

    from vsfa.train import config_from_dict, train
    from vsfa.training import collate

    cfg = config_from_dict(
        {
            "out": str(out),
            "model": {"base": str(base)},
            "data": {"path": str(data)},
            "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
            "train": {"max_steps": steps, "batch_size": batch, "lr": 2e-4, "warmup": 0.1},
            "checkpoints": {"log_until": 4, "every": 0, "final": True},
            "runtime": {"device": device, "progress": False},
        }
    )
    starts: list[float] = []
    saved: set[int] = set()
    sync = syncer(device)

    class Clock(transformers.TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            sync()
            starts.append(time.perf_counter())

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            saved.add(state.global_step)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            starts.append(time.perf_counter())

    batches: list[dict] = []
    original = collate.PaddingCollator.__call__

    def recording(self: Any, items: Any) -> Any:
        out_ = original(self, items)
        batches.append(out_)
        return out_

    collate.PaddingCollator.__call__ = recording
    try:
        train(cfg, quiet=True, extra_callbacks=[Clock()])
    finally:
        collate.PaddingCollator.__call__ = original
    durations = [b - a for a, b in zip(starts[:-1], starts[1:], strict=True)]
    return [d for i, d in enumerate(durations, 1) if i not in saved and i > 2], batches


def run_hand(base: Path, batches: list[dict], device: str) -> list[float]:
    """The minimal loop: peft LoRA, AdamW, cosine warm-up schedule, clip 1.0, on the recorded batches."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import get_cosine_schedule_with_warmup, set_seed

    from vsfa.models.loading import load_vlm

    vlm = load_vlm(base, device=device)
    set_seed(0)
    model = get_peft_model(
        vlm.hf_model,
        LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=vlm.family.lora_target_regex),
    )
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, int(0.1 * len(batches) + 0.999), len(batches))
    sync = syncer(device)
    times = []
    for i, batch in enumerate(batches):
        sync()
        t0 = time.perf_counter()
        inputs = {k: v.to(device) for k, v in batch.items()}
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # the Trainer logs every step, which syncs too
        sync()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return times


def measure_train(
    steps: int = 30, rounds: int = 3, batch: int = 4, hidden: int = 384, layers: int = 6, device: str = "cpu"
) -> Measure:
    """Median ``vsfa train`` step / median hand-loop step on the same batches (goal <= 1.05)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="vsfa-bench-train-") as tmp:
        root = Path(tmp)
        base = build_llava(root / "model", hidden, layers, heads=max(4, hidden // 64))
        data = train_data(root / "data")
        vsfa_steps, hand_steps = [], []
        for r in range(rounds):
            plain, batches = run_vsfa(base, data, root / f"run{r}", steps, batch, device)
            vsfa_steps += plain
            hand_steps += run_hand(base, batches, device)
    v, h = statistics.median(vsfa_steps), statistics.median(hand_steps)
    return Measure(
        "vsfa train step / peft loop step",
        v / h,
        1.05,
        detail=f"LLaVA d={hidden} x {layers} layers, LoRA r=16, batch {batch}, {steps} steps x {rounds}: "
        f"{v * 1e3:.0f} vs {h * 1e3:.0f} ms",
        numbers={"vsfa_s": vsfa_steps, "hand_s": hand_steps},
    )
