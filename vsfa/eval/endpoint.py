"""A minimal client for an OpenAI-compatible chat-completions endpoint (stdlib only).

Used by the LLM judges and by the server generation backend (e.g. a local vLLM serving the model with the
LoRA adapter). Nothing is sent anywhere the user did not configure. Failures (connection refused, timeout,
HTTP 5xx/429, a reply that is not a chat completion) are retried with backoff; after the last try the call
raises :class:`EndpointError` with one line naming the URL and the cause.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
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
    retries: int = 3
    backoff: float = 1.0

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


class ChatClient:
    """Chat completions against ``config.url``; ``complete(messages) -> str``."""

    def __init__(self, config: EndpointConfig):
        if not config.base_url.startswith(("http://", "https://")):
            raise EndpointError(f"endpoint URL must start with http:// or https://, not {config.base_url!r}")
        if config.require_key and config.api_key_env and not os.environ.get(config.api_key_env):
            raise EndpointError(
                f"{config.base_url}: environment variable {config.api_key_env} (the API key) is not set or empty"
            )
        self.config = config
        self.n_requests = 0

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.config.api_key_env:
            key = os.environ.get(self.config.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.config.url, data=json.dumps(payload).encode(), headers=headers)
        self.n_requests += 1
        with urllib.request.urlopen(req, timeout=self.config.timeout) as resp:  # noqa: S310 (user-configured URL)
            return json.loads(resp.read().decode("utf-8"))

    def complete(
        self,
        messages: list[dict[str, Any]],
        temperature: float = 0.0,
        max_tokens: int | None = None,
        validate=None,
    ) -> str:
        """The assistant text of one completion; ``validate(text)`` may raise ValueError to ask again."""
        last = "no attempt"
        for attempt in range(1, self.config.retries + 1):
            payload: dict[str, Any] = {
                "model": self.config.model,
                "messages": messages,
                "temperature": temperature,
            }
            if max_tokens is not None:
                payload["max_tokens"] = max_tokens
            try:
                body = self._post(payload)
                text = body["choices"][0]["message"]["content"]
                if not isinstance(text, str):
                    raise TypeError("content is not text")
                if validate is not None:
                    validate(text)
                return text
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
                if e.code < 500 and e.code != 429:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                reason = getattr(e, "reason", e)
                last = f"unreachable ({type(reason).__name__}: {reason})"
            except (json.JSONDecodeError, UnicodeDecodeError):
                last = "reply is not JSON"
            except (KeyError, IndexError, TypeError):
                last = "reply is not a chat completion (no choices[0].message.content)"
            except ValueError as e:
                last = f"unusable answer ({e})"
            if attempt < self.config.retries:
                time.sleep(self.config.backoff * attempt)
        raise EndpointError(f"{self.config.url}: {last} after {attempt} tries")
