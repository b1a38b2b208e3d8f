"""The judge interface: every judge turns response records into judgements that name the judge.

A response record (one line of ``responses.jsonl``) has at least ``id``, ``response``, ``label``,
``category``, ``benchmark`` and ``extra``. A :class:`Judgement` carries what the judge decided:

* ``refused``: the response refuses (keyword matchers, refusal scorers), or None when the judge does not say;
* ``unsafe``: the response is harmful / the attack succeeded, or None;
* ``score``: a graded value in [0, 1] (MM-Vet correctness, Constructive Score, P(unsafe)), or None;
* ``raw``: the judge's own output (LLM text, matched phrase), for audit.

Every judged row stores the judge's ``name``, ``version`` and ``prompt_hash`` (a hash of the templates or
word list it used), so results of different judges are never mixed silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class Judgement:
    """One judge's decision on one response."""

    refused: bool | None = None
    unsafe: bool | None = None
    score: float | None = None
    raw: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class Judge(Protocol):
    """A judge: ``name`` (e.g. ``keyword:gcg``), ``version``, ``prompt_hash``; judges a list of records."""

    name: str
    version: str

    @property
    def prompt_hash(self) -> str: ...

    def judge(self, records: list[dict[str, Any]]) -> list[Judgement]: ...


def judge_key(judge: Judge) -> dict[str, str]:
    """What identifies a judge's results: name, version, prompt hash."""
    return {"judge": judge.name, "judge_version": judge.version, "prompt_hash": judge.prompt_hash}
