"""Judges: keyword lists, LLM judges over an OpenAI-compatible endpoint, the Constructive Score, a local
Llama-Guard-family classifier. ``make_judge(spec)`` builds one from its CLI name:

* ``keyword`` (= ``keyword:refusal_direction``), ``keyword:gcg``, ``keyword:xstest``, ``keyword:vlguard``;
* ``llm`` and ``cs`` (need an :class:`~vsfa.eval.endpoint.EndpointConfig`);
* ``guard:/path/to/local/llama-guard``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vsfa.errors import ConfigError
from vsfa.eval.endpoint import EndpointConfig
from vsfa.eval.judges.base import Judge, Judgement, judge_key
from vsfa.eval.judges.keyword import DEFAULT_LIST, KEYWORD_LISTS, KeywordJudge


def make_judge(
    spec: str,
    endpoint: EndpointConfig | None = None,
    templates: str | Path | None = None,
    device: str = "cpu",
    **kwargs: Any,
) -> Judge:
    """A judge from its name (see the module docstring)."""
    kind, _, arg = spec.partition(":")
    if kind == "keyword":
        name = arg or DEFAULT_LIST
        if name not in KEYWORD_LISTS and not Path(name).is_file():
            raise ConfigError(
                f"unknown keyword list {name!r}; choose one of: {', '.join(KEYWORD_LISTS)} or a file"
            )
        return KeywordJudge(name) if name in KEYWORD_LISTS else KeywordJudge(Path(name).stem, path=name)
    if kind in ("llm", "cs"):
        from vsfa.eval.judges.llm import ConstructiveJudge, LLMJudge, Templates

        if endpoint is None:
            raise ConfigError(f"judge {spec!r} needs an endpoint: --judge-url URL --judge-model NAME")
        cls = LLMJudge if kind == "llm" else ConstructiveJudge
        return cls(endpoint, Templates(templates) if templates else None, **kwargs)
    if kind == "guard":
        from vsfa.eval.judges.guard import GuardJudge

        if not arg:
            raise ConfigError("judge 'guard' needs a local model folder: guard:/path/to/model")
        return GuardJudge(arg, device=device, **kwargs)
    raise ConfigError(f"unknown judge {spec!r}; choose keyword[:list], llm, cs or guard:PATH")


__all__ = ["Judge", "Judgement", "judge_key", "make_judge"]
