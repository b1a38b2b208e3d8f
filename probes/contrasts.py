"""Contrast sets: the prompt sets that directions are derived from and evaluated on.

A :class:`ContrastSet` is a list of :class:`PromptItem` (chat messages, optional images, optional response) with a
class label, a CV group and a pair id, plus the images the items refer to. Shipped sets (data files in
``vsfa/resources``; each format is documented below and in the README, and a user file in the same format can be
passed wherever a set name is accepted):

``persona`` (``persona.json`` + ``neutral_questions.json``)
    Pairs of system prompts, *vigilant* (positive) vs *carefree* (negative), each over every neutral question.
    ``persona.json``::

        {"name": "persona", "positive": "vigilant", "negative": "carefree",
         "pairs": [{"id": "wary", "positive": "<system prompt>", "negative": "<system prompt>"}, ...],
         "questions": "neutral_questions.json"      # a file beside this one / a shipped one, or an inline list}

    Questions: ``[{"id": "q001", "text": "...", "split": "extract" | "heldout"}, ...]``. Items are grouped by
    question (``group``) and by persona pair (``pair``), so probes can be cross-validated over either.
``requests`` / ``requests_image`` (``requests.jsonl``)
    Harmful (positive) vs harmless requests, matched in form pair by pair; one JSON object per line::

        {"id": "harm-001", "label": "harmful", "pair": "pair-001", "category": "lockpicking", "text": "..."}

    Optional keys: ``system`` (a system prompt), ``image`` (an image path, relative to the file),
    ``response`` (for teacher-forced response positions), ``split``. ``requests_image`` adds a neutral
    procedural image to every item. A user file may use any two labels; the positive class is ``harmful`` when
    present, else the label of the first line.
``visual_threat``
    Threat vs neutral images (procedural by default) under the same neutral image questions
    (``image_questions`` in ``neutral_questions.json``); grouped by question, paired by scene index. User images:
    a ``.json`` file ``{"threat_dir": "...", "neutral_dir": "...", "questions": optional}`` (folders relative
    to the file; every .png/.jpg/.jpeg/.webp/.bmp inside is used).
``neutral`` / ``neutral_image``
    One-class evaluation sets: the neutral questions with no system prompt (optionally with a neutral image).
    Used to measure where a model sits along a direction, never to derive one.

*Exposure* (the same set on the base model vs a checkpoint) is not a separate file: capture any set on both
models and compare the stores (see :mod:`probes.stages`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vsfa.config import check_counts
from vsfa.errors import DataError
from vsfa.io import read_json, read_jsonl, sha256_json
from vsfa.resources import resource_path

Message = dict[str, Any]
SHIPPED_SETS = ("persona", "requests", "requests_image", "visual_threat", "neutral", "neutral_image")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a contrast set.

    ``messages`` end with the user turn (HF chat form; an image is a ``{"type": "image"}`` part, in the same
    order as ``image_ids``). ``instruction`` is the user's text, used to find the post-instruction template
    tokens. ``group`` is the cross-validation group (the question, or the request pair), ``pair`` the persona
    pair (or None). ``response`` (optional) is teacher-forced for response-mean positions.
    """

    id: str
    label: str
    group: str
    messages: tuple[Message, ...]
    instruction: str
    pair: str | None = None
    image_ids: tuple[str, ...] = ()
    response: str | None = None
    split: str = "extract"
    category: str | None = None

    def spec(self) -> dict[str, Any]:
        """Everything that determines the item's activations (for content keys)."""
        return {
            "id": self.id,
            "messages": list(self.messages),
            "images": list(self.image_ids),
            "response": self.response,
        }

    def index_row(self, set_name: str) -> dict[str, Any]:
        """The row this item gets in an activation store's index."""
        return {
            "id": self.id,
            "label": self.label,
            "group": self.group,
            "pair": self.pair,
            "split": self.split,
            "category": self.category,
            "set": set_name,
        }


