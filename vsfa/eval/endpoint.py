"""A minimal client for an OpenAI-compatible chat-completions endpoint (stdlib only).

Used by the LLM judges and by the server generation backend (e.g. a vLLM server holding the base model with
one LoRA adapter per checkpoint). Nothing is sent anywhere the user did not configure. Transient failures
(connection refused or reset, timeout, HTTP 429 and 5xx, a reply that is not a chat completion) are retried
with exponential backoff (``backoff * 2**(try - 1)`` seconds, or the server's ``Retry-After`` when longer); any
other HTTP 4xx is the request's own fault and is not retried. After the last try the call raises
:class:`EndpointError` with one line naming the URL, the model and the cause (with the server's message).
A client is safe to share between threads.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from typing import Any

from PIL import Image

from vsfa.errors import VsfaError


class EndpointError(VsfaError):
    """The endpoint was unreachable or kept answering garbage."""


@dataclass
class EndpointConfig:
    """Where the endpoint is and how patiently to talk to it."""

    base_url: str
    model: str
    api_key_env: str | None = None  # name of an environment variable holding the key, if the server wants one
    require_key: bool = False  # the user named the variable: it must be set (the key itself is never stored)
    timeout: float = 60.0
    retries: int = 3  # tries in all (the first one included)
    backoff: float = 1.0  # seconds before the second try; doubled before each further one
    max_backoff: float = 60.0  # no single wait is longer (a server's Retry-After included)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


def image_part(image: Image.Image) -> dict[str, Any]:
    """An ``image_url`` content part holding the image as a base64 PNG data URL."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()},
    }


@dataclass(frozen=True)
class ChatReply:
    """One completion: the assistant text, why it stopped and how many tokens it has (when the server says)."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int | None = None


def _server_message(err: urllib.error.HTTPError) -> str:
    """The server's own words about a failed request (OpenAI/vLLM ``{"error": {"message"}}`` or ``{"message"}``)."""
    try:
        raw = err.read().decode("utf-8", "replace")
    except OSError:
        return ""
    try:
        body = json.loads(raw)
        if isinstance(body, dict):
            inner = body.get("error", body)
            raw = str(inner.get("message", raw) if isinstance(inner, dict) else inner)
    except json.JSONDecodeError:
        pass
    raw = " ".join(raw.split())
    return raw[:200] + ("..." if len(raw) > 200 else "")


def _retry_after(err: urllib.error.HTTPError) -> float:
    value = err.headers.get("Retry-After") if err.headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else 0.0
    except ValueError:
        return 0.0  # an HTTP date: fall back to our own backoff


class ChatClient:
    """Chat completions against ``config.url``; ``complete(messages) -> str``, ``chat(messages) -> ChatReply``."""

    def __init__(self, config: EndpointConfig):
        if not config.base_url.startswith(("http://", "https://")):
            raise EndpointError(f"endpoint URL must start with http:// or https://, not {config.base_url!r}")
        if config.require_key and config.api_key_env and not os.environ.get(config.api_key_env):
            raise EndpointError(
                f"{config.base_url}: environment variable {config.api_key_env} (the API key) is not set or empty"
            )
        if config.retries < 1:
            raise EndpointError(f"{config.base_url}: retries (tries in all) must be at least 1")
        self.config = config
        self._lock = threading.Lock()
        self._count = [0]  # shared with the clients made by with_model

    @property
    def n_requests(self) -> int:
        """HTTP requests sent so far (by this client and those made from it with :meth:`with_model`)."""
        return self._count[0]

    def with_model(self, model: str) -> ChatClient:
        """The same endpoint, asking for another served model (e.g. one LoRA adapter of a vLLM server)."""
        other = ChatClient(replace(self.config, model=model))
        other._lock, other._count = self._lock, self._count
        return other

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.config.api_key_env:
            key = os.environ.get(self.config.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.config.url, data=json.dumps(payload).encode(), headers=headers)
        with self._lock:
            self._count[0] += 1
        with urllib.request.urlopen(req, timeout=self.config.timeout) as resp:  # noqa: S310 (user-configured URL)
            return json.loads(resp.read().decode("utf-8"))

    def _wait(self, attempt: int, at_least: float = 0.0) -> None:
        delay = max(self.config.backoff * 2 ** (attempt - 1), at_least)
        time.sleep(min(delay, self.config.max_backoff))

    def chat(
        self,
        messages: list[dict[str, Any]],
        temperature: float = 0.0,
        max_tokens: int | None = None,
        validate=None,
    ) -> ChatReply:
        """One completion; ``validate(text)`` may raise ValueError to ask again. Retries as the module says."""
        last, attempt = "no attempt", 0
        for attempt in range(1, self.config.retries + 1):
            payload: dict[str, Any] = {
                "model": self.config.model,
                "messages": messages,
                "temperature": temperature,
            }
            if max_tokens is not None:
                payload["max_tokens"] = max_tokens
            wait_at_least = 0.0
            try:
                body = self._post(payload)
                choice = body["choices"][0]
                text = choice["message"]["content"]
                if not isinstance(text, str):
                    raise TypeError("content is not text")
                if validate is not None:
                    validate(text)
                usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
                tokens = usage.get("completion_tokens")
                reason = choice.get("finish_reason")
                return ChatReply(
                    text,
                    reason if isinstance(reason, str) else None,
                    tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None,
                )
            except urllib.error.HTTPError as e:
                message = _server_message(e)
                last = f"HTTP {e.code}" + (f" ({message})" if message else "")
                if e.code < 500 and e.code != 429:  # the request itself is wrong: asking again cannot help
                    raise EndpointError(
                        f"{self.config.url}: {last}; not retried (model {self.config.model!r})"
                    ) from None
                wait_at_least = _retry_after(e)
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                reason = getattr(e, "reason", e)
                last = f"unreachable ({type(reason).__name__}: {reason})"
            except (json.JSONDecodeError, UnicodeDecodeError):
                last = "reply is not JSON"
            except (KeyError, IndexError, TypeError, AttributeError):
                last = "reply is not a chat completion (no choices[0].message.content)"
            except ValueError as e:
                last = f"unusable answer ({e})"
            if attempt < self.config.retries:
                self._wait(attempt, wait_at_least)
        raise EndpointError(f"{self.config.url}: {last} after {attempt} tries (model {self.config.model!r})")

    def complete(
        self,
        messages: list[dict[str, Any]],
        temperature: float = 0.0,
        max_tokens: int | None = None,
        validate=None,
    ) -> str:
        """The assistant text of one completion; ``validate(text)`` may raise ValueError to ask again."""
        return self.chat(messages, temperature, max_tokens, validate).text
