"""Build VSFA training sets: neutral VQA on threat images in four variants with identical form.

Variants (one folder each, ``data.jsonl`` + ``manifest.json``):

- ``image``: VQA with the image (the main VSFA method);
- ``text``: the same questions and answers, the image replaced by its textual description;
- ``mixed``: the same records, half of the images (a seeded half) in image form, half in text form;
- ``control``: the same templates, question count and form as ``image``, on *neutral* images.

Templates are drawn per image index from the build seed only, so with matched image sets (procedural scenes
share layouts across kinds) all four variants have equal sizes and template distributions: differences between
runs are attributable to threat content alone. Every target passes the label-free lint, or the build fails and
lists the offending targets (``allow_labelled`` records them in the manifest instead).

A record is one conversation in the chat "messages" form HF processors' chat templates take, with at most one
image reference (relative to the data folder)::

    {"id": "image/000003/colour_of", "messages": [{"role": "user", "content": [{"type": "image"},
     {"type": "text", "text": "What colour is the knife?"}]}, {"role": "assistant", "content":
     [{"type": "text", "text": "The knife is red."}]}], "images": ["../images/threat/threat-000003.png"],
     "variant": "image", "form": "image", "template": "colour_of", "answer_source": "annotation",
     "image_kind": "threat", "image_index": 3, "image_sha256": "...", "labelled": false}
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vsfa.config import check_counts
from vsfa.data.images import (
    ANNOTATIONS,
    load_image,
    read_annotations,
    read_image_manifest,
    write_procedural_set,
)
from vsfa.data.lint import LabelLint, format_hits
from vsfa.data.sources import AnnotationSource, AnswerSource, AskItem
from vsfa.data.templates import DESCRIBE_TEMPLATE, TEMPLATES, Question, description, pick_questions
from vsfa.errors import DataError
from vsfa.io import (
    atomic_dir,
    output_lock,
    reuse_or_replace,
    sha256_file,
    sha256_json,
    write_jsonl_atomic,
    write_manifest,
)

VARIANTS = ("image", "text", "mixed", "control")
DATA_FILE = "data.jsonl"
DESCRIPTION_PREFIX = "Image description: "
DESCRIBE_QUESTION = TEMPLATES[DESCRIBE_TEMPLATE].phrasings[1]


@dataclass
class ImageItem:
    """One image of a set: its position in the set, file, hash, label and (optional) annotation."""

    index: int
    path: Path
    sha256: str
    label: str
    annotation: dict | None


def load_image_set(
    source: str | Path, annotations: str | Path | None = None, n: int | None = None
) -> list[ImageItem]:
    """Images of an image set folder or manifest JSONL (first ``n`` in manifest order), with annotations.

    An image-set folder's own ``annotations.jsonl`` is used unless ``annotations`` is given.
    """
    base, rows = read_image_manifest(source)
    ann_file = Path(annotations) if annotations is not None else None
    if ann_file is None and Path(source).is_dir() and (Path(source) / ANNOTATIONS).is_file():
        ann_file = Path(source) / ANNOTATIONS
    anns = read_annotations(ann_file, base) if ann_file is not None else {}
    if n is not None:
        if n < 1:
            raise DataError(f"number of images must be at least 1, not {n}")
        if n > len(rows):
            raise DataError(f"{source}: asked for {n} images, the set has {len(rows)}")
        rows = rows[:n]
    items = []
    for i, r in enumerate(rows):
        p = Path(r["path"])
        full = p if p.is_absolute() else base / p
        ann = anns.get(os.path.relpath(full.resolve(), base.resolve()))
        if ann_file is not None and ann is None:
            raise DataError(f"{ann_file}: no annotation for image {r['path']}")
        if not full.is_file():
            raise DataError(f"{full}: image not found (listed in {source})")
        if sha256_file(full) != r["sha256"]:
            raise DataError(
                f"{full}: image changed since its manifest {source} was written (sha256 differs); "
                "rebuild the manifest (vsfa data manifest) or restore the image"
            )
        items.append(ImageItem(i, full, r["sha256"], r.get("label", "unknown"), ann))
    return items


def _user_content(form: str, question: str, desc: str | None) -> list[dict]:
    if form == "image":
        return [{"type": "image"}, {"type": "text", "text": question}]
    return [{"type": "text", "text": f"{DESCRIPTION_PREFIX}{desc}\n\n{question}"}]


def make_record(
    variant: str,
    form: str,
    item: ImageItem,
    question: Question,
    answer: str,
    desc: str | None,
    source_name: str,
    folder: Path,
) -> dict:
    """One chat record; ``folder`` is the data folder the image path is written relative to."""
    return {
        "id": f"{variant}/{item.index:06d}/{question.template}",
        "messages": [
            {"role": "user", "content": _user_content(form, question.text, desc)},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
        "images": [os.path.relpath(item.path.resolve(), folder.resolve())] if form == "image" else [],
        "variant": variant,
        "form": form,
        "template": question.template,
        "question": question.text,
        "answer_source": source_name,
        "image_kind": item.label,
        "image_index": item.index,
        "image_sha256": item.sha256,
        "labelled": False,
    }


@dataclass
class _Answered:
    items: list[ImageItem]
    questions: list[list[Question]]
    answers: list[list[str]]
    descriptions: list[str | None]


def _answer_set(
    items: list[ImageItem], source: AnswerSource, k: int, seed: int, need_descriptions: bool
) -> _Answered:
    from_ann = isinstance(source, AnnotationSource)
    questions = [
        pick_questions(it.annotation, k, seed, it.index, answer_from_annotation=from_ann) for it in items
    ]
    asks: list[AskItem] = []
    for it, qs in zip(items, questions, strict=True):
        image = None if from_ann else load_image(it.path)
        asks.extend(AskItem(image, q, it.annotation) for q in qs)
        if need_descriptions and not from_ann:
            asks.append(AskItem(image, Question(DESCRIBE_TEMPLATE, DESCRIBE_QUESTION), it.annotation))
    flat = source.answer(asks)
    if len(flat) != len(asks):
        raise DataError(
            f"answer source {source.name!r} returned {len(flat)} answers for {len(asks)} questions"
        )
    answers, descriptions, pos = [], [], 0
    for it, qs in zip(items, questions, strict=True):
        answers.append(flat[pos : pos + len(qs)])
        pos += len(qs)
        if need_descriptions and not from_ann:
            descriptions.append(flat[pos])
            pos += 1
        elif need_descriptions:
            if it.annotation is None:
                raise DataError(f"{it.path}: the text variant needs an annotation (caption or objects)")
            descriptions.append(description(it.annotation))
        else:
            descriptions.append(None)
    empty = [f"{it.path}" for it, ans in zip(items, answers, strict=True) if any(not a.strip() for a in ans)]
    if empty:
        raise DataError(f"answer source {source.name!r} gave empty answers for: {', '.join(empty[:5])}")
    return _Answered(items, questions, answers, descriptions)


def mixed_forms(n: int, seed: int) -> list[str]:
    """Form per image index for the ``mixed`` variant: a seeded half in image form, the rest in text form."""
    image_half = set(random.Random(f"vsfa-mixed:{seed}").sample(range(n), n // 2 + n % 2))
    return ["image" if i in image_half else "text" for i in range(n)]


def _records(variant: str, ans: _Answered, source_name: str, folder: Path, seed: int) -> list[dict]:
    n = len(ans.items)
    forms = {"image": ["image"] * n, "control": ["image"] * n, "text": ["text"] * n}.get(variant)
    forms = forms or mixed_forms(n, seed)
    out = []
    for it, qs, answers, desc, form in zip(
        ans.items, ans.questions, ans.answers, ans.descriptions, forms, strict=True
    ):
        for q, a in zip(qs, answers, strict=True):
            out.append(make_record(variant, form, it, q, a, desc, source_name, folder))
    return out


def data_manifest(records: list[dict], data_file: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Counts, template/form distributions and the content hash of a data file (the records carry image hashes)."""
    images = sorted({r["image_sha256"] for r in records if r.get("image_sha256")})
    return {
        "kind": "vsfa-data",
        "n_records": len(records),
        "n_images": len({(r.get("image_index"), r.get("image_sha256")) for r in records}),
        "templates": dict(sorted(Counter(r["template"] for r in records).items())),
        "forms": dict(sorted(Counter(r["form"] for r in records).items())),
        "image_kinds": dict(sorted(Counter(r["image_kind"] for r in records).items())),
        "data_file": DATA_FILE,
        "data_hash": sha256_file(data_file),
        "images_hash": sha256_json(images),
        **extra,
    }


