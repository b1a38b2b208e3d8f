"""Answer sources for the neutral VQA builder; every record keeps the name of the source of its answer.

(a) ``annotation``: answers written from the image's annotation (procedural scenes, or a user JSONL of
    captions/objects per image);
(b) ``self``: the base model's own answers (batched greedy generation: self-distillation);
(c) ``endpoint``: an OpenAI-compatible chat-completions endpoint (e.g. a local vLLM server) with a
    neutral-describer system prompt; stdlib ``urllib`` only, API key read from an environment variable.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from vsfa.data.templates import Question, annotation_answer
from vsfa.errors import DataError
from vsfa.progress import progress

DESCRIBER_PROMPT = (
    "You describe images for a visual question answering data set. Answer the question in one or two short, "
    "factual sentences about what is visible: objects, colours, positions, counts and any text. Do not give "
    "opinions, warnings, advice or judgements, and do not comment on whether anything is good or bad."
)


@dataclass
class AskItem:
    """One question about one image."""

    image: Image.Image | None
    question: Question
    annotation: dict | None


class AnswerSource(Protocol):
    """Answers a list of questions; ``name`` is stored in every record (``answer_source``)."""

    name: str

    def answer(self, items: Sequence[AskItem]) -> list[str]: ...

    def describe_config(self) -> dict[str, Any]: ...


class AnnotationSource:
    """(a) Answers from annotations."""

    name = "annotation"

    def answer(self, items: Sequence[AskItem]) -> list[str]:
        out = []
        for it in items:
            if it.annotation is None:
                raise DataError("answer source 'annotation' needs an annotation for every image")
            out.append(annotation_answer(it.annotation, it.question))
        return out

    def describe_config(self) -> dict[str, Any]:
        return {"name": self.name}


def _clean(text: str) -> str:
    return " ".join(text.strip().split())


class SelfDistillSource:
    """(b) The base model answers its own questions: batched greedy generation with ``load_vlm``."""

    name = "self"

    def __init__(
        self,
        model: str,
        batch_size: int = 8,
        max_new_tokens: int = 96,
        system_prompt: str | None = DESCRIBER_PROMPT,
        device: str = "cpu",
        dtype: str | None = None,
        vlm: Any = None,
    ):
        from vsfa.models.loading import load_vlm

        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, not {batch_size}")
        self.model_path = str(model)
        self.vlm = vlm if vlm is not None else load_vlm(model, device=device, dtype=dtype)
        self.batch_size, self.max_new_tokens, self.system_prompt = batch_size, max_new_tokens, system_prompt

    def _messages(self, it: AskItem) -> list[dict]:
        content = ([{"type": "image"}] if it.image is not None else []) + [
            {"type": "text", "text": it.question.text}
        ]
        msgs = [{"role": "user", "content": content}]
        if self.system_prompt:
            msgs.insert(0, {"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
        return msgs

    def answer(self, items: Sequence[AskItem]) -> list[str]:
        import torch

        out: list[str] = []
        tok = self.vlm.tokenizer
        for lo in progress(range(0, len(items), self.batch_size), "self-distil answers", unit="batch"):
            chunk = items[lo : lo + self.batch_size]
            texts = [self.vlm.render(self._messages(it)) for it in chunk]
            with_img = [it.image is not None for it in chunk]
            if any(with_img) and not all(with_img):
                raise DataError("self-distillation batches must be all with images or all text-only")
            images = [[it.image] for it in chunk] if all(with_img) else None
            batch = self.vlm.encode(texts, images)
            with torch.no_grad():
                gen = self.vlm.hf_model.generate(
                    **batch,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                )
            new = gen[:, batch["input_ids"].shape[1] :]
            out.extend(_clean(t) for t in tok.batch_decode(new, skip_special_tokens=True))
        return out

    def describe_config(self) -> dict[str, Any]:
        from vsfa.io import model_fingerprint

        return {
            "name": self.name,
            "model": self.model_path,
            "model_fingerprint": model_fingerprint(self.model_path),
            "decoding": {"greedy": True, "max_new_tokens": self.max_new_tokens},
            "system_prompt": self.system_prompt,
        }


def image_data_url(image: Image.Image) -> str:
    """PNG data URL of an image (what OpenAI-compatible vision endpoints take)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class EndpointSource:
    """(c) An OpenAI-compatible ``/chat/completions`` endpoint with a neutral-describer system prompt."""

    name = "endpoint"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        system_prompt: str = DESCRIBER_PROMPT,
        max_tokens: int = 128,
        temperature: float = 0.0,
        timeout_s: float = 60.0,
        retries: int = 2,
        workers: int = 4,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise DataError(f"endpoint URL must start with http:// or https://, not {base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env, self.system_prompt = model, api_key_env, system_prompt
        self.max_tokens, self.temperature, self.timeout_s = max_tokens, temperature, timeout_s
        self.retries, self.workers = retries, max(1, workers)

    def _payload(self, it: AskItem) -> dict:
        content: list[dict] = [{"type": "text", "text": it.question.text}]
        if it.image is not None:
            content.append({"type": "image_url", "image_url": {"url": image_data_url(it.image)}})
        return {
            "model": self.model,
            "messages": [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": content},
            ],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }

    def _post(self, payload: dict) -> str:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(payload).encode()
        last = ""
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    body = json.loads(resp.read().decode())
                return _clean(body["choices"][0]["message"]["content"] or "")
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} {e.reason}"
                if e.code < 500 and e.code != 429:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            except (KeyError, IndexError, TypeError, json.JSONDecodeError) as e:
                last = f"unexpected response ({type(e).__name__}: {e})"
                break
            time.sleep(0.5 * 2**attempt)
        raise DataError(f"{self.url}: answer source endpoint failed ({last})")

    def answer(self, items: Sequence[AskItem]) -> list[str]:
        payloads = [self._payload(it) for it in items]
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(self._post, payloads))

    def describe_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "model": self.model,
            "system_prompt": self.system_prompt,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }


SOURCES = ("annotation", "self", "endpoint")


def make_source(
    name: str,
    model: str | None = None,
    endpoint: str | None = None,
    endpoint_model: str | None = None,
    api_key_env: str | None = "OPENAI_API_KEY",
    batch_size: int = 8,
    max_new_tokens: int = 96,
    device: str = "cpu",
    dtype: str | None = None,
) -> AnswerSource:
    """Build an answer source by name (what the CLI's ``--source`` takes); missing settings name the flag."""
    if name == "annotation":
        return AnnotationSource()
    if name == "self":
        if not model:
            raise DataError("answer source 'self' needs --model (the base model folder)")
        return SelfDistillSource(model, batch_size, max_new_tokens, device=device, dtype=dtype)
    if name == "endpoint":
        if not endpoint or not endpoint_model:
            raise DataError("answer source 'endpoint' needs --endpoint URL and --endpoint-model NAME")
        return EndpointSource(endpoint, endpoint_model, api_key_env=api_key_env, max_tokens=max_new_tokens)
    raise DataError(f"unknown answer source {name!r}; choose one of: {', '.join(SOURCES)}")
