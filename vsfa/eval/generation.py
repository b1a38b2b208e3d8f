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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vsfa.errors import ConfigError
from vsfa.eval.items import BenchItem
from vsfa.eval.modelio import HookContext, Query, as_queries, chunk_order, encode_queries, model_call_context
from vsfa.eval.prompts import DEFENSES
from vsfa.eval.refusal import MODES, Openers, refusal_stats
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


def generate_batch(
    vlm, queries: Sequence[Query], config: GenerationConfig, hook_context: HookContext = None
) -> list[dict[str, Any]]:
    """Generate for one batch of queries (all text-only or all with images); returns response dicts."""
    batch = encode_queries(vlm, queries, config.system_prompt)
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
    with torch.no_grad(), model_call_context(hook_context):
        out = vlm.model.generate(**batch, **kwargs)
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
    run_chunk: ChunkRunner,
    content_key: str,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Drive ``run_chunk`` over fixed batches with the partial-file resume protocol (see module docstring)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    key_file = out_path.with_name(f".{out_path.name}.key")
    if out_path.is_file() and key_file.is_file() and key_file.read_text().strip() == content_key:
        from vsfa.io import read_jsonl

        return read_jsonl(out_path)  # finished earlier with the same key
    partial = out_path.with_name(f".{out_path.name}.{content_key[:16]}.partial")
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
    for c, chunk in enumerate(chunks):
        if all(items[i].item_id in done for i in chunk):
            continue
        chunk_items = [items[i] for i in chunk]  # always the whole chunk: identical batches on resume
        queries = as_queries(chunk_items, config.defense, config.defense_placement)
        outs = run_chunk(chunk_items, queries, c)
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
    final = [done[it.item_id] for it in items]
    key_file.unlink(missing_ok=True)
    write_jsonl_atomic(out_path, final)
    write_text_atomic(key_file, content_key + "\n")
    partial.unlink(missing_ok=True)
    return final


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
        outs = generate_batch(vlm, queries, config, hook_context)
        if openers is not None:
            stats = refusal_stats(
                vlm,
                queries,
                openers,
                mode=config.refusal_mode,
                batch_size=config.batch_size,
                system=config.system_prompt,
                hook_context=hook_context,
            )
            for j, o in enumerate(outs):
                o["refusal_logodds"] = float(stats.logodds[j])
                o["p_refuse"] = float(stats.p_refuse[j])
        return outs

    return run_resumable(items, out_path, config, run_chunk, generation_key(items, config, key), progress)


def generate_responses_server(
    client,
    items: Sequence[BenchItem],
    out_path: str | Path,
    config: GenerationConfig | None = None,
    key: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Generate answers through an OpenAI-compatible server (e.g. vLLM serving the model + LoRA adapter).

    Same files and resume protocol as :func:`generate_responses`; no refusal score (it needs the logits).
    """
    from vsfa.eval.endpoint import image_part

    config = config or GenerationConfig()
    config.validate()

    def run_chunk(chunk_items: list[BenchItem], queries: list[Query], c: int) -> list[dict[str, Any]]:
        outs = []
        for q in queries:
            content: Any = (
                q.text if q.image is None else [image_part(q.image), {"type": "text", "text": q.text}]
            )
            messages = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []
            text = client.complete(
                [*messages, {"role": "user", "content": content}],
                temperature=config.temperature if config.do_sample else 0.0,
                max_tokens=config.max_new_tokens,
            )
            outs.append({"response": text.strip(), "n_new_tokens": None, "finished": None})
        return outs

    server_key = {**(key or {}), "server": client.config.url, "server_model": client.config.model}
    return run_resumable(
        items, out_path, config, run_chunk, generation_key(items, config, server_key), progress
    )