def _lint(records: list[dict], lint: LabelLint, allow_labelled: bool) -> dict:
    hits = lint.lint_records(records)
    if hits and not allow_labelled:
        n_rec = len({h.record_id for h in hits})
        raise DataError(
            f"{n_rec} target(s) carry safety/refusal language (label-free lint, {lint.path.name}): "
            f"{format_hits(hits)}; fix the answers or pass --allow-labelled"
        )
    return {
        "applied": True,
        "word_list": lint.path.name,
        "word_list_sha256": sha256_file(lint.path),
        "n_hits": len(hits),
        "n_records_hit": len({h.record_id for h in hits}),
        "allowed": bool(allow_labelled and hits),
    }


def build_variants(
    out: str | Path,
    variants: Sequence[str] = VARIANTS,
    threat: str | Path | None = None,
    neutral: str | Path | None = None,
    source: AnswerSource | None = None,
    questions_per_image: int = 3,
    seed: int = 0,
    n_images: int | None = None,
    threat_annotations: str | Path | None = None,
    neutral_annotations: str | Path | None = None,
    allow_labelled: bool = False,
    lint_file: str | Path | None = None,
    procedural: int | None = None,
    procedural_size: int = 224,
    procedural_text_prob: float = 0.25,
    procedural_style: str = "scene",
    overwrite: bool = False,
) -> Path:
    """Build the requested variants into ``out/<variant>/`` (atomically: all or nothing; manifest last).

    ``procedural=N`` renders N threat and N neutral scenes into ``out/images/`` first (seeds ``seed..``).
    A complete build of the same inputs (image content, answers source, settings) is reused; one of other
    inputs is refused unless ``overwrite``. Every image's hash is checked against its set's manifest.
    """
    variants = list(dict.fromkeys(variants))
    bad = [v for v in variants if v not in VARIANTS]
    if not variants or bad:
        raise DataError(f"unknown variant {bad[0] if bad else ''!r}; choose from {', '.join(VARIANTS)}")
    if questions_per_image < 1:
        raise DataError(f"questions_per_image must be at least 1, not {questions_per_image}")
    source = source or AnnotationSource()
    lint = LabelLint(lint_file)
    needs_threat = any(v != "control" for v in variants)
    out = Path(out)
    if procedural is not None:
        if threat is not None or neutral is not None:
            raise DataError("give either procedural=N or image sets (threat/neutral), not both")
        check_counts("build", procedural=procedural)
        images: dict[str, Any] = {
            "procedural": procedural,
            "size": procedural_size,
            "text_prob": procedural_text_prob,
            "style": procedural_style,
        }
    else:
        if needs_threat and threat is None:
            raise DataError(f"variants {', '.join(v for v in variants if v != 'control')} need threat images")
        if "control" in variants and neutral is None:
            raise DataError("the control variant needs neutral images")
        threat_items = load_image_set(threat, threat_annotations, n_images) if needs_threat else []
        n_ctrl = n_images if n_images is not None else (len(threat_items) or None)
        neutral_items = load_image_set(neutral, neutral_annotations, n_ctrl) if "control" in variants else []
        images = {"threat": _set_key(threat_items), "neutral": _set_key(neutral_items)}
    inputs = {
        "variants": variants,
        "images": images,
        "n_images": n_images,
        "answer_source": source.describe_config(),
        "questions_per_image": questions_per_image,
        "seed": seed,
        "allow_labelled": allow_labelled,
        "lint": sha256_file(lint.path) if lint.path else None,
    }
    with output_lock(out):  # one writer per folder; same inputs: reuse; other inputs: --overwrite
        if reuse_or_replace(out, inputs, overwrite):
            return out
        with atomic_dir(out) as tmp:
            if procedural is not None:
                threat, neutral = (
                    write_procedural_set(
                        kind,
                        procedural,
                        tmp / "images" / kind,
                        seed,
                        procedural_size,
                        procedural_text_prob,
                        procedural_style,
                    )
                    for kind in ("threat", "neutral")
                )
                threat_items = load_image_set(threat, threat_annotations, n_images) if needs_threat else []
                n_ctrl = n_images if n_images is not None else (len(threat_items) or None)
                neutral_items = (
                    load_image_set(neutral, neutral_annotations, n_ctrl) if "control" in variants else []
                )
            need_desc = any(v in ("text", "mixed") for v in variants)
            answered = {}
            if threat_items:
                answered["threat"] = _answer_set(threat_items, source, questions_per_image, seed, need_desc)
            if neutral_items:
                answered["neutral"] = _answer_set(neutral_items, source, questions_per_image, seed, False)
            built: dict[str, list[dict]] = {}
            for v in (
                variants
            ):  # image paths relative to tmp/<v>: the same relative path after the rename to out/<v>
                built[v] = _records(
                    v, answered["neutral" if v == "control" else "threat"], source.name, tmp / v, seed
                )
            lint_info = {v: _lint(recs, lint, allow_labelled) for v, recs in built.items()}
            summary = {}
            for v, recs in built.items():
                folder = tmp / v
                write_jsonl_atomic(folder / DATA_FILE, recs)
                image_set = neutral if v == "control" else threat
                man = data_manifest(
                    recs,
                    folder / DATA_FILE,
                    {
                        "variant": v,
                        "arm": "control" if v == "control" else "vsfa",
                        "labelled": bool(lint_info[v]["allowed"]),
                        "lint": lint_info[v],
                        "answer_source": source.describe_config(),
                        "questions_per_image": questions_per_image,
                        "seed": seed,
                        "image_set": os.path.relpath(Path(image_set).resolve(), tmp.resolve())
                        if procedural is not None
                        else str(image_set),
                    },
                )
                write_manifest(folder, man)
                summary[v] = {k: man[k] for k in ("n_records", "n_images", "data_hash", "templates", "forms")}
            forms = {v: (info["n_records"], info["templates"]) for v, info in summary.items()}
            write_manifest(
                tmp,
                {
                    "kind": "vsfa-data-build",
                    # identical sizes and template distributions across variants: differences between runs are then
                    # attributable to content alone (guaranteed for procedural sets; user sets need matching annotations)
                    "form_matched": len({json.dumps(f, sort_keys=True) for f in forms.values()}) == 1,
                    "variants": summary,
                    "seed": seed,
                    "questions_per_image": questions_per_image,
                    "answer_source": source.describe_config(),
                    "procedural": procedural,
                    "procedural_style": procedural_style if procedural is not None else None,
                    "inputs": inputs,
                },
            )
    return out


