"""Neutral VQA question templates and their annotation-based answers.

A template has an id, a few phrasings of the question, the annotation fields needed to *pose* the question
(``needs``) and a function that writes the answer from an annotation (answer source "annotation"). Which
templates an image gets depends only on which fields its annotation has and on a seeded draw, never on what the
objects are, so threat and control sets with matched layouts get identical template distributions.

Answers state what is visible; they never judge it (the label-free lint checks this).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from vsfa.data.procedural import _join, article, describe, object_phrase, position_phrase
from vsfa.errors import DataError

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


@dataclass(frozen=True)
class Template:
    """One question type."""

    id: str
    phrasings: tuple[str, ...]
    needs: tuple[str, ...]  # annotation fields needed to pose the question ("objects", "text", ...)
    answer: Callable[[dict, int], str]  # (annotation, object index) -> answer text
    answer_needs: tuple[str, ...] = ()  # further fields the annotation source needs to answer it
    per_object: bool = False  # the question names one object (chosen by the seeded draw)


def _objects(a: dict) -> list[dict]:
    return a.get("objects") or []


def _number(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def _ans_objects(a: dict, _: int) -> str:
    objs = _objects(a)
    verb = "is" if len(objs) == 1 else "are"
    return f"There {verb} {_join([object_phrase(o) for o in objs])} in the image."


def _ans_count(a: dict, _: int) -> str:
    n = len(_objects(a))
    return "There is one object." if n == 1 else f"There are {_number(n)} objects."


def _ans_colours(a: dict, _: int) -> str:
    parts = [f"the {o['name']} is {o['colour']}" for o in _objects(a)]
    s = _join(parts)
    return s[0].upper() + s[1:] + "."


def _ans_position(a: dict, i: int) -> str:
    o = _objects(a)[i]
    return f"The {o['name']} is {position_phrase(o['position'])} of the image."


def _ans_colour_of(a: dict, i: int) -> str:
    o = _objects(a)[i]
    return f"The {o['name']} is {o['colour']}."


def _ans_object_at(a: dict, i: int) -> str:
    o = _objects(a)[i]
    return f"There is {object_phrase(o)} {position_phrase(o['position'])}."


def _ans_describe(a: dict, _: int) -> str:
    return describe(a) if _objects(a) else _caption(a)


def _caption(a: dict) -> str:
    cap = (a.get("caption") or "").strip()
    if not cap:
        raise DataError(f"annotation of {a.get('image', '?')} has neither objects nor a caption")
    return cap if cap.endswith((".", "!", "?")) else cap + "."


def _ans_background(a: dict, _: int) -> str:
    bg = a["background"]
    if isinstance(bg, dict):
        style = "" if bg.get("style") in (None, "plain") else f"{bg['style']} "
        return f"The background is {style}{bg['colour']}."
    return f"The background is {bg}."


def _ans_text(a: dict, _: int) -> str:
    return f'The sign says "{a["text"]}".'


def _ans_holding(a: dict, _: int) -> str:
    thing = a["holding"].strip()
    has_det = thing.split(" ")[0].lower() in ("a", "an", "the", "some", "two", "three", "his", "her", "their")
    return f"The person is holding {thing if has_det else article(thing)}."


TEMPLATES: dict[str, Template] = {
    t.id: t
    for t in (
        Template(
            "objects",
            ("What objects are in the image?", "What can you see in this image?", "List the objects shown."),
            (),
            _ans_objects,
            answer_needs=("objects",),
        ),
        Template(
            "count",
            ("How many objects are there in the image?", "How many objects can you count?"),
            (),
            _ans_count,
            answer_needs=("objects",),
        ),
        Template(
            "colours",
            ("What colours are the objects?", "Which colour does each object have?"),
            (),
            _ans_colours,
            answer_needs=("objects",),
        ),
        Template(
            "position",
            ("Where is the {name} in the image?", "Where is the {name} located?"),
            ("objects",),
            _ans_position,
            per_object=True,
        ),
        Template(
            "colour_of",
            ("What colour is the {name}?", "Which colour is the {name}?"),
            ("objects",),
            _ans_colour_of,
            per_object=True,
        ),
        Template(
            "object_at",
            ("What is at the {position} of the image?", "What is shown at the {position}?"),
            ("objects",),
            _ans_object_at,
            per_object=True,
        ),
        Template(
            "describe",
            ("Describe the scene.", "Describe the image in one sentence.", "What does this image show?"),
            (),
            _ans_describe,
            answer_needs=("description",),
        ),
        Template(
            "background",
            ("What does the background look like?", "What colour is the background?"),
            (),
            _ans_background,
            answer_needs=("background",),
        ),
        Template(
            "text",
            ("What does the sign say?", "What text is written in the image?"),
            ("text",),
            _ans_text,
        ),
        Template(
            "holding",
            ("What is the person holding?",),
            ("holding",),
            _ans_holding,
        ),
    )
}
DESCRIBE_TEMPLATE = "describe"


def available_fields(annotation: dict | None) -> set[str]:
    """The annotation fields present (``description`` = objects or a caption: the scene can be described)."""
    a = annotation or {}
    fields = {k for k in ("objects", "text", "holding", "background", "caption") if a.get(k)}
    if "objects" in fields or "caption" in fields:
        fields.add("description")
    return fields


def applicable(annotation: dict | None, answer_from_annotation: bool = True) -> list[Template]:
    """Templates whose question can be posed (and, for the annotation source, answered), in registry order."""
    have = available_fields(annotation)
    return [
        t
        for t in TEMPLATES.values()
        if set(t.needs) <= have and (not answer_from_annotation or set(t.answer_needs) <= have)
    ]


@dataclass(frozen=True)
class Question:
    """A posed question: template, text, and the object it names (index into annotation objects)."""

    template: str
    text: str
    object_index: int = 0


def pick_questions(
    annotation: dict | None,
    k: int,
    seed: int,
    index: int,
    allowed: tuple[str, ...] | None = None,
    answer_from_annotation: bool = True,
) -> list[Question]:
    """``k`` distinct templates for image ``index`` (seeded by ``(seed, index)`` only), posed on ``annotation``.

    With model answer sources the annotation may be missing: then the generic templates (objects, count,
    colours, describe, background) still apply; the others need the fields that pose them.
    """
    rng = random.Random(f"vsfa-questions:{seed}:{index}")
    pool = [t for t in applicable(annotation, answer_from_annotation) if allowed is None or t.id in allowed]
    if not pool:
        raise DataError(f"image {index}: no question template applies to its annotation")
    picks = rng.sample(pool, min(k, len(pool)))
    out = []
    n_obj = len(_objects(annotation or {}))
    for t in picks:
        phrasing = rng.choice(t.phrasings)
        obj = rng.randrange(n_obj) if (t.per_object and n_obj) else 0
        out.append(Question(t.id, pose(t, annotation or {}, phrasing, obj), obj))
    return out


def pose(template: Template, annotation: dict, phrasing: str, object_index: int = 0) -> str:
    """Fill a phrasing's ``{name}`` / ``{position}`` from the chosen object."""
    if not template.per_object:
        return phrasing
    o = _objects(annotation)[object_index]
    return phrasing.format(name=o["name"], position=o.get("position", ""))


def annotation_answer(annotation: dict, question: Question) -> str:
    """The answer from the annotation (answer source "annotation")."""
    t = TEMPLATES[question.template]
    try:
        return t.answer(annotation, question.object_index)
    except (KeyError, IndexError, TypeError) as e:
        raise DataError(
            f"annotation of {annotation.get('image', '?')}: cannot answer {question.template!r} (missing {e})"
        ) from None


def description(annotation: dict) -> str:
    """The textual stand-in for an image (text variant): objects + places + background + sign, or caption."""
    return _ans_describe(annotation, 0)
