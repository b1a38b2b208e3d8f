"""Capture throughput and memory: ``probes.capture`` vs a bare HF forward with ``output_hidden_states``.

Both sides run the same prompts in the same batches (same encoding, left padding). The baseline is what a
user would write by hand: ``model(**batch, output_hidden_states=True, use_cache=False)`` and the last-token
state of every layer copied to the CPU (nothing written to disk). The capture side is the whole
``capture_set`` call (render, encode, hooked forward, position reduction, safetensors shards, index,
manifest). Runs alternate and the median of ``--repeats`` is reported, with the ratio (target <= 1.10).

Memory: peak resident memory during the capture of N and of 10N prompts, each in a fresh process after the model
is loaded and warmed up (GPU: peak allocated memory). The difference is what grows with N; it should be near
zero (streamed shards). The children run with ``MALLOC_MMAP_THRESHOLD_=131072`` so that RSS tracks live memory
rather than glibc arena fragmentation (without it, peak RSS wanders by ~100 MiB with batch shapes).

    python perf/bench_capture.py                       # a random-weight LLaVA (d=512, 8 layers) on CPU
    python perf/bench_capture.py --model PATH --device cuda --dtype bfloat16 --n 256 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def build_bench_model(out: Path, hidden: int = 512, layers: int = 8) -> Path:
    """A random-weight LLaVA with a bigger language model than the test one (so the forward, not Python, dominates)."""
    from vsfa.models.tiny import save_tiny

    text = dict(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers)
    text |= dict(num_attention_heads=8, num_key_value_heads=8, head_dim=hidden // 8)
    return save_tiny("llava", out / "model", text=text)


def prompts(n: int, set_name: str):
    from probes.contrasts import load_set

    cset = load_set(set_name)
    reps = -(-n // len(cset.items))
    items = (cset.items * reps)[:n]
    items = [type(it)(**{**it.__dict__, "id": f"{it.id}#{i}"}) for i, it in enumerate(items)]
    cset.items = items
    return cset


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_baseline(vlm, cset, batch_size: int, device: str) -> float:
    import torch

    texts = [vlm.render(list(it.messages)) for it in cset.items]
    images = [cset.item_images(it) for it in cset.items]
    has_images = any(images)
    sync(device)
    t0 = time.perf_counter()
    for s in range(0, len(texts), batch_size):
        batch = vlm.encode(texts[s : s + batch_size], images[s : s + batch_size] if has_images else None)
        with torch.no_grad():
            out = vlm.model(**batch, output_hidden_states=True, use_cache=False)
        torch.stack([h[:, -1].float() for h in out.hidden_states[1:]], 1).cpu()
    sync(device)
    return time.perf_counter() - t0


def run_capture(hooked, cset, batch_size: int, device: str, tmp: Path) -> float:
    import shutil

    from probes.capture import CaptureSpec, capture_set

    out = tmp / "store"
    shutil.rmtree(out, ignore_errors=True)
    sync(device)
    t0 = time.perf_counter()
    capture_set(hooked, cset, out, CaptureSpec(positions=("last",)), batch_size=batch_size, progress=False)
    sync(device)
    return time.perf_counter() - t0


def current_rss_mib() -> float:
    """Resident memory of this process now (Linux /proc; falls back to the lifetime peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RssSampler:
    """Samples this process's RSS every few ms in a thread; ``peak`` is the maximum seen."""

    def __init__(self, every_s: float = 0.005):
        import threading

        self.peak = current_rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss_mib())
            time.sleep(every_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss_mib())


