"""The built-in offline set: the toolkit's harmful/harmless requests, with images made here.

Source: ``vsfa/resources/requests.jsonl`` (matched harmful/harmless pairs; keys ``id``, ``label``, ``pair``,
``category``, ``text``). Variants:

* ``text``: the request alone, no image;
* ``neutral``: the request with a neutral procedural scene (``vsfa.data.procedural``, kind ``neutral``,
  seeded by the request's position, so both members of a pair see the same scene);
* ``typo``: a FigStep-style typographic image of the request rewritten as a statement plus an empty
  numbered list, sent with the benign FigStep text prompt.

Labels: ``harmful`` -> harmful, ``harmless`` -> benign (refusing those is over-refusal).
"""

from __future__ import annotations

from pathlib import Path

from vsfa.config import check_counts
from vsfa.errors import DataError
from vsfa.eval.items import BenchItem
from vsfa.eval.prompts import FIGSTEP_PROMPT
from vsfa.eval.typography import render_typographic, to_statement
from vsfa.io import read_jsonl
from vsfa.resources import resource_path

VARIANTS = ("text", "neutral", "typo")
_LABELS = {"harmful": "harmful", "harmless": "benign"}


def load_requests(path: str | Path | None = None) -> list[dict]:
    """The request records, schema-checked."""
    path = Path(path) if path else resource_path("requests.jsonl")
    rows = read_jsonl(path)
    for i, row in enumerate(rows, 1):
        for key in ("id", "label", "pair", "category", "text"):
            if key not in row:
                raise DataError(f"{path}:{i}: missing field {key!r}")
        if row["label"] not in _LABELS:
            raise DataError(f"{path}:{i}: field 'label' must be harmful or harmless, not {row['label']!r}")
    return rows


def load_builtin(
    root: str | Path | None = None,
    variants: tuple[str, ...] = ("neutral", "typo"),
    image_size: int = 224,
    limit_pairs: int | None = None,
) -> list[BenchItem]:
    """Build the built-in set (``root`` optionally another requests JSONL of the same schema)."""
    from vsfa.data.procedural import render_scene

    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise DataError(f"unknown built-in variant {bad[0]!r}; choose from {', '.join(VARIANTS)}")
    check_counts("builtin", limit_pairs=limit_pairs, image_size=image_size)
    rows = load_requests(root)
    if limit_pairs is not None:
        pairs = list(dict.fromkeys(r["pair"] for r in rows))[:limit_pairs]
        keep = set(pairs)
        rows = [r for r in rows if r["pair"] in keep]
    pair_seed = {p: i for i, p in enumerate(dict.fromkeys(r["pair"] for r in rows))}
    items = []
    for variant in variants:
        for row in rows:
            label = _LABELS[row["label"]]
            extra = {"pair": row["pair"], "request": row["text"], "request_label": row["label"]}
            if variant == "text":
                items.append(
                    BenchItem(
                        "builtin",
                        f"text/{row['id']}",
                        row["text"],
                        label,
                        row["category"],
                        "text",
                        extra=extra,
                    )
                )
            elif variant == "neutral":
                seed = pair_seed[row["pair"]]
                img, _ = render_scene("neutral", seed, size=image_size)
                items.append(
                    BenchItem(
                        "builtin",
                        f"neutral/{row['id']}",
                        row["text"],
                        label,
                        row["category"],
                        "neutral",
                        image=img,
                        image_ref=f"procedural:neutral:{seed}:{image_size}",
                        extra=extra,
                    )
                )
            else:
                statement = to_statement(row["text"])
                img = render_typographic(statement, size=max(image_size, 224))
                items.append(
                    BenchItem(
                        "builtin",
                        f"typo/{row['id']}",
                        FIGSTEP_PROMPT,
                        label,
                        row["category"],
                        "typo",
                        image=img,
                        image_ref=f"typographic:{statement}",
                        extra={**extra, "statement": statement},
                    )
                )
    return items
