"""Capture throughput and memory: ``probes.capture`` vs a bare HF forward with ``output_hidden_states``.

Both sides run the same prompts in the same batches (same encoding, left padding). The baseline is what a user
would write by hand: ``model(**batch, output_hidden_states=True, use_cache=False)`` and the last-token state of
every layer copied to the CPU (nothing written to disk). The capture side is the whole ``capture_set`` call
(render, encode, hooked forward, position reduction, safetensors shards, index, manifest). Runs alternate and
the medians are compared (goal <= 1.10).

Memory: peak resident memory during the capture of N and of 10N prompts, each in a fresh process after the model
is loaded and warmed up (GPU: peak allocated memory); the ratio should be near 1 (streamed shards). The children
run with ``MALLOC_MMAP_THRESHOLD_=131072`` so that RSS tracks live memory rather than glibc arena fragmentation.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from vsfa.perf.common import Measure, syncer


def prompts(n: int, set_name: str = "persona"):
    """``n`` items of a built-in contrast set (repeated with distinct ids when the set is smaller)."""
    from probes.contrasts import load_set

    cset = load_set(set_name)
    reps = -(-n // len(cset.items))
    items = (cset.items * reps)[:n]
    cset.items = [type(it)(**{**it.__dict__, "id": f"{it.id}#{i}"}) for i, it in enumerate(items)]
    return cset


def run_baseline(vlm, cset, batch_size: int, device: str) -> float:
    """Seconds for the hand-written loop: encode, forward with all hidden states, last token to the CPU."""
    import torch

    sync = syncer(device)
    texts = [vlm.render(list(it.messages)) for it in cset.items]
    images = [cset.item_images(it) for it in cset.items]
    has_images = any(images)
    sync()
    t0 = time.perf_counter()
    for s in range(0, len(texts), batch_size):
        batch = vlm.encode(texts[s : s + batch_size], images[s : s + batch_size] if has_images else None)
        with torch.no_grad():
            out = vlm.model(**batch, output_hidden_states=True, use_cache=False)
        torch.stack([h[:, -1].float() for h in out.hidden_states[1:]], 1).cpu()
    sync()
    return time.perf_counter() - t0


def run_capture(hooked, cset, batch_size: int, device: str, out: Path) -> float:
    """Seconds for one ``capture_set`` of ``cset`` (last-token position) into a fresh store at ``out``."""
    from probes.capture import CaptureSpec, capture_set

    shutil.rmtree(out, ignore_errors=True)
    sync = syncer(device)
    sync()
    t0 = time.perf_counter()
    capture_set(hooked, cset, out, CaptureSpec(positions=("last",)), batch_size=batch_size, progress=False)
    sync()
    return time.perf_counter() - t0


def measure_capture(
    model: Path,
    device: str = "cpu",
    dtype: str | None = None,
    n: int = 128,
    batch_size: int = 16,
    repeats: int = 3,
) -> Measure:
    """Median capture time / median bare-forward time on the same ``n`` prompts (alternating runs)."""
    from probes.hooked import HookedVLM
    from vsfa.models.loading import load_vlm

    vlm = load_vlm(model, dtype=dtype, device=device)
    hooked = HookedVLM(vlm, backend="torch")
    cset, warm = prompts(n), prompts(batch_size)
    with tempfile.TemporaryDirectory(prefix="vsfa-bench-capture-") as tmp:
        store = Path(tmp) / "store"
        run_baseline(vlm, warm, batch_size, device)
        run_capture(hooked, warm, batch_size, device, store)
        base, cap = [], []
        for _ in range(repeats):
            base.append(run_baseline(vlm, cset, batch_size, device))
            cap.append(run_capture(hooked, cset, batch_size, device, store))
    b, c = statistics.median(base), statistics.median(cap)
    return Measure(
        "capture / HF forward",
        c / b,
        1.10,
        detail=f"{n} prompts, batch {batch_size}: capture {c:.2f} s, HF output_hidden_states {b:.2f} s",
        numbers={"capture_s": cap, "hf_s": base, "n": n, "batch_size": batch_size},
    )


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

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss_mib())


def child_memory(model: str, n: int, batch_size: int, device: str, dtype: str | None) -> dict[str, Any]:
    """In this (fresh) process: load, warm up, capture ``n`` prompts; peak memory during the capture."""
    import torch

    from probes.capture import CaptureSpec, capture_set
    from probes.hooked import HookedVLM
    from vsfa.models.loading import load_vlm

    vlm = load_vlm(model, dtype=dtype, device=device)
    hooked = HookedVLM(vlm, backend="torch")
    cset = prompts(n)
    with tempfile.TemporaryDirectory() as tmp:  # allocator pools, lazy imports
        capture_set(hooked, prompts(batch_size), Path(tmp) / "w", batch_size=batch_size, progress=False)
    before = current_rss_mib()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp, RssSampler() as sampler:
        spec = CaptureSpec(positions=("last",))
        capture_set(hooked, cset, Path(tmp) / "s", spec, batch_size=batch_size, progress=False)
    res = {"n": n, "rss_before_mib": before, "peak_rss_mib": sampler.peak}
    if cuda:
        res["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return res


def memory_at(model: Path, n: int, batch_size: int, device: str, dtype: str | None) -> dict[str, Any]:
    """:func:`child_memory` in a child process (so the peak belongs to this capture alone)."""
    args = json.dumps(
        {"model": str(model), "n": n, "batch_size": batch_size, "device": device, "dtype": dtype}
    )
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    proc = subprocess.run(
        [sys.executable, "-m", "vsfa.perf.capture", args], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_memory(
    model: Path, device: str = "cpu", dtype: str | None = None, n: int = 64, batch_size: int = 16
) -> Measure:
    """Peak memory while capturing 10N prompts / while capturing N (RSS; on CUDA the peak GPU memory)."""
    small = memory_at(model, n, batch_size, device, dtype)
    large = memory_at(model, 10 * n, batch_size, device, dtype)
    key = "peak_gpu_mib" if "peak_gpu_mib" in small else "peak_rss_mib"
    what = "GPU" if key == "peak_gpu_mib" else "RSS"
    return Measure(
        "capture peak memory 10N / N",
        large[key] / small[key],
        1.1,
        detail=f"peak {what} N={n}: {small[key]:.0f} MiB, 10N={10 * n}: {large[key]:.0f} MiB "
        f"({large[key] - small[key]:+.0f} MiB)",
        numbers={"N": small, "10N": large},
    )


if __name__ == "__main__":  # the memory child: one JSON argument, one JSON line out
    from vsfa.env import apply_offline_defaults

    apply_offline_defaults()
    print(json.dumps(child_memory(**json.loads(sys.argv[1]))))