@dataclass
class ContrastSet:
    """A named list of items with a positive and (for contrasts) a negative class, and their images."""

    name: str
    positive: str
    negative: str | None
    items: list[PromptItem]
    images: dict[str, Any] = field(default_factory=dict)  # image id -> PIL image
    source: str = ""

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> tuple[str, ...]:
        return (self.positive,) if self.negative is None else (self.positive, self.negative)

    def y(self) -> np.ndarray:
        """1 for the positive class, 0 otherwise."""
        return np.array([int(it.label == self.positive) for it in self.items])

    def counts(self) -> dict[str, int]:
        """Items per class."""
        return {lab: sum(it.label == lab for it in self.items) for lab in self.labels}

    def check_classes(self) -> None:
        """A contrast needs both classes non-empty; a DataError names the set, its file and the empty class."""
        for lab, n in self.counts().items():
            if n == 0:
                raise DataError(f"contrast set {self.name!r} ({self.source}): class {lab!r} is empty")

    def split(self, which: str) -> ContrastSet:
        """The items of one split (``extract`` / ``heldout``)."""
        return replace(self, items=[it for it in self.items if it.split == which])

    def key(self) -> str:
        """Content key: item specs, labels and the bytes of every image used."""
        used = sorted({i for it in self.items for i in it.image_ids})
        missing = [i for i in used if i not in self.images]
        if missing:
            raise DataError(f"contrast set {self.name!r}: items refer to unknown images {missing[:3]}")
        image_hashes = {i: image_digest(self.images[i]) for i in used}
        spec = {
            "name": self.name,
            "labels": list(self.labels),
            "items": [it.spec() | {"label": it.label} for it in self.items],
            "images": image_hashes,
        }
        return sha256_json(spec)

    def item_images(self, item: PromptItem) -> list[Any]:
        """The PIL images of one item, in message order."""
        return [self.images[i] for i in item.image_ids]