def _set_key(items: list[ImageItem]) -> str | None:
    """Content key of an image set as used: image hashes and annotations (not where the files live)."""
    return sha256_json([[it.sha256, it.annotation] for it in items]) if items else None


@dataclass
class BuildConfig:
    """Settings of ``vsfa data build``."""

    out: Path
    """Output folder; one sub-folder per variant."""
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    """Variants to build."""
    procedural: int | None = None
    """Render N threat + N neutral scenes first."""
    threat: Path | None = None
    """Threat image set folder or manifest JSONL."""
    neutral: Path | None = None
    """Neutral image set folder or manifest JSONL (control)."""
    threat_annotations: Path | None = None
    """Annotations JSONL for the threat images."""
    neutral_annotations: Path | None = None
    """Annotations JSONL for the neutral images."""
    source: str = "annotation"
    """Answer source: annotation | self | endpoint."""
    model: Path | None = None
    """Base model folder (source 'self')."""
    endpoint: str | None = None
    """OpenAI-compatible base URL, e.g. http://localhost:8000/v1."""
    endpoint_model: str | None = None
    """Model name sent to the endpoint."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the endpoint key."""
    questions_per_image: int = 3
    """Questions per image."""
    n_images: int | None = None
    """Use the first N images of each set."""
    seed: int = 0
    """Template draw seed (and procedural scene seed)."""
    size: int = 224
    """Procedural image size."""
    text_prob: float = 0.25
    """Procedural sign rate."""
    style: str = "scene"
    """Procedural style: scene | icon (one large object)."""
    batch_size: int = 8
    """Generation batch size (source 'self')."""
    max_new_tokens: int = 96
    """Answer length limit (sources 'self', 'endpoint')."""
    device: str = "cpu"
    """Device for source 'self'."""
    allow_labelled: bool = False
    """Keep targets that fail the label-free lint (recorded)."""
    overwrite: bool = False
    """Replace a complete build made from other inputs."""


