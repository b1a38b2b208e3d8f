"""LoRA steps with one competing busy process vs a quiet machine, with torch's default threads and with
:mod:`vsfa.threads`' choice.

Each run is a fresh child process (thread settings are fixed at torch's import) that trains ``steps`` LoRA
steps through ``vsfa train`` on a model of smol-llava's language-model size (random weights: d=576, 30 layers,
9 heads / 3 KV heads, MLP 1536, about 106 M parameters without the embedding; tiny vocabulary and vision tower)
and reports the seconds from the first step to the end of training. The busy process is a Python busy loop
started a few seconds before the child and killed after it. Goal: busy / quiet <= 2 with the toolkit's choice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vsfa.perf.common import Measure, build_llava

SMOL_SHAPE = dict(hidden=576, layers=30, heads=9, kv_heads=3, inter=1536)
QUICK_SHAPE = dict(hidden=128, layers=2, heads=4, kv_heads=2, inter=256)
_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VSFA_THREADS",
    "OMP_WAIT_POLICY",
    "VSFA_THREADS_CHOSEN",
)


def child_train(base: str, data: str, out: str, steps: int, batch: int, mode: str) -> dict[str, Any]:
    """In this fresh process: choose threads by ``mode`` (``auto``: :func:`vsfa.threads.apply_threads`,
    ``default``: torch's own), train ``steps`` LoRA steps, return seconds and the thread count."""
    choice = ""
    if mode == "auto":
        from vsfa.threads import apply_threads

        choice = apply_threads().text()
    import torch
    import transformers

    from vsfa.train import config_from_dict, train

    marks: list[float] = []

    class Clock(transformers.TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if not marks:
                marks.append(time.perf_counter())

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            marks.append(time.perf_counter())

    cfg = config_from_dict(
        {
            "out": out,
            "model": {"base": base},
            "data": {"path": data},
            "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
            "train": {"max_steps": steps, "batch_size": batch, "lr": 2e-4},
            "checkpoints": {"log_until": 0, "every": 0, "final": False},
            "runtime": {"device": "cpu", "progress": False},
        }
    )
    train(cfg, quiet=True, extra_callbacks=[Clock()])
    return {"seconds": marks[-1] - marks[0], "threads": torch.get_num_threads(), "choice": choice}


def _busy_loop() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run_child(args: dict[str, Any], busy: bool, limit_s: float) -> dict[str, Any]:
    """One training child (with a busy-loop process beside it when ``busy``); ``timed_out`` past ``limit_s``."""
    env = {k: v for k, v in os.environ.items() if k not in _THREAD_VARS}
    hog = _busy_loop() if busy else None
    try:
        if hog is not None:
            time.sleep(
                3.0
            )  # the busy process is already running when training starts, as on a shared machine
        cmd = [sys.executable, "-m", "vsfa.perf.load", json.dumps(args)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=limit_s)
        except subprocess.TimeoutExpired:
            return {"seconds": limit_s, "timed_out": True, "threads": None, "choice": ""}
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"training child failed: {proc.stderr.strip().splitlines()[-1:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "timed_out": False}


def measure_load(
    steps: int = 32, batch: int = 2, quick: bool = False, default_limit: float = 4.0
) -> list[Measure]:
    """Busy / quiet time of ``steps`` LoRA steps with the toolkit's thread choice (goal <= 2) and with torch's
    default threads (stopped after ``default_limit`` x its quiet time)."""
    shape = QUICK_SHAPE if quick else SMOL_SHAPE
    with tempfile.TemporaryDirectory(prefix="vsfa-bench-load-") as tmp:
        root = Path(tmp)
        from vsfa.perf.train import train_data

        base = build_llava(root / "model", **shape)
        data = train_data(root / "data", n_images=16, size=32)
        args = {
            "base": str(base),
            "data": str(data),
            "steps": steps,
            "batch": batch,
        }
        res: dict[str, dict[str, Any]] = {}
        for mode in ("auto", "default"):
            quiet = run_child({**args, "mode": mode, "out": str(root / f"{mode}-quiet")}, False, 3600)
            limit = 3600 if mode == "auto" else max(30.0, default_limit * quiet["seconds"])
            busy = run_child({**args, "mode": mode, "out": str(root / f"{mode}-busy")}, True, limit)
            res[mode] = {"quiet": quiet, "busy": busy}
    rows = []
    size = "smol-llava LM size (d=576, 30 layers)" if not quick else "quick (d=128, 2 layers)"
    for mode, label, goal in (
        ("auto", "vsfa thread choice", 2.0),
        ("default", "torch default threads", None),
    ):
        q, b = res[mode]["quiet"], res[mode]["busy"]
        ratio = b["seconds"] / q["seconds"]
        more = " (stopped: at least this)" if b["timed_out"] else ""
        threads = f"threads quiet {q['threads']}, busy {b['threads'] if b['threads'] is not None else '?'}"
        rows.append(
            Measure(
                f"LoRA {steps} steps busy / quiet, {label}",
                ratio,
                goal,
                detail=f"{size}, batch {batch}: quiet {q['seconds']:.1f} s, one busy process "
                f"{b['seconds']:.1f} s{more}; {threads}",
                numbers=res[mode],
            )
        )
    return rows


if __name__ == "__main__":  # the training child: one JSON argument, one JSON line out
    from vsfa.env import apply_offline_defaults

    apply_offline_defaults()
    print(json.dumps(child_train(**json.loads(sys.argv[1]))))