def image_digest(image: Any) -> str:
    """SHA-256 of a PIL image's mode, size and pixels."""
    h = hashlib.sha256(f"{image.mode}:{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def user_message(text: str, n_images: int = 0) -> Message:
    """A user turn with ``n_images`` image parts before the text."""
    return {
        "role": "user",
        "content": [*({"type": "image"} for _ in range(n_images)), {"type": "text", "text": text}],
    }


def system_message(text: str) -> Message:
    """A system turn."""
    return {"role": "system", "content": [{"type": "text", "text": text}]}


# ------------------------------------------------------------------------------------------- file loading
def _resolve(name_or_path: str | Path, default: str) -> Path:
    """A user path if it exists, else a shipped resource of that name."""
    path = Path(name_or_path) if name_or_path else None
    if path is not None and path.exists():
        return path
    return resource_path(str(name_or_path) if name_or_path else default)


def _need(obj: dict, key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"{where}: missing field {key!r}")
    if not isinstance(obj[key], kind):
        raise DataError(f"{where}: field {key!r} must be {getattr(kind, '__name__', kind)}")
    return obj[key]


def load_questions(spec: str | Path | list | None = None, key: str = "questions", base: Path | None = None):
    """Neutral questions ``[{"id", "text", "split"}]`` from a file (``{"questions": [...]}``) or a list."""
    if isinstance(spec, list):
        rows, where = spec, "inline questions"
    else:
        path = Path(spec) if spec else None
        if path is not None and base is not None and not path.is_absolute() and (base / path).exists():
            path = base / path
        path = _resolve(path or "", "neutral_questions.json")
        data, where = read_json(path), str(path)
        rows = _need(data, key, where, list)
    out, seen = [], set()
    for i, row in enumerate(rows):
        here = f"{where}: {key}[{i}]"
        qid, text = _need(row, "id", here), _need(row, "text", here)
        split = row.get("split", "extract")
        if split not in ("extract", "heldout"):
            raise DataError(f"{here}: split must be 'extract' or 'heldout', not {split!r}")
        if qid in seen:
            raise DataError(f"{here}: duplicate id {qid!r}")
        seen.add(qid)
        out.append({"id": qid, "text": text, "split": split})
    if not out:
        raise DataError(f"{where}: no {key}")
    return out


def persona_set(path: str | Path | None = None, max_questions: int | None = None) -> ContrastSet:
    """The persona contrast: every system-prompt pair over every neutral question (both splits, tagged)."""
    file = _resolve(path or "", "persona.json")
    data = read_json(file)
    where = str(file)
    positive = data.get("positive", "vigilant")
    negative = data.get("negative", "carefree")
    pairs = _need(data, "pairs", where, list)
    questions = load_questions(data.get("questions"), base=file.parent)
    if max_questions is not None:
        questions = _balanced_head(questions, max_questions)
    items = []
    for i, pair in enumerate(pairs):
        here = f"{where}: pairs[{i}]"
        pid = _need(pair, "id", here)
        for q in questions:
            for label, side in ((positive, "positive"), (negative, "negative")):
                prompt = _need(pair, side, here)
                items.append(
                    PromptItem(
                        id=f"{pid}:{side[:3]}:{q['id']}",
                        label=label,
                        group=q["id"],
                        pair=pid,
                        messages=(system_message(prompt), user_message(q["text"])),
                        instruction=q["text"],
                        split=q["split"],
                    )
                )
    if not pairs:
        raise DataError(f"{where}: no persona pairs")
    return ContrastSet(data.get("name") or file.stem, positive, negative, items, source=where)


def _balanced_head(questions: list[dict], n: int) -> list[dict]:
    """The first questions of each split, about in proportion, ``n`` in all."""
    ext = [q for q in questions if q["split"] == "extract"]
    held = [q for q in questions if q["split"] == "heldout"]
    n_held = min(len(held), max(1, round(n * len(held) / max(1, len(questions))))) if held else 0
    return ext[: max(1, n - n_held)] + held[:n_held]


def requests_set(
    path: str | Path | None = None,
    with_image: bool = False,
    name: str | None = None,
    max_pairs: int | None = None,
) -> ContrastSet:
    """Harmful vs harmless requests (``requests.jsonl`` format), text-only or each with a neutral image.

    A row is ``id``, ``label``, ``text`` (optional ``pair``, ``category``, ``image``, ``system``, ``response``,
    ``split``), or instead of ``text`` a whole conversation: ``messages`` (HF chat form, ending with the user
    turn) with ``images`` (paths, one per image part), e.g. a request after an earlier turn as context.

    ``max_pairs``: keep only the first N pairs (both members of each), e.g. to track many checkpoints cheaply.
    """
    file = _resolve(path or "", "requests.jsonl")
    rows = read_jsonl(file)
    if not rows:
        raise DataError(f"{file}: no requests")
    if max_pairs is not None:
        keep = set(list(dict.fromkeys(str(r.get("pair") or r.get("id")) for r in rows))[:max_pairs])
        rows = [r for r in rows if str(r.get("pair") or r.get("id")) in keep]
    labels = list(dict.fromkeys(_need(r, "label", f"{file}:{i + 1}") for i, r in enumerate(rows)))
    positive = "harmful" if "harmful" in labels else labels[0]
    others = [lab for lab in labels if lab != positive]
    if len(others) > 1:
        raise DataError(f"{file}: a contrast needs two labels, found {labels}")
    negative = others[0] if others else ("harmless" if positive == "harmful" else "negative")
    images: dict[str, Any] = {}
    items = []
    for i, row in enumerate(rows):
        here = f"{file}:{i + 1}"
        if "messages" in row:  # a whole conversation ending with the user turn, images in order
            msgs, text, image_ids = _conversation(row, file, here, images)
        else:
            text = _need(row, "text", here)
            image_ids: tuple[str, ...] = ()
            if row.get("image"):
                image_ids = (_file_image(row["image"], file, images),)
            elif with_image:
                image_ids = (neutral_image_id(i),)
                images.setdefault(image_ids[0], procedural_image("neutral", i % N_NEUTRAL_IMAGES))
            msgs = [system_message(row["system"])] if row.get("system") else []
            msgs.append(user_message(text, len(image_ids)))
        items.append(
            PromptItem(
                id=_need(row, "id", here),
                label=row["label"],
                group=str(row.get("pair") or row["id"]),
                pair=row.get("pair"),
                messages=tuple(msgs),
                instruction=text,
                image_ids=image_ids,
                response=row.get("response"),
                split=row.get("split", "extract"),
                category=row.get("category"),
            )
        )
    _check_unique(items, str(file))
    default = "requests_image" if with_image else "requests"
    return ContrastSet(name or default, positive, negative, items, images, source=str(file))


N_NEUTRAL_IMAGES = 8


def _conversation(
    row: dict[str, Any], file: Path, here: str, images: dict[str, Any]
) -> tuple[list[Message], str, tuple[str, ...]]:
    """A ``messages`` row: HF chat messages ending with the user turn; ``images`` = paths, one per image part."""
    msgs = _need(row, "messages", here, list)
    if not msgs or not isinstance(msgs[-1], dict) or msgs[-1].get("role") != "user":
        raise DataError(f"{here}: field 'messages' must end with a user turn")
    content = msgs[-1].get("content")
    parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
    text = " ".join(
        p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text"
    ).strip()
    n_parts = sum(
        1
        for m in msgs
        if isinstance(m.get("content"), list)
        for p in m["content"]
        if isinstance(p, dict) and p.get("type") == "image"
    )
    paths = row.get("images") or []
    if len(paths) != n_parts:
        raise DataError(f"{here}: {n_parts} image parts in 'messages' but {len(paths)} paths in 'images'")
    return list(msgs), text, tuple(_file_image(rel, file, images) for rel in paths)


def _file_image(rel: str, file: Path, images: dict[str, Any]) -> str:
    """Load an image named in a set file (relative to the file) into ``images``; returns its id (the path)."""
    img_path = Path(rel) if Path(rel).is_absolute() else file.parent / rel
    images[str(img_path)] = load_image(img_path)
    return str(img_path)


def neutral_image_id(i: int) -> str:
    return f"procedural:neutral:{i % N_NEUTRAL_IMAGES}"


def procedural_image(kind: str, seed: int, size: int = 224):
    """A procedural scene from :mod:`vsfa.data.procedural` (threat or neutral)."""
    from vsfa.data.procedural import render_scene

    image, _ = render_scene(kind, seed, size=size)
    return image


def load_image(path: Path):
    """An RGB PIL image; unreadable files are a DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not a readable image ({type(e).__name__})") from None


def _folder_images(folder: Path, label: str) -> list[tuple[str, Any]]:
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder for class {label!r} not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return [(str(p), load_image(p)) for p in files]


def visual_threat_set(
    n_images: int = 8,
    questions: str | Path | list | None = None,
    threat_dir: str | Path | None = None,
    neutral_dir: str | Path | None = None,
    seed: int = 0,
    size: int = 224,
    max_questions: int | None = None,
) -> ContrastSet:
    """Threat vs neutral images under the same neutral image questions.

    Procedural by default (``n_images`` scenes per class; scene ``s`` of both kinds shares its layout), or two
    user folders of images (``threat_dir``, ``neutral_dir``; both or neither).
    """
    qs = load_questions(questions, key="image_questions")
    if max_questions is not None:
        qs = _balanced_head(qs, max_questions)
    if (threat_dir is None) != (neutral_dir is None):
        raise DataError("visual threat set: give both threat_dir and neutral_dir, or neither")
    if threat_dir is not None:
        threat = _folder_images(Path(threat_dir), "threat")
        neutral = _folder_images(Path(neutral_dir), "neutral")
        source = f"{threat_dir} vs {neutral_dir}"
    else:
        from vsfa.data.procedural import generate_images

        threat = [
            (f"procedural:threat:{a['seed']}", im)
            for im, a in generate_images("threat", n_images, seed, size)
        ]
        neutral = [
            (f"procedural:neutral:{a['seed']}", im)
            for im, a in generate_images("neutral", n_images, seed, size)
        ]
        source = f"vsfa.data.procedural (n={n_images}, seed={seed})"
    images = dict(threat + neutral)
    items = []
    for label, group in (("threat", threat), ("neutral", neutral)):
        for j, (image_id, _) in enumerate(group):
            for q in qs:
                items.append(
                    PromptItem(
                        id=f"{label}:{j}:{q['id']}",
                        label=label,
                        group=q["id"],
                        pair=f"scene-{j}",
                        messages=(user_message(q["text"], 1),),
                        instruction=q["text"],
                        image_ids=(image_id,),
                        split=q["split"],
                    )
                )
    return ContrastSet("visual_threat", "threat", "neutral", items, images, source=source)


def neutral_set(with_image: bool = False, questions: str | Path | list | None = None) -> ContrastSet:
    """One-class evaluation set: neutral questions, no system prompt (image questions + a neutral image)."""
    key = "image_questions" if with_image else "questions"
    qs = load_questions(questions, key=key)
    images: dict[str, Any] = {}
    items = []
    for i, q in enumerate(qs):
        image_ids: tuple[str, ...] = ()
        if with_image:
            image_ids = (neutral_image_id(i),)
            images.setdefault(image_ids[0], procedural_image("neutral", i % N_NEUTRAL_IMAGES))
        items.append(
            PromptItem(
                id=q["id"],
                label="neutral",
                group=q["id"],
                messages=(user_message(q["text"], len(image_ids)),),
                instruction=q["text"],
                image_ids=image_ids,
                split=q["split"],
            )
        )
    name = "neutral_image" if with_image else "neutral"
    return ContrastSet(name, "neutral", None, items, images, source=f"neutral_questions.json[{key}]")


def _visual_from_file(path: Path, data: dict, max_questions: int | None) -> ContrastSet:
    """A visual-threat spec file: ``{"threat_dir": ..., "neutral_dir": ..., "questions": optional}``."""
    unknown = sorted(set(data) - {"threat_dir", "neutral_dir", "questions", "name"})
    if unknown:
        raise DataError(
            f"{path}: unknown field {unknown[0]!r} (known: threat_dir, neutral_dir, questions, name)"
        )

    def rel(key: str) -> Path:
        p = Path(_need(data, key, str(path)))
        return p if p.is_absolute() else path.parent / p

    cset = visual_threat_set(
        questions=data.get("questions"),
        threat_dir=rel("threat_dir"),
        neutral_dir=rel("neutral_dir"),
        max_questions=max_questions,
    )
    cset.name = data.get("name") or path.stem
    return cset


def _check_unique(items: Sequence[PromptItem], where: str) -> None:
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise DataError(f"{where}: duplicate item id {it.id!r}")
        seen.add(it.id)


IMAGE_VARIANT = ":image"


def load_set(spec: str | Path, max_questions: int | None = None, max_pairs: int | None = None) -> ContrastSet:
    """A shipped set by name (see :data:`SHIPPED_SETS`) or a user file: ``.json`` in the persona format,
    ``.jsonl`` in the requests format (``FILE.jsonl:image`` adds a neutral procedural image to every request
    without one, as ``requests_image`` does for the shipped file). ``max_pairs`` limits request sets to their
    first N pairs."""
    check_counts(f"set {spec}", max_questions=max_questions, max_pairs=max_pairs)
    name = str(spec)
    if name == "persona":
        return persona_set(max_questions=max_questions)
    if name in ("requests", "requests_image"):
        return requests_set(with_image=name == "requests_image", max_pairs=max_pairs)
    if name == "visual_threat":
        return visual_threat_set(max_questions=max_questions)
    if name in ("neutral", "neutral_image"):
        return neutral_set(with_image=name == "neutral_image")
    with_image = name.endswith(IMAGE_VARIANT)
    path = Path(name[: -len(IMAGE_VARIANT)] if with_image else name)
    if path.suffix == ".jsonl" and path.is_file():
        stem = f"{path.stem}_image" if with_image else path.stem
        return requests_set(path, with_image=with_image, name=stem, max_pairs=max_pairs)
    if path.suffix == ".json" and path.is_file():
        data = read_json(path)
        if isinstance(data, dict) and "threat_dir" in data:
            return _visual_from_file(path, data, max_questions)
        return persona_set(path, max_questions=max_questions)
    raise DataError(
        f"unknown contrast set {name!r}: not a file; shipped sets are {', '.join(SHIPPED_SETS)} "
        "(or pass a .json persona-format or .jsonl requests-format file)"
    )
