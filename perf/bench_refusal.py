"""Cost of the `sequence` refusal score: (generation + refusal score) / generation alone, before and after.

``vsfa eval`` stores the refusal log-odds with each answer by default (``refusal_mode = "sequence"``). The
first path ran one full forward per opener (10 openers: prompt and image re-encoded 10 times); the second ran
the prompt once with the KV cache and scored each opener as a short continuation; ``vsfa eval`` now runs one
prompt pass for both the score and generation (``generate_scored``). All are timed in the same run, on the
same batches, against generation alone (the toolkit's ``generate_batch``, greedy, KV cache), alternating
within each repeat; medians of ``--repeats``. Also printed: the largest difference of the refusal log-odds
from the re-forward path (they must agree). Goal: ratio <= 1.5 for ``vsfa eval``'s path.

    python perf/bench_refusal.py                          # random-weight LLaVA (d=512, 8 layers), CPU
    python perf/bench_refusal.py --model smol-llava       # SmolLM2-135M-Instruct + vision tower (demo model)
    python perf/bench_refusal.py --model PATH --device cuda --dtype bfloat16 --n 64 --batch-size 16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MODES = (
    "generation",
    "gen+refusal (one prompt pass, vsfa eval)",
    "gen+refusal (score's own prompt pass)",
    "gen+refusal (re-forward per opener)",
)


def run_once(vlm, groups, config, mode: int, openers, sync) -> tuple[float, list]:
    """Seconds for all batches in one mode (0: generation; 1: ``generate_scored``, the prompt pass shared;
    2: generation, then the cached score on its own pass; 3: generation, then one forward per opener)."""
    from vsfa.eval.generation import generate_batch, generate_scored
    from vsfa.eval.refusal import refusal_stats

    scores = []
    sync()
    start = time.perf_counter()
    for batch in groups:
        if mode == 1:
            scores += [r["refusal_logodds"] for r in generate_scored(vlm, batch, config, openers)]
            continue
        generate_batch(vlm, batch, config)
        if mode:
            stats = refusal_stats(vlm, batch, openers, batch_size=len(batch), prompt_cache=mode == 2)
            scores += list(stats.logodds)
    sync()
    return time.perf_counter() - start, scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model folder or spec, e.g. smol-llava (default: a random-weight LLaVA)")
    ap.add_argument("--n", type=int, default=16, help="number of items (half text-only, half with an image)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--max-new-tokens", default="32,128", help="answer lengths, comma-separated (one table each)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()

    import torch

    from vsfa.eval.benchmarks import load_benchmark
    from vsfa.eval.generation import GenerationConfig
    from vsfa.eval.modelio import as_queries
    from vsfa.eval.refusal import Openers
    from vsfa.models.loading import load_vlm
    from vsfa.models.sources import resolve_model
    from vsfa.perf.common import build_llava

    if args.threads:
        torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = resolve_model(args.model) if args.model else build_llava(Path(tmp) / "llava")
        vlm = load_vlm(folder, device=args.device, dtype=args.dtype)
        pairs = max(1, args.n // 4)
        items = load_benchmark("builtin", variants=("text", "neutral"), limit_pairs=pairs)[: args.n]
        queries = as_queries(items)
        groups = []
        for with_image in (False, True):  # a batch is all text-only or all with images, as in vsfa eval
            part = [q for q in queries if (q.image is not None) == with_image]
            groups += [part[i : i + args.batch_size] for i in range(0, len(part), args.batch_size)]
        openers = Openers.load()
        print(
            f"model {folder} on {args.device} (dtype {vlm.dtype}, threads {torch.get_num_threads()}), "
            f"{len(queries)} items, batch {args.batch_size}, "
            f"{len(openers.refuse) + len(openers.comply)} openers, median of {args.repeats}"
        )
        for max_new in (int(x) for x in args.max_new_tokens.split(",")):
            config = GenerationConfig(max_new_tokens=max_new, batch_size=args.batch_size)
            run_once(vlm, groups[:1], config, 1, openers, sync)  # warm-up
            times: dict[int, list[float]] = {m: [] for m in range(len(MODES))}
            scores: dict[int, list] = {}
            for _ in range(args.repeats):
                for m in range(len(MODES)):  # alternate the modes within each repeat
                    sec, scores[m] = run_once(vlm, groups, config, m, openers, sync)
                    times[m].append(sec)
            diff = max(abs(a - b) for m in (1, 2) for a, b in zip(scores[m], scores[3], strict=True))
            gen = statistics.median(times[0])
            print(f"\nmax_new_tokens {max_new}")
            print(f"{'mode':<42} {'median s':>9} {'/ generation':>13}")
            for m in range(len(MODES)):
                med = statistics.median(times[m])
                print(f"{MODES[m]:<42} {med:>9.3f} {med / gen:>12.2f}x")
            print(f"max |refusal log-odds, cache - re-forward| = {diff:.2e}", flush=True)


if __name__ == "__main__":
    main()
