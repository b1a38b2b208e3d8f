"""Label-free lint: VSFA targets may name threat objects but must not refuse, warn, moralise or judge.

The patterns live in a data file (``vsfa/resources/label_lint.txt``; see its header for the format), so the
list can be read, cited and extended without touching code. Matching is case-insensitive, on word boundaries,
after normalising typographic apostrophes (Llama-3.1 writes ``I’m sorry``) and whitespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vsfa.errors import DataError
from vsfa.io import read_text
from vsfa.resources import resource_path

DEFAULT_LINT_FILE = "label_lint.txt"
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u00b4": "'", "`": "'"})


def normalise(text: str) -> str:
    """Lower-case, ASCII apostrophes, single spaces."""
    return " ".join(text.translate(_APOSTROPHES).lower().split())


@dataclass(frozen=True)
class LintPattern:
    """One pattern of the word list: its category, source line and compiled regex."""

    category: str
    pattern: str
    regex: re.Pattern


@dataclass(frozen=True)
class LintHit:
    """One offending target: the record id, the matched pattern and the matched text in context."""

    record_id: str
    category: str
    pattern: str
    excerpt: str

    def line(self) -> str:
        return f"{self.record_id}: [{self.category}] {self.pattern!r} in {self.excerpt!r}"


def _phrase_regex(phrase: str) -> str:
    words = [re.escape(w) for w in normalise(phrase).split(" ")]
    body = r"\s+".join(words)
    start = r"\b" if re.match(r"\w", phrase) else ""
    end = r"\b" if re.search(r"\w$", phrase) else ""
    return f"{start}{body}{end}"


def load_patterns(path: str | Path | None = None) -> list[LintPattern]:
    """Read a lint word list (default: the shipped ``label_lint.txt``)."""
    path = Path(path) if path is not None else resource_path(DEFAULT_LINT_FILE)
    if not path.is_file():
        raise DataError(f"{path}: lint word list not found")
    patterns: list[LintPattern] = []
    category = "general"
    for i, raw in enumerate(read_text(path).splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            category = line[1:-1].strip()
            continue
        source = line[3:] if line.startswith("re:") else _phrase_regex(line)
        try:
            regex = re.compile(source, re.IGNORECASE)
        except re.error as e:
            raise DataError(f"{path}:{i}: invalid regex {line!r} ({e})") from None
        patterns.append(LintPattern(category, line, regex))
    if not patterns:
        raise DataError(f"{path}: lint word list has no patterns")
    return patterns


class LabelLint:
    """Checks targets against the word list; ``check(text)`` returns the matched patterns."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else resource_path(DEFAULT_LINT_FILE)
        self.patterns = load_patterns(self.path)

    def check(self, text: str) -> list[tuple[LintPattern, str]]:
        """(pattern, excerpt) for every pattern found in ``text``."""
        norm = normalise(text)
        found = []
        for p in self.patterns:
            m = p.regex.search(norm)
            if m:
                lo, hi = max(0, m.start() - 30), min(len(norm), m.end() + 30)
                found.append((p, norm[lo:hi]))
        return found

    def is_clean(self, text: str) -> bool:
        """True when no pattern matches."""
        return not self.check(text)

    def lint_records(self, records: list[dict]) -> list[LintHit]:
        """Lint the assistant targets of chat records; returns every hit (empty list: label-free)."""
        hits = []
        for rec in records:
            for target in assistant_texts(rec):
                for p, excerpt in self.check(target):
                    hits.append(LintHit(str(rec.get("id", "?")), p.category, p.pattern, excerpt))
        return hits


def assistant_texts(record: dict) -> list[str]:
    """The text of every assistant message of a chat record."""
    out = []
    for m in record.get("messages", []):
        if m.get("role") != "assistant":
            continue
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        else:
            out.extend(part.get("text", "") for part in content or [] if part.get("type") == "text")
    return out


def format_hits(hits: list[LintHit], limit: int = 5) -> str:
    """One line listing the first offending targets."""
    shown = "; ".join(h.line() for h in hits[:limit])
    more = f" (+{len(hits) - limit} more)" if len(hits) > limit else ""
    return shown + more
