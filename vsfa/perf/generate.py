"""Generation throughput: plain HF ``generate`` (KV cache) at several batch sizes, and the bridge's no-cache
decoding against it.

All runs call the toolkit's ``generate_batch`` (render, encode, HF ``generate``, decode) on the same built-in
items (text-only and neutral-image requests, kept in separate batches) with greedy settings; only the batch
size differs. Batch sizes alternate within each repeat and medians are reported. The bridge row decodes the
same items through ``HookedVLM(backend="bridge").generate``, which turns the KV cache off (TransformerLens'
wrapped attention diverges from HF with it); where the bridge does not boot, HF ``generate(use_cache=False)``
stands in (the same decoding work) and the row says so.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from vsfa.perf.common import Measure, syncer


def _groups(queries: list) -> list[list]:
    return [[q for q in queries if q.image is None], [q for q in queries if q.image is not None]]


def run_once(vlm, queries: list, batch_size: int, config, sync, openers=None) -> tuple[float, list[str], int]:
    """Seconds, answers and generated tokens for all queries at one batch size; with ``openers``, each answer
    with its refusal score (``generate_scored``, what ``vsfa eval`` runs)."""
    from vsfa.eval.generation import generate_batch, generate_scored

    answers: list[str] = []
    tokens = 0
    sync()
    start = time.perf_counter()
    for group in _groups(queries):
        for i in range(0, len(group), batch_size):
            part = group[i : i + batch_size]
            outs = (
                generate_batch(vlm, part, config)
                if openers is None
                else generate_scored(vlm, part, config, openers)
            )
            answers += [o["response"] for o in outs]
            tokens += sum(o["n_new_tokens"] for o in outs)
    sync()
    return time.perf_counter() - start, answers, tokens


def run_no_cache(vlm, queries: list, batch_size: int, max_new_tokens: int, sync) -> tuple[float, str]:
    """Seconds to decode all queries without the KV cache: the bridge backend, else HF ``use_cache=False``."""
    import torch

    from probes.hooked import HookedVLM
    from vsfa.eval.modelio import encode_queries

    how = "bridge"
    try:
        hooked = HookedVLM(vlm, backend="bridge")
        gen = lambda batch: hooked.generate(batch, max_new_tokens=max_new_tokens)  # noqa: E731
    except Exception as e:  # the bridge does not support this family/config: the same decoding without it
        how = f"HF use_cache=False (bridge unavailable: {type(e).__name__})"
        pad = vlm.tokenizer.pad_token_id

        def gen(batch: dict) -> Any:
            with torch.no_grad():
                return vlm.model.generate(
                    **batch, max_new_tokens=max_new_tokens, do_sample=False, use_cache=False, pad_token_id=pad
                )

    sync()
    start = time.perf_counter()
    for group in _groups(queries):
        for i in range(0, len(group), batch_size):
            gen(encode_queries(vlm, group[i : i + batch_size], None))
    sync()
    return time.perf_counter() - start, how


def measure_generate(
    model: Path,
    device: str = "cpu",
    dtype: str | None = None,
    n: int = 32,
    batch_sizes: tuple[int, ...] = (1, 4, 16),
    max_new_tokens: int = 32,
    repeats: int = 3,
) -> list[Measure]:
    """Items/s per batch size (speed-up over batch 1), the cost of the ``sequence`` refusal score (goal <= 1.5x
    generation alone) and the no-cache decoding cost at the largest batch."""
    from vsfa.eval.benchmarks import load_benchmark
    from vsfa.eval.generation import GenerationConfig
    from vsfa.eval.modelio import as_queries
    from vsfa.eval.refusal import Openers
    from vsfa.models.loading import load_vlm

    sync = syncer(device)
    vlm = load_vlm(model, device=device, dtype=dtype)
    items = load_benchmark("builtin", variants=("text", "neutral"), limit_pairs=max(1, n // 4))
    queries = as_queries((items * -(-n // len(items)))[:n])
    # the same number of new tokens everywhere (random weights rarely emit EOS, real models do)
    config = GenerationConfig(max_new_tokens=max_new_tokens, refusal_score=False)
    sizes = sorted({1, *batch_sizes})
    run_once(vlm, queries[:2], 2, config, sync)  # warm-up
    times: dict[int, list[float]] = {b: [] for b in sizes}
    answers: dict[int, list[str]] = {}
    tokens: dict[int, int] = {}
    openers, big = Openers.load(), max(sizes)
    scored: list[float] = []
    for _ in range(repeats):
        for b in sizes:
            sec, answers[b], tokens[b] = run_once(vlm, queries, b, config, sync)
            times[b].append(sec)
        sec, scored_answers, _ = run_once(vlm, queries, big, config, sync, openers)
        scored.append(sec)
    base = statistics.median(times[1])
    rows = []
    for b in sizes:
        med = statistics.median(times[b])
        same = sum(x == y for x, y in zip(answers[b], answers[1], strict=True)) / len(queries)
        rows.append(
            Measure(
                f"generation batch {b} (KV cache)",
                len(queries) / med,
                None,
                unit="items/s",
                detail=f"{tokens[b] / med:.0f} tokens/s, {base / med:.2f}x batch 1, {same:.0%} answers as batch 1",
                numbers={"seconds": times[b], "tokens": tokens[b], "n": len(queries), "same_as_batch1": same},
            )
        )
    cached = statistics.median(times[big])
    same = sum(x == y for x, y in zip(scored_answers, answers[big], strict=True)) / len(queries)
    rows.append(
        Measure(
            f"generation + refusal score / generation, batch {big}",
            statistics.median(scored) / cached,
            1.5,
            detail=f"sequence score (10 openers) from generation's own prompt pass; {same:.0%} answers as generation",
            numbers={"scored_s": scored, "generation_s": times[big], "same_answers": same},
        )
    )
    no_cache, how = run_no_cache(vlm, queries, big, max_new_tokens, sync)
    rows.append(
        Measure(
            f"bridge no-cache / HF cache, batch {big}",
            no_cache / cached,
            None,
            detail=f"{how}: {no_cache:.2f} s vs {cached:.2f} s; eval and chat use HF generate with the cache",
            numbers={"no_cache_s": no_cache, "cache_s": cached, "how": how},
        )
    )
    return rows
