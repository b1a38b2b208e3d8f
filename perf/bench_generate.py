"""Generation throughput: batched (left padding) vs one-by-one on the same items.

Both sides call the toolkit's ``generate_batch`` (render, encode, HF ``generate``, decode) on the same
built-in items (text-only and neutral-image requests) with the same greedy settings; only the batch size
differs. Reported per batch size: items/s, generated tokens/s, the speed-up over batch size 1 measured in the
same run (median of ``--repeats`` alternating runs), and the share of answers identical to the one-by-one
answers (left padding should not change greedy answers). ``--refusal-score sequence|first_token`` adds the
refusal-score forward passes, as ``vsfa eval`` does by default (``sequence``).

    python perf/bench_generate.py                       # random-weight LLaVA (d=512, 8 layers), CPU
    python perf/bench_generate.py --model PATH --device cuda --dtype bfloat16 --n 64 --batch-sizes 1,8,32
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


def build_model(out: Path, hidden: int = 512, layers: int = 8) -> Path:
    """A random-weight LLaVA with a bigger language model than the test one (so the forward, not Python, dominates)."""
    from vsfa.models.tiny import save_tiny

    text = dict(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers)
    text |= dict(num_attention_heads=8, num_key_value_heads=8, head_dim=hidden // 8)
    return save_tiny("llava", out / "model", text=text)


def run_once(
    vlm, queries, batch_size: int, config, refusal: str | None, sync
) -> tuple[float, list[str], int]:
    """Seconds, answers and generated tokens for all queries at one batch size (text and image kept apart)."""
    from vsfa.eval.generation import generate_batch
    from vsfa.eval.refusal import refusal_stats

    groups = [[q for q in queries if q.image is None], [q for q in queries if q.image is not None]]
    answers: list[str] = []
    tokens = 0
    sync()
    start = time.perf_counter()
    for group in groups:
        for i in range(0, len(group), batch_size):
            part = group[i : i + batch_size]
            outs = generate_batch(vlm, part, config)
            if refusal:
                refusal_stats(vlm, part, mode=refusal, batch_size=batch_size)
            answers += [o["response"] for o in outs]
            tokens += sum(o["n_new_tokens"] for o in outs)
    sync()
    return time.perf_counter() - start, answers, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="model folder (default: build a random-weight LLaVA)")
    ap.add_argument("--n", type=int, default=32, help="number of items (half text-only, half with an image)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-sizes", default="1,4,8,16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument(
        "--refusal-score",
        choices=("sequence", "first_token"),
        default=None,
        help="include the refusal-score passes of this mode",
    )
    args = ap.parse_args()

    import torch

    from vsfa.eval.benchmarks import load_benchmark
    from vsfa.eval.generation import GenerationConfig
    from vsfa.eval.modelio import as_queries
    from vsfa.models.loading import load_vlm

    if args.threads:
        torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model or build_model(Path(tmp))
        vlm = load_vlm(folder, device=args.device, dtype=args.dtype)
        pairs = max(1, args.n // 4)
        items = load_benchmark("builtin", variants=("text", "neutral"), limit_pairs=pairs)[: args.n]
        queries = as_queries(items)
        config = GenerationConfig(max_new_tokens=args.max_new_tokens)
        sizes = [int(s) for s in args.batch_sizes.split(",")]
        if 1 not in sizes:
            sizes = [1, *sizes]
        run_once(vlm, queries[:2], 2, config, args.refusal_score, sync)  # warm-up
        times: dict[int, list[float]] = {b: [] for b in sizes}
        answers: dict[int, list[str]] = {}
        tokens: dict[int, int] = {}
        for _ in range(args.repeats):
            for b in sizes:  # alternate batch sizes within each repeat
                sec, ans, tok = run_once(vlm, queries, b, config, args.refusal_score, sync)
                times[b].append(sec)
                answers[b], tokens[b] = ans, tok
        print(
            f"model {folder} on {args.device} (dtype {vlm.dtype}, threads {torch.get_num_threads()}), "
            f"{len(queries)} items, max_new_tokens {args.max_new_tokens}, refusal score {args.refusal_score}"
        )
        print(
            f"{'batch':>5} {'median s':>9} {'items/s':>8} {'tokens/s':>9} {'speed-up':>9} {'same answers':>13}"
        )
        base = statistics.median(times[1])
        for b in sizes:
            med = statistics.median(times[b])
            same = sum(x == y for x, y in zip(answers[b], answers[1], strict=True)) / len(queries)
            print(
                f"{b:>5} {med:>9.3f} {len(queries) / med:>8.2f} {tokens[b] / med:>9.1f} {base / med:>8.2f}x "
                f"{same:>12.0%}"
            )


if __name__ == "__main__":
    main()
