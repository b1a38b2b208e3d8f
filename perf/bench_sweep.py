"""Checkpoint sweep: per-checkpoint cost of capturing K LoRA checkpoints vs one capture pass of the base.

A study captures the same prompts on the base and on every checkpoint of every run. The baseline, measured in
the same run, is one capture pass of the base model already in memory (``capture_set``: render, encode, hooked
forward, position reduction, shards, manifest): the median of passes taken before, between and after the
sweeps, so that a shared machine's changing load hits baseline and sweeps alike. Two sweeps over the same K checkpoints are timed whole, model
loading included:

* ``reload``: per checkpoint ``load_vlm(base, adapter=...)`` (the base read from disk every time; how
  ``vsfa eval --run`` and ``vsfa track`` worked before);
* ``swap``: :class:`vsfa.models.loading.AdapterSwitcher` (the base read once, adapters hot-swapped with peft).

Reported: (sweep seconds / K) / base pass seconds for each (goal <= 1.2 for ``swap``). Both sweeps must give
identical activations (``torch.equal`` on every stored tensor); the script fails otherwise.

    python perf/bench_sweep.py                      # a random-weight LLaVA (d=512, 8 layers) on CPU, K=8
    python perf/bench_sweep.py --model PATH --device cuda --dtype bfloat16 --n 256 --batch-size 32

``measure_sweep(model, k, n, device, dtype)`` is the measure as a function (``vsfa bench`` calls it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from vsfa.perf.capture import prompts  # noqa: E402  (after the path and environment above)
from vsfa.perf.common import syncer  # noqa: E402

NAME = "checkpoint sweep per ckpt / base pass"
GOAL = 1.2


def build_bench_model(out: Path, hidden: int = 512, layers: int = 8) -> Path:
    """A random-weight LLaVA with a bigger language model than the test one (the forward, not Python, dominates)."""
    from vsfa.models.tiny import save_tiny

    text = dict(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers)
    text |= dict(num_attention_heads=8, num_key_value_heads=8, head_dim=hidden // 8)
    return save_tiny("llava", out / "model", text=text)


def make_adapters(base: Path, k: int, out: Path, rank: int = 8, seed: int = 0) -> list[Path]:
    """``k`` random LoRA checkpoints of ``base`` on the family's language-model projections (nonzero B)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from vsfa.models.loading import load_vlm

    vlm = load_vlm(base)
    regex = vlm.family.lora_target_regex
    paths = []
    for i in range(k):
        torch.manual_seed(seed + i)
        cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=regex, init_lora_weights=False)
        model = get_peft_model(vlm.hf_model, cfg)
        paths.append(out / f"step-{i + 1:06d}")
        model.save_pretrained(paths[-1])
        model.unload()  # the base modules back for the next checkpoint
    return paths


def _capture(hooked, cset, out: Path, batch_size: int):
    from probes.capture import CaptureSpec, capture_set

    shutil.rmtree(out, ignore_errors=True)
    return capture_set(
        hooked, cset, out, CaptureSpec(positions=("last",)), batch_size=batch_size, progress=False
    )


def _sweep(
    load, adapters: list[Path], cset, out: Path, batch_size: int, device: str
) -> tuple[float, float, list]:
    """Seconds to load (``load(adapter)`` -> LoadedVLM) and capture every checkpoint, the loading part of them,
    and the stores."""
    from probes.hooked import HookedVLM

    stores = []
    loading = 0.0
    syncer(device)()
    t0 = time.perf_counter()
    for i, adapter in enumerate(adapters):
        t1 = time.perf_counter()
        hooked = HookedVLM(load(adapter), backend="torch")
        syncer(device)()
        loading += time.perf_counter() - t1
        stores.append(_capture(hooked, cset, out / f"ckpt-{i}", batch_size))
        del hooked
    syncer(device)()
    return time.perf_counter() - t0, loading, stores


def _same(a, b) -> bool:
    import torch

    return all(
        torch.equal(torch.as_tensor(a.load(h, p)), torch.as_tensor(b.load(h, p)))
        for h in a.hooks
        for p in a.positions
    )


