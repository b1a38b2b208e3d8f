"""Step time of ``vsfa train`` (HF Trainer path) vs a minimal hand-written peft loop on the same batches.

Both train the same LoRA on the same model (a small LLaVA built from a config, ~25 M parameters, so a step is
compute-bound as on a real VLM), with the same optimizer, schedule, clipping and the very batches the Trainer
drew (recorded by its collator and replayed by the hand loop). Runs alternate (vsfa, hand, vsfa, hand, ...) so
machine load hits both alike. The step time of ``vsfa train`` is measured between consecutive step starts
(data loading, forward, backward, optimizer, logging, callbacks), leaving out the steps that write a checkpoint;
checkpoint cost is printed separately.

    python perf/bench_train.py [--steps 30] [--rounds 3] [--device cpu|cuda] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file


def build_model(folder: Path, hidden: int, layers: int) -> Path:
    """A small LLaVA (tiny processor/tokenizer, bigger language model) saved like a real checkpoint."""
    from vsfa.models.tiny import save_tiny

    heads = max(4, hidden // 64)
    text = dict(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers)
    text |= dict(num_attention_heads=heads, num_key_value_heads=heads, head_dim=hidden // heads)
    return save_tiny("llava", folder, text=text)


def run_vsfa(base: Path, data: Path, out: Path, steps: int, batch: int, device: str):
    """One ``vsfa train`` run; returns (per-step times without checkpoint steps, checkpoint-step times, batches)."""
    from transformers import TrainerCallback

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

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            starts.append(time.perf_counter())

        def on_save(self, args, state, control, **kw):
            saved.add(state.global_step)

        def on_train_end(self, args, state, control, **kw):
            starts.append(time.perf_counter())

    batches: list[dict] = []
    original = collate.PaddingCollator.__call__

    def recording(self, items):
        out_ = original(self, items)
        batches.append(out_)
        return out_

    collate.PaddingCollator.__call__ = recording
    try:
        train(cfg, quiet=True, extra_callbacks=[Clock()])
    finally:
        collate.PaddingCollator.__call__ = original
    durations = [b - a for a, b in zip(starts[:-1], starts[1:], strict=True)]
    plain = [d for i, d in enumerate(durations, 1) if i not in saved and i > 2]
    ckpt = [d for i, d in enumerate(durations, 1) if i in saved and i > 2]
    return plain, ckpt, batches


def run_hand(base: Path, batches: list[dict], device: str) -> list[float]:
    """The minimal loop: peft LoRA, AdamW, cosine warm-up schedule, clip 1.0, on the recorded batches."""
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
    times = []
    for i, batch in enumerate(batches):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        inputs = {k: v.to(device) for k, v in batch.items()}
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # the Trainer logs every step, which syncs too
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU torch threads (1: oversubscribed OpenMP threads on a "
        "shared machine make timings noise; 0 = torch's default)",
    )
    args = ap.parse_args()
    if args.device == "cpu" and args.threads > 0:
        torch.set_num_threads(args.threads)

    from transformers.utils import logging as hf_logging

    from vsfa.data.build import build_variants

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="vsfa-bench-") as tmp:
        root = Path(tmp)
        base = build_model(root / "model", args.hidden, args.layers)
        n_params = sum(t.numel() for t in load_file(base / "model.safetensors").values())
        data = build_variants(root / "data", ["image"], procedural=40, procedural_size=32) / "image"
        vsfa_steps, ckpt_steps, hand_steps = [], [], []
        for r in range(args.rounds):
            plain, ckpt, batches = run_vsfa(base, data, root / f"run{r}", args.steps, args.batch, args.device)
            vsfa_steps += plain
            ckpt_steps += ckpt
            hand_steps += run_hand(base, batches, args.device)
        v, h = statistics.median(vsfa_steps), statistics.median(hand_steps)
        print(
            f"model: small LLaVA, {n_params / 1e6:.1f} M parameters, LoRA r=16 on the language model; "
            f"batch {args.batch}, {args.steps} steps x {args.rounds} rounds on {args.device}, "
            f"torch threads {torch.get_num_threads()}"
        )
        print(
            f"vsfa train   median step {v * 1e3:8.2f} ms  (n={len(vsfa_steps)}, steps writing a checkpoint "
            f"excluded: median {statistics.median(ckpt_steps) * 1e3:.2f} ms)"
            if ckpt_steps
            else ""
        )
        print(f"hand loop    median step {h * 1e3:8.2f} ms  (n={len(hand_steps)})")
        print(f"ratio vsfa/hand = {v / h:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