def run_build(cfg: BuildConfig) -> Path:
    """Build neutral VQA training sets (variants image/text/mixed/control with identical form)."""
    from vsfa.data.sources import make_source

    src = make_source(
        cfg.source,
        model=str(cfg.model) if cfg.model else None,
        endpoint=cfg.endpoint,
        endpoint_model=cfg.endpoint_model,
        api_key_env=cfg.api_key_env,
        batch_size=cfg.batch_size,
        max_new_tokens=cfg.max_new_tokens,
        device=cfg.device,
    )
    return build_variants(
        cfg.out,
        cfg.variants,
        threat=cfg.threat,
        neutral=cfg.neutral,
        source=src,
        questions_per_image=cfg.questions_per_image,
        seed=cfg.seed,
        n_images=cfg.n_images,
        threat_annotations=cfg.threat_annotations,
        neutral_annotations=cfg.neutral_annotations,
        allow_labelled=cfg.allow_labelled,
        procedural=cfg.procedural,
        procedural_size=cfg.size,
        procedural_text_prob=cfg.text_prob,
        procedural_style=cfg.style,
        overwrite=cfg.overwrite,
    )


def format_build(folder: Path) -> str:
    """One line per built variant (records, images), plus a warning when the variants' form differs."""
    from vsfa.io import read_manifest

    build = read_manifest(folder)
    lines = [
        f"{folder / v}: {i['n_records']} records, {i['n_images']} images"
        for v, i in build["variants"].items()
    ]
    if not build["form_matched"]:
        lines.append(
            "warning: variants differ in size or template distribution (annotations differ between sets)"
        )
    return "\n".join(lines)