def child_memory(args) -> None:
    """Capture ``--child-n`` prompts in this fresh process and print peak memory as JSON."""
    import torch

    from probes.capture import CaptureSpec, capture_set
    from probes.hooked import HookedVLM
    from vsfa.models.loading import load_vlm

    if args.threads:
        torch.set_num_threads(args.threads)
    vlm = load_vlm(args.model, dtype=args.dtype, device=args.device)
    hooked = HookedVLM(vlm, backend="torch")
    cset = prompts(args.child_n, args.set)
    # Warm up on one batch (allocator pools, lazy imports), then measure the capture alone.
    with tempfile.TemporaryDirectory() as tmp:
        capture_set(hooked, prompts(args.batch_size, args.set), Path(tmp) / "w", batch_size=args.batch_size)
    rss_before = current_rss_mib()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp, RssSampler() as sampler:
        spec = CaptureSpec(positions=("last",))
        capture_set(hooked, cset, Path(tmp) / "s", spec, batch_size=args.batch_size, progress=False)
    res = {"n": args.child_n, "rss_before_mib": rss_before, "capture_peak_rss_mib": sampler.peak}
    if args.device.startswith("cuda"):
        res["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(res))


def memory_at(args, n: int) -> dict:
    cmd = [sys.executable, __file__, "--child-n", str(n), "--model", str(args.model), "--set", args.set]
    cmd += ["--batch-size", str(args.batch_size), "--device", args.device, "--threads", str(args.threads)]
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    # glibc's dynamic mmap threshold keeps freed activation blocks in fragmented heap arenas, so peak RSS then
    # depends on the luck of batch shapes; a fixed threshold returns them to the OS and RSS tracks live memory.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="Model folder (default: build a random LLaVA).")
    ap.add_argument("--set", default="persona", help="Prompt set (persona, requests, visual_threat, ...).")
    ap.add_argument("--n", type=int, default=128, help="Prompts per timed run.")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default).")
    ap.add_argument("--mem-n", type=int, default=64, help="N for the memory check (also 10N).")
    ap.add_argument("--bridge", action="store_true", help="Also time the TransformerBridge backend.")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child-n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_n:
        return child_memory(args)

    import torch

    from probes.hooked import HookedVLM
    from vsfa.models.loading import load_vlm

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-capture-"))
    if args.model is None:
        args.model = build_bench_model(tmp)
    vlm = load_vlm(args.model, dtype=args.dtype, device=args.device)
    backends = ["torch"] + (["bridge"] if args.bridge else [])
    hooked = {b: HookedVLM(vlm, backend=b) for b in backends}
    cset = prompts(args.n, args.set)
    print(
        f"model {args.model} ({vlm.family.name}, {vlm.n_layers} layers, d={vlm.d_model}), {args.device}, "
        f"{str(vlm.dtype).removeprefix('torch.')}, threads {torch.get_num_threads()}; "
        f"{args.n} '{args.set}' prompts, batch {args.batch_size}, {args.repeats} repeats"
    )
    run_baseline(vlm, prompts(args.batch_size, args.set), args.batch_size, args.device)  # warm-up
    for b in backends:
        run_capture(hooked[b], prompts(args.batch_size, args.set), args.batch_size, args.device, tmp)
    times: dict[str, list[float]] = {"hf_output_hidden_states": [], **{f"capture_{b}": [] for b in backends}}
    for _ in range(args.repeats):
        times["hf_output_hidden_states"].append(run_baseline(vlm, cset, args.batch_size, args.device))
        for b in backends:
            times[f"capture_{b}"].append(run_capture(hooked[b], cset, args.batch_size, args.device, tmp))
    base = statistics.median(times["hf_output_hidden_states"])
    result = {"model": str(args.model), "n": args.n, "batch_size": args.batch_size, "device": args.device}
    print(f"{'run':<26}{'median s':>10}{'min s':>9}{'ratio':>8}")
    for name, ts in times.items():
        med = statistics.median(ts)
        result[name] = {"median_s": med, "min_s": min(ts), "ratio": med / base}
        print(f"{name:<26}{med:>10.3f}{min(ts):>9.3f}{med / base:>8.2f}")
    ratio = result["capture_torch"]["ratio"]
    best = result["capture_torch"]["min_s"] / result["hf_output_hidden_states"]["min_s"]
    result["capture_torch"]["ratio_of_minima"] = best
    print(
        f"capture / HF forward (all layers, last token): median {ratio:.2f}, best-of-{args.repeats} {best:.2f} "
        "(target <= 1.10)"
    )

    small, large = memory_at(args, args.mem_n), memory_at(args, 10 * args.mem_n)
    extra = {k: v["capture_peak_rss_mib"] - v["rss_before_mib"] for k, v in (("N", small), ("10N", large))}
    grow = large["capture_peak_rss_mib"] - small["capture_peak_rss_mib"]
    print(
        f"peak RSS during capture: N={small['n']}: {small['capture_peak_rss_mib']:.0f} MiB (+{extra['N']:.0f} over "
        f"loaded model), 10N={large['n']}: {large['capture_peak_rss_mib']:.0f} MiB (+{extra['10N']:.0f}); "
        f"growth N -> 10N: {grow:+.0f} MiB"
    )
    if "peak_gpu_mib" in small:
        print(f"peak GPU: N: {small['peak_gpu_mib']:.0f} MiB, 10N: {large['peak_gpu_mib']:.0f} MiB")
    result["memory"] = {"N": small, "10N": large, "growth_mib": grow}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
