"""Turning queries into model inputs: rendered prompts, images, and the hook context around model calls.

Shared by batched generation and the refusal score, so both see exactly the same prompt for an item.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from vsfa.errors import DataError
from vsfa.eval.items import BenchItem
from vsfa.eval.prompts import apply_defense, chat_messages

HookContext = Callable[[], contextlib.AbstractContextManager] | None
"""Optional factory of a context manager entered around every model call (e.g. ``lambda: hooked.hooks(h)``)."""


def model_call_context(hook_context: HookContext) -> contextlib.AbstractContextManager:
    """``hook_context()`` or a no-op context."""
    return hook_context() if hook_context is not None else contextlib.nullcontext()


@dataclass
class Query:
    """One model query: the user text (defense applied) and an optional image."""

    text: str
    image: Image.Image | None = None


def as_queries(
    items: Sequence[BenchItem | dict[str, Any] | str | Query],
    defense: str = "none",
    placement: str = "suffix",
) -> list[Query]:
    """Normalise items (BenchItem, ``{"text", "image"}`` dict, plain text or Query) to queries."""
    out = []
    for i, it in enumerate(items):
        if isinstance(it, Query):
            q = Query(it.text, it.image)
        elif isinstance(it, BenchItem):
            q = Query(it.text, it.load_image())
        elif isinstance(it, str):
            q = Query(it, None)
        elif isinstance(it, dict) and "text" in it:
            img = it.get("image")
            if img is not None and not isinstance(img, Image.Image):
                raise DataError(f"item {i}: 'image' must be a PIL image or None")
            q = Query(str(it["text"]), img.convert("RGB") if img is not None else None)
        else:
            raise DataError(f"item {i}: expected a BenchItem, a {{'text', 'image'}} dict or a string")
        q.text = apply_defense(q.text, defense, placement)
        out.append(q)
    return out


def render_prompts(vlm, queries: Sequence[Query], system: str | None = None) -> list[str]:
    """Chat-template prompts (with the generation prompt) for the queries."""
    return [vlm.render(chat_messages(q.text, q.image is not None, system)) for q in queries]


def encode_queries(
    vlm, queries: Sequence[Query], system: str | None = None, suffixes: Sequence[str] | None = None
):
    """Left-padded batch for the queries (all with an image or all without); optional text after each prompt."""
    prompts = render_prompts(vlm, queries, system)
    if suffixes is not None:
        prompts = [p + s for p, s in zip(prompts, suffixes, strict=True)]
    with_img = [q.image is not None for q in queries]
    if any(with_img) and not all(with_img):
        raise DataError("a batch must be all text-only or all with images")
    images = [[q.image] for q in queries] if all(with_img) and queries else None
    return vlm.encode(prompts, images)


def response_separator(vlm) -> str:
    """What the chat template writes between the generation prompt and the assistant's first word."""
    user = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    gen = vlm.render(user, add_generation_prompt=True)
    marker = "XQZJ"
    full = vlm.render([*user, {"role": "assistant", "content": [{"type": "text", "text": marker}]}], False)
    if full.startswith(gen) and marker in full[len(gen) :]:
        return full[len(gen) : full.index(marker, len(gen))]
    return ""


def chunk_order(
    items: Sequence[Any], has_image: Callable[[Any], bool], length: Callable[[Any], int]
) -> list[int]:
    """A deterministic processing order: text-only before image items, then by prompt length (less padding)."""
    return sorted(range(len(items)), key=lambda i: (has_image(items[i]), length(items[i]), i))