def measure_sweep(
    model: str | Path | None = None,
    k: int = 8,
    n: int = 64,
    device: str = "cpu",
    dtype: str | None = None,
    batch_size: int = 16,
    repeats: int = 1,
    quick: bool = False,
) -> dict[str, Any]:
    """Per-checkpoint sweep cost / one base capture pass, swapping adapters vs reloading the base.

    ``model``: a model folder (default: a random-weight LLaVA, d=512, 8 layers, built in a temp folder);
    ``k`` LoRA checkpoints (random, rank 8) are made for it; ``n`` prompts per capture; the baseline is the
    median of ``repeats`` base passes before, between and after the two sweeps. ``quick``: n=16. Returns ``ratio`` (swap), ``ratio_reload`` and the seconds behind them; raises
    AssertionError when the two sweeps' activations differ.
    """
    import torch

    from probes.hooked import HookedVLM
    from vsfa.models.loading import AdapterSwitcher, load_vlm

    if quick:
        n = min(n, 16)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        model = Path(model) if model is not None else build_bench_model(tmp)
        adapters = make_adapters(model, k, tmp / "checkpoints")
        cset = prompts(n)
        syncer(device)()
        t0 = time.perf_counter()
        vlm = load_vlm(model, dtype=dtype, device=device)
        syncer(device)()
        load_s = time.perf_counter() - t0
        hooked = HookedVLM(vlm, backend="torch")
        _capture(hooked, prompts(batch_size), tmp / "warm", batch_size)  # warm-up
        base_times: list[float] = []

        def base_passes(hooked) -> None:
            """``repeats`` timed capture passes of the base (before, between and after the sweeps, so that
            a shared machine's changing load hits baseline and sweeps alike)."""
            for _ in range(repeats):
                syncer(device)()
                t0 = time.perf_counter()
                _capture(hooked, cset, tmp / "base", batch_size)
                syncer(device)()
                base_times.append(time.perf_counter() - t0)

        base_passes(hooked)
        del hooked, vlm
        gc.collect()

        with AdapterSwitcher(model, dtype=dtype, device=device) as switcher:
            swap_s, swap_load_s, swapped = _sweep(
                switcher.load, adapters, cset, tmp / "swap", batch_size, device
            )
            base_loads = switcher.base_loads
            base_passes(HookedVLM(switcher.load(None), backend="torch"))  # the base again, not re-read
        gc.collect()
        reload_s, reload_load_s, reloaded = _sweep(
            lambda a: load_vlm(model, adapter=a, dtype=dtype, device=device),
            adapters,
            cset,
            tmp / "reload",
            batch_size,
            device,
        )
        base_passes(HookedVLM(load_vlm(model, dtype=dtype, device=device), backend="torch"))
        base_s = statistics.median(base_times)
        identical = all(_same(a, b) for a, b in zip(swapped, reloaded, strict=True))
        assert identical, "swapped and reloaded checkpoints gave different activations"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratio, ratio_reload = swap_s / k / base_s, reload_s / k / base_s
    return {
        "name": NAME,
        "ratio": ratio,
        "ratio_reload": ratio_reload,
        "goal": GOAL,
        "detail": (
            f"K={k}, n={n}: swap {ratio:.2f}, reload {ratio_reload:.2f}; base read {base_loads}x; "
            f"loading per ckpt {swap_load_s / k:.2f} s vs {reload_load_s / k:.2f} s"
        ),
        "k": k,
        "n": n,
        "batch_size": batch_size,
        "device": device,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "base_load_s": load_s,
        "base_pass_s": base_s,
        "base_pass_all_s": base_times,
        "sweep_swap_s": swap_s,
        "sweep_reload_s": reload_s,
        "swap_loading_s": swap_load_s,
        "reload_loading_s": reload_load_s,
        "lora_forward_ratio": (swap_s - swap_load_s) / k / base_s,
        "base_loads_swap": base_loads,
        "identical": identical,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="Model folder (default: build a random LLaVA).")
    ap.add_argument("--k", type=int, default=8, help="LoRA checkpoints in the sweep.")
    ap.add_argument("--n", type=int, default=64, help="Prompts per capture.")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument(
        "--repeats", type=int, default=1, help="Base passes before, between and after the sweeps."
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default).")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    res = measure_sweep(
        args.model, args.k, args.n, args.device, args.dtype, batch_size=args.batch_size, repeats=args.repeats
    )
    print(
        f"model {args.model or 'random LLaVA d=512, 8 layers'}, {args.device}, threads {res['threads']}; "
        f"K={res['k']} checkpoints, {res['n']} prompts, batch {res['batch_size']}"
    )
    print(f"{'run':<34}{'seconds':>9}{'per ckpt':>10}{'ratio':>8}{'loading/ckpt':>14}")
    print(f"{'base load (once)':<34}{res['base_load_s']:>9.2f}")
    passes = ", ".join(f"{t:.2f}" for t in res["base_pass_all_s"])
    print(
        f"{'base capture pass (baseline)':<34}{res['base_pass_s']:>9.2f}{'':>10}{1.0:>8.2f}  (passes {passes})"
    )
    for name, key, ratio, loading in (
        ("sweep, reload base per ckpt", "sweep_reload_s", res["ratio_reload"], res["reload_loading_s"]),
        ("sweep, swap adapters", "sweep_swap_s", res["ratio"], res["swap_loading_s"]),
    ):
        per = res[key] / res["k"]
        print(f"{name:<34}{res[key]:>9.2f}{per:>10.2f}{ratio:>8.2f}{loading / res['k']:>14.3f}")
    print(
        f"per-checkpoint cost / base pass: swap {res['ratio']:.2f} (goal <= {GOAL}), reload {res['ratio_reload']:.2f}; "
        f"capture alone on a checkpoint (unmerged LoRA forward): {res['lora_forward_ratio']:.2f}; "
        f"activations identical: {res['identical']}"
    )
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
