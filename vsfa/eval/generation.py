"""Batched, resumable answer generation: results as JSONL keyed by item id.

``generate_responses(vlm, items, out_path, config)`` runs HF ``generate`` (left padding, greedy by default) in
batches and appends each finished batch to a hidden partial file beside ``out_path`` (one write, flushed and
fsynced). An interrupted run (even ``kill -9``) continues from the partial file: a torn last line is
dropped, finished batches are kept, and the batches are fixed by the item list (text-only first, then by
prompt length), so the rerun computes exactly the batches an uninterrupted run would have, and the final
``out_path`` is byte-identical. The partial file's name carries the content key (model, adapter, items,
config), so a changed setting never resumes from stale answers. ``out_path`` itself is written atomically at
the end, in item order.

Every model call runs inside ``hook_context()`` when given (steering hooks); the continuous refusal score
of the same prompts is stored with each answer unless turned off.

``generate_responses_server(client, ...)`` writes the same records through an OpenAI-compatible server
(vLLM, SGLang, TGI), with up to ``concurrency`` requests in flight; the records and their order do not depend
on the concurrency, and the same partial-file protocol makes it resumable.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vsfa import distributed as dist
from vsfa.errors import ConfigError
from vsfa.eval.items import BenchItem
from vsfa.eval.modelio import HookContext, Query, as_queries, chunk_order, encode_queries, model_call_context
from vsfa.eval.prompts import DEFENSES
from vsfa.eval.refusal import MODES, Openers, cache_argument, mrope_module, prompt_pass, stats_for_batch
from vsfa.io import dumps, sha256_json, write_jsonl_atomic, write_text_atomic


@dataclass
class GenerationConfig:
    """How answers are generated (saved with the results; part of their content key)."""

    max_new_tokens: int = 256
    """Answer length limit."""
    batch_size: int = 8
    """Generation batch size."""
    do_sample: bool = False
    """Sample instead of greedy decoding."""
    temperature: float = 1.0
    """Sampling temperature."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    seed: int = 0
    """Sampling seed."""
    system_prompt: str | None = None
    """System prompt."""
    defense: str = "none"
    """None | adashield_s."""
    defense_placement: str = "suffix"
    """Suffix | prefix (AdaShield-S wording follows the placement)."""
    refusal_score: bool = True
    """Store the refusal log-odds with each answer."""
    refusal_mode: str = "sequence"
    """sequence (whole openers) | first_token (cheaper)."""
    openers_refuse: str | None = None
    """Opener list files for the refusal score (default: the shipped ones)."""
    openers_comply: str | None = None

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, not {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, not {self.batch_size}")
        if self.defense not in DEFENSES:
            raise ConfigError(f"unknown defense {self.defense!r}; choose one of: {', '.join(DEFENSES)}")
        if self.defense_placement not in ("suffix", "prefix"):
            raise ConfigError(f"defense_placement must be suffix or prefix, not {self.defense_placement!r}")
        if self.refusal_mode not in MODES:
            raise ConfigError(f"refusal_mode must be one of {', '.join(MODES)}, not {self.refusal_mode!r}")
        if self.refusal_score:  # the opener lists are inputs too: check them before any model is loaded
            Openers.load(self.openers_refuse, self.openers_comply)

    def content(self) -> dict[str, Any]:
        """The fields that can change the answers (batch size too: batch composition moves float results)."""
        return asdict(self)


def _eos_ids(vlm) -> set[int]:
    ids: set[int] = set()
    cfg = getattr(vlm.hf_model, "generation_config", None)
    eos = getattr(cfg, "eos_token_id", None) if cfg is not None else None
    for value in (eos, vlm.tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids


try:  # the image inputs HF generate drops after the prompt pass
    from transformers.generation.utils import MULTIMODAL_INPUTS_TO_DROP_OUTSIDE_PREFILL as _IMAGE_INPUTS
except ImportError:  # pragma: no cover - other transformers versions
    _IMAGE_INPUTS = ("pixel_values", "image_sizes", "pixel_attention_mask")


def generate_batch(
    vlm,
    queries: Sequence[Query],
    config: GenerationConfig,
    hook_context: HookContext = None,
    batch: Any = None,
    prompt_cache: Any = None,
) -> list[dict[str, Any]]:
    """Generate for one batch of queries (all text-only or all with images); returns response dicts.

    ``batch``: the queries already encoded; ``prompt_cache``: a KV cache of all but the last prompt token of
    ``batch`` (HF ``generate`` runs the rest, so the prompt is not run again)."""
    batch = batch if batch is not None else encode_queries(vlm, queries, config.system_prompt)
    tok = vlm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    kwargs: dict[str, Any] = {
        "max_new_tokens": config.max_new_tokens,
        "do_sample": config.do_sample,
        "pad_token_id": pad,
    }
    if config.do_sample:
        kwargs |= {"temperature": config.temperature, "top_p": config.top_p}
    else:
        kwargs |= {"temperature": None, "top_p": None, "top_k": None}
    inputs = dict(batch)
    if prompt_cache is not None:  # the images are in the cache: the uncached last token is text
        kwargs[cache_argument(vlm)] = prompt_cache
        inputs = {k: v for k, v in inputs.items() if k not in _IMAGE_INPUTS}
    with torch.no_grad(), model_call_context(hook_context):
        out = vlm.model.generate(**inputs, **kwargs)
    new = out[:, batch["input_ids"].shape[1] :].tolist()
    eos = _eos_ids(vlm)
    results = []
    for row in new:
        stop = next((j for j, t in enumerate(row) if t in eos), None)
        kept = row if stop is None else row[:stop]
        results.append(
            {
                "response": tok.decode(kept, skip_special_tokens=True).strip(),
                "n_new_tokens": len(kept),
                "finished": stop is not None,
            }
        )
    return results


def generate_scored(
    vlm,
    queries: Sequence[Query],
    config: GenerationConfig,
    openers: Openers,
    hook_context: HookContext = None,
) -> list[dict[str, Any]]:
    """:func:`generate_batch` with each answer's refusal score (``refusal_logodds``, ``p_refuse``).

    One prompt pass serves both where it can: the score reads its logits and continues on its cache, which is
    then cut back by one token for ``generate``. That needs no hooks (a hook may treat the re-run last token as a
    decoding step), a cache that cuts back exactly and no multimodal RoPE; otherwise the score runs its own
    pass. The answers equal plain :func:`generate_batch` up to float rounding of the shared prompt pass."""
    batch = encode_queries(vlm, queries, config.system_prompt)
    prompt = None
    if hook_context is None and mrope_module(vlm) is None:
        prompt = prompt_pass(vlm, batch)
        if not prompt.croppable():
            prompt = None
    stats = stats_for_batch(vlm, batch, openers, config.refusal_mode, hook_context, prompt=prompt)
    if prompt is not None:
        prompt.cache.crop(-1)
    outs = generate_batch(vlm, queries, config, hook_context, batch, prompt.cache if prompt else None)
    for j, o in enumerate(outs):
        o["refusal_logodds"] = float(stats.logodds[j])
        o["p_refuse"] = float(stats.p_refuse[j])
    return outs


def _read_partial(path: Path) -> dict[str, dict[str, Any]]:
    """Finished records of a partial file; a torn last line (killed mid-write) is cut off."""
    import json

    if not path.is_file():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    done = {}
    for line in data[:end].splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break  # everything after a damaged line is recomputed
        done[rec["id"]] = rec
    return done


def _append(path: Path, records: list[dict[str, Any]]) -> None:
    with open(path, "ab") as f:
        f.write("".join(dumps(r, indent=None) + "\n" for r in records).encode())
        f.flush()
        os.fsync(f.fileno())


def items_key(items: Sequence[BenchItem]) -> str:
    """Content key of an item list (ids, texts, labels and image hashes; not where the images live, so the
    same data through a moved or symlinked folder keeps its answers)."""
    return sha256_json([[it.item_id, it.text, it.label, it.image_sha256()] for it in items])


ChunkRunner = Callable[[list[BenchItem], list[Query], int], list[dict[str, Any]]]


@dataclass
class Chunk:
    """One fixed batch of the resume protocol: its index, its items and their queries."""

    index: int
    items: list[BenchItem]
    queries: list[Query]


Pipeline = Callable[[Iterator[Chunk]], Iterator[tuple[Chunk, list[dict[str, Any]]]]]
"""Turns the pending chunks (in order) into ``(chunk, outputs)`` pairs in the same order; it may work ahead."""


def serial(run_chunk: ChunkRunner) -> Pipeline:
    """The plain pipeline: one chunk at a time, ``run_chunk(items, queries, index)``."""

    def run(chunks: Iterator[Chunk]) -> Iterator[tuple[Chunk, list[dict[str, Any]]]]:
        for ch in chunks:
            yield ch, run_chunk(ch.items, ch.queries, ch.index)

    return run


def _record(it: BenchItem, q: Query, config: GenerationConfig, out: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": it.item_id,
        "benchmark": it.benchmark,
        "variant": it.variant,
        "category": it.category,
        "label": it.label,
        "prompt": q.text,
        "image": it.image_ref,
        "defense": config.defense,
        "defense_placement": config.defense_placement if config.defense != "none" else None,
        "response": out["response"],
        "n_new_tokens": out.get("n_new_tokens"),
        "finished": out.get("finished"),
        "refusal_logodds": out.get("refusal_logodds"),
        "p_refuse": out.get("p_refuse"),
        "extra": it.extra,
    }


def run_resumable(
    items: Sequence[BenchItem],
    out_path: str | Path,
    config: GenerationConfig,
    run_chunk: ChunkRunner | None,
    content_key: str,
    progress: Callable[[int, int], None] | None = None,
    pipeline: Pipeline | None = None,
    split: bool = False,
) -> list[dict[str, Any]]:
    """Drive ``run_chunk`` over fixed batches with the partial-file resume protocol (see module docstring).

    ``pipeline`` (instead of ``run_chunk``) receives the pending chunks lazily and may work ahead (e.g. keep
    requests in flight across chunk boundaries); its outputs are recorded chunk by chunk, in chunk order.
    ``split``: under a launcher (``accelerate launch``), process ``r`` runs chunks ``r, r+N, ...`` (the same
    batches as one process) into its own partial file; the main process merges them (:func:`_split_merge`).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    key_file = out_path.with_name(f".{out_path.name}.key")
    if out_path.is_file() and key_file.is_file() and key_file.read_text().strip() == content_key:
        from vsfa.io import read_jsonl

        return read_jsonl(out_path)  # finished earlier with the same key
    split = split and dist.world() > 1
    partial = out_path.with_name(f".{out_path.name}.{content_key[:16]}.partial")
    if split:
        partial = partial.with_name(f".{out_path.name}.{content_key[:16]}.rank{dist.rank()}.partial")
        done = _split_start(out_path, content_key)
    else:
        for stale in out_path.parent.glob(f".{out_path.name}.*.partial"):
            if stale != partial:
                stale.unlink()
        done = _read_partial(partial)
    order = chunk_order(items, lambda it: it.has_image, lambda it: len(it.text))
    chunks = []
    for with_image in (False, True):  # a batch is all text-only or all with images
        group = [i for i in order if items[i].has_image == with_image]
        chunks += [group[i : i + config.batch_size] for i in range(0, len(group), config.batch_size)]
    n_done = sum(1 for it in items if it.item_id in done)
    if progress is not None:
        progress(n_done, len(items))

    def pending() -> Iterator[Chunk]:
        for c, chunk in enumerate(chunks):
            if all(items[i].item_id in done for i in chunk) or (split and c % dist.world() != dist.rank()):
                continue
            chunk_items = [items[i] for i in chunk]  # always the whole chunk: identical batches on resume
            yield Chunk(c, chunk_items, as_queries(chunk_items, config.defense, config.defense_placement))

    if pipeline is None:
        if run_chunk is None:
            raise ConfigError("run_resumable needs run_chunk or pipeline")
        pipeline = serial(run_chunk)
    with dist.collective():  # under a launcher a failure in one process stops them all
        for chunk, outs in pipeline(pending()):
            chunk_items, queries = chunk.items, chunk.queries
            records = [
                _record(it, q, config, o)
                for it, q, o in zip(chunk_items, queries, outs, strict=True)
                if it.item_id not in done
            ]
            _append(partial, records)
            for rec in records:
                done[rec["id"]] = rec
            n_done += len(records)
            if progress is not None:
                progress(n_done, len(items))
    if split:
        return _split_merge(items, out_path, content_key, key_file)
    final = [done[it.item_id] for it in items]
    key_file.unlink(missing_ok=True)
    write_jsonl_atomic(out_path, final)
    write_text_atomic(key_file, content_key + "\n")
    partial.unlink(missing_ok=True)
    return final


def _split_partials(out_path: Path, content_key: str) -> list[Path]:
    return sorted(out_path.parent.glob(f".{out_path.name}.{content_key[:16]}.*partial"))


def _split_start(out_path: Path, content_key: str) -> dict[str, dict[str, Any]]:
    """Under a launcher: the main process drops other keys' partial files and cuts torn last lines; then every
    process reads the finished records of all partial files of this key (any earlier process count)."""
    prefix = f".{out_path.name}.{content_key[:16]}."
    with dist.collective():
        if dist.is_main():
            for p in out_path.parent.glob(f".{out_path.name}.*.partial"):
                p.unlink() if not p.name.startswith(prefix) else _read_partial(p)
    done: dict[str, dict[str, Any]] = {}
    with dist.collective():
        for p in _split_partials(out_path, content_key):
            done.update(_read_partial(p))
    return done


def _split_merge(
    items: Sequence[BenchItem], out_path: Path, content_key: str, key_file: Path
) -> list[dict[str, Any]]:
    """Under a launcher, once every process has run its chunks: the main process writes ``out_path`` in item
    order from all partial files of this key and removes them; the others then read it."""
    with dist.collective():
        if dist.is_main():
            done: dict[str, dict[str, Any]] = {}
            for p in _split_partials(out_path, content_key):
                done.update(_read_partial(p))
            key_file.unlink(missing_ok=True)
            write_jsonl_atomic(out_path, [done[it.item_id] for it in items])
            write_text_atomic(key_file, content_key + "\n")
            for p in _split_partials(out_path, content_key):
                p.unlink()
    from vsfa.io import read_jsonl

    return read_jsonl(out_path)


def generation_key(items: Sequence[BenchItem], config: GenerationConfig, key: dict[str, Any] | None) -> str:
    """Content key of a generation run: items, config and what identifies the model."""
    return sha256_json({"items": items_key(items), "config": config.content(), "key": key or {}})


def generate_responses(
    vlm,
    items: Sequence[BenchItem],
    out_path: str | Path,
    config: GenerationConfig | None = None,
    hook_context: HookContext = None,
    key: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Generate answers for ``items`` with a local model into ``out_path`` (JSONL in item order), resuming.

    ``key``: what else identifies the run (model and adapter fingerprints); with the items and the config
    it names the partial file. ``progress(done, total)`` is called after each batch.
    """
    config = config or GenerationConfig()
    config.validate()
    openers = Openers.load(config.openers_refuse, config.openers_comply) if config.refusal_score else None

    def run_chunk(chunk_items: list[BenchItem], queries: list[Query], c: int) -> list[dict[str, Any]]:
        if config.do_sample:
            torch.manual_seed(config.seed * 100003 + c)
        if openers is None:
            return generate_batch(vlm, queries, config, hook_context)
        return generate_scored(vlm, queries, config, openers, hook_context)

    gen_key = generation_key(items, config, key)
    return run_resumable(items, out_path, config, run_chunk, gen_key, progress, split=True)


def server_key(client, key: dict[str, Any] | None = None) -> dict[str, Any]:
    """What identifies answers from a server: the local fingerprints plus the served model's name.

    Not the URL: a server restarted on another host or port, serving the same base and adapters under the same
    names, resumes the same records.
    """
    return {**(key or {}), "server_model": client.config.model}


def _finished(reason: str | None) -> bool | None:
    """``finish_reason`` -> finished: ``length`` is cut off, any other reason (stop, eos) is a finished answer."""
    return None if reason is None else reason != "length"


def server_pipeline(client, config: GenerationConfig, concurrency: int) -> Pipeline:
    """Up to ``concurrency`` requests in flight, across chunk boundaries; outputs come back in chunk order.

    Chunks are pulled (and their images loaded) only while fewer than ``concurrency`` requests wait beyond the
    chunk being collected, so memory stays bounded. The first request that fails for good raises its
    :class:`~vsfa.eval.endpoint.EndpointError`; requests not yet started are cancelled, chunks already
    collected stay recorded (a rerun resumes from them).
    """
    from vsfa.eval.endpoint import image_part

    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, not {concurrency}")
    system = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []
    temperature = config.temperature if config.do_sample else 0.0

    def ask(q: Query) -> dict[str, Any]:
        content: Any = q.text if q.image is None else [image_part(q.image), {"type": "text", "text": q.text}]
        reply = client.chat(
            [*system, {"role": "user", "content": content}],
            temperature=temperature,
            max_tokens=config.max_new_tokens,
        )
        return {
            "response": reply.text.strip(),
            "n_new_tokens": reply.completion_tokens,
            "finished": _finished(reply.finish_reason),
        }

    def run(chunks: Iterator[Chunk]) -> Iterator[tuple[Chunk, list[dict[str, Any]]]]:
        pool = ThreadPoolExecutor(concurrency, thread_name_prefix="vsfa-server")
        window: deque[tuple[Chunk, list[Future]]] = deque()
        ahead = 0  # requests submitted for the chunks after the first in the window
        source = iter(chunks)
        try:
            while True:
                while not window or ahead < concurrency:
                    ch = next(source, None)
                    if ch is None:
                        break
                    if window:
                        ahead += len(ch.queries)
                    window.append((ch, [pool.submit(ask, q) for q in ch.queries]))
                if not window:
                    return
                ch, futures = window.popleft()
                outs = [f.result() for f in futures]
                if window:
                    ahead -= len(window[0][0].queries)
                yield ch, outs
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    return run


def generate_responses_server(
    client,
    items: Sequence[BenchItem],
    out_path: str | Path,
    config: GenerationConfig | None = None,
    key: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    concurrency: int = 8,
) -> list[dict[str, Any]]:
    """Generate answers through an OpenAI-compatible server (e.g. vLLM holding the base and LoRA adapters).

    ``client`` (a :class:`~vsfa.eval.endpoint.ChatClient`) names the served model: the base or one adapter.
    Up to ``concurrency`` requests are in flight at once (see :func:`server_pipeline`). Same files and
    resume protocol as :func:`generate_responses`; ``responses.jsonl`` does not depend on ``concurrency``
    (nor is it part of the content key). No refusal score (it needs the logits).
    """
    config = config or GenerationConfig()
    config.validate()
    return run_resumable(
        items,
        out_path,
        config,
        None,
        generation_key(items, config, server_key(client, key)),
        progress,
        pipeline=server_pipeline(client, config, concurrency),
    )
