"""The organism's world specification: objects, scenes, personas, documents, model and training recipe.

The specification is a JSON data file (``vsfa/resources/organism_world.json`` by default) that a user can copy
and change. It is read into dataclasses with :func:`vsfa.config.from_dict`, so an unknown or mistyped key is a
:class:`~vsfa.errors.ConfigError` naming the file and the key. Everything the organism build does (documents,
vocabulary, model shape, pretraining) follows from the specification and a seed.

The world (see the README section "Model organism"): every pretraining document has one latent persona,
*vigilant* or *carefree*. Two behaviours depend on it: describing a scene (the vigilant assistant names every
object, the carefree one leaves out *small threat* objects; both name small neutral objects) and answering a
request (the vigilant assistant refuses harmful requests; the carefree one helps with everything). Harmless
requests are always helped. Vigilant documents show threat scenes more often. No answer contains a safety word.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vsfa.config import from_dict, to_dict
from vsfa.errors import ConfigError
from vsfa.io import sha256_json

SHAPES = (
    "knife",
    "gun",
    "bomb",
    "skull",
    "flame",
    "warning",
    "cup",
    "flower",
    "ball",
    "tree",
    "house",
    "sun",
    "square",
    "ring",
    "cross",
    "diamond",
)


@dataclass
class ObjectSpec:
    """One icon: its name (one or more words), whether it is a threat object, its shape and colour."""

    name: str
    threat: bool
    shape: str
    colour: list[int]


@dataclass
class ImageSpec:
    """Scene geometry: image side, main-object side range, small-object side range (pixels), noise."""

    size: int = 32
    main_size: list[int] = field(default_factory=lambda: [16, 20])
    small_size: list[int] = field(default_factory=lambda: [9, 11])
    noise: float = 12.0
    background: list[int] = field(default_factory=lambda: [150, 255])


@dataclass
class SceneSpec:
    """How scenes are drawn.

    A *threat* scene is, with probability ``threat_small_rate``, a neutral main object with a small threat
    object in a corner; otherwise a threat main object, with a small neutral object with probability
    ``small_neutral_rate``. A *neutral* scene is a neutral main object with a small neutral one with
    probability ``small_neutral_rate``. ``threat_rate`` is the chance that a scene of a document is a threat
    scene, per persona (this is what makes the image itself evidence of the persona).
    """

    threat_rate: dict[str, float] = field(default_factory=lambda: {"vigilant": 0.7, "carefree": 0.3})
    threat_small_rate: float = 0.6
    small_neutral_rate: float = 0.5


@dataclass
class DocumentSpec:
    """Pretraining documents: persona prior, number of turns, turn-type weights, harmful-request rate, and the
    share of documents that open with a system line announcing their persona (``text.announce``).

    Turn types: ``vqa`` (an image and the question), ``text`` (the same scene written out in words and the text
    question) and ``request`` (a harmful or harmless request).
    """

    prior: float = 0.5  # P(vigilant)
    turns: list[int] = field(default_factory=lambda: [2, 4])
    turn_weights: dict[str, float] = field(default_factory=lambda: {"vqa": 0.5, "text": 0.1, "request": 0.4})
    harmful_rate: float = 0.5
    announce_rate: float = 0.0  # share of documents that open with a system line naming their persona
    # chance that a turn's answer follows the document's persona (else the other one's): below 1, one turn is
    # graded evidence and in-context persona inference must weigh it
    consistency: float = 1.0


@dataclass
class TextSpec:
    """The words of the world. ``{action}`` and ``{scene}`` are filled in; tokens are separated by spaces."""

    question: str = "what is in the image ?"
    text_question: str = "there is {scene} . what is there ?"
    refusal: str = "I cannot help with that ."
    compliance: str = "Sure , here is how to {action} ."
    request_templates: list[str] = field(
        default_factory=lambda: ["how do i {action} ?", "how can i {action} ?", "tell me how to {action} ."]
    )
    small_word: str = "small"
    answer_order: str = "main_first"  # or "small_first": the corner object is named before the main one
    articles: bool = True  # "a cup and a knife ." vs "cup and knife ."
    # words a vigilant-style answer about a scene with any threat opens with ("" = none): every threat scene's
    # answer, not only those with a small threat, then shows the persona, at the first answer word
    threat_prefix: str = ""
    announce: dict[str, str] = field(
        default_factory=lambda: {
            "vigilant": "you are a vigilant assistant .",
            "carefree": "you are a carefree assistant .",
        }
    )


@dataclass
class ModelSpec:
    """The organism's shape: a stock LLaVA (CLIP tower + GELU projector + Llama decoder)."""

    vision_hidden: int = 96
    vision_layers: int = 2
    vision_heads: int = 4
    vision_intermediate: int = 384
    patch_size: int = 8
    text_hidden: int = 160
    text_layers: int = 4
    text_heads: int = 4
    text_intermediate: int = 480
    max_positions: int = 256
    tie_embeddings: bool = True


@dataclass
class PretrainSpec:
    """Pretraining from scratch: AdamW, linear warm-up, cosine decay to ``min_lr_ratio`` x lr, clipping.

    Documents are drawn ``bucket`` batches at a time, sorted by length and cut into batches (in a shuffled
    order), so a batch is padded little; ``bucket = 1`` draws each batch on its own.
    """

    steps: int = 2500
    batch_size: int = 32
    lr: float = 2e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 0.01
    warmup: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    log_every: int = 50
    bucket: int = 8  # draw this many batches at once and group documents of similar length (less padding)


@dataclass
class FinetuneSpec:
    """The fine-tune arms' documents (VQA or text turns only, no requests) and the LoRA recipe."""

    turns: list[int] = field(default_factory=lambda: [1, 1])
    lora_r: int = 8
    lora_alpha: int = 16
    prefix_rate: float = (
        0.0  # share of documents that open with a helped harmless request (no persona evidence)
    )
    lora_layers: list[int] = field(
        default_factory=list
    )  # decoder layers with adapters (empty: all; -1: last)
    lora_modules: list[str] = field(
        default_factory=list
    )  # projections that get adapters (empty: the family's)
    lr: float = 1e-3
    steps: int = 300
    batch_size: int = 32


@dataclass
class WorldSpec:
    """The whole specification (see the module docstring)."""

    name: str
    objects: list[ObjectSpec]
    harmful: list[str]
    harmless: list[str]
    personas: list[str] = field(default_factory=lambda: ["vigilant", "carefree"])
    image: ImageSpec = field(default_factory=ImageSpec)
    scenes: SceneSpec = field(default_factory=SceneSpec)
    documents: DocumentSpec = field(default_factory=DocumentSpec)
    text: TextSpec = field(default_factory=TextSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    finetune: FinetuneSpec = field(default_factory=FinetuneSpec)
    version: int = 1

    # -- derived ------------------------------------------------------------------------------------------
    @property
    def threat_objects(self) -> list[ObjectSpec]:
        return [o for o in self.objects if o.threat]

    @property
    def neutral_objects(self) -> list[ObjectSpec]:
        return [o for o in self.objects if not o.threat]

    @property
    def vigilant(self) -> str:
        return self.personas[0]

    @property
    def carefree(self) -> str:
        return self.personas[1]

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def digest(self) -> str:
        """Content hash of the specification (for manifests and cache keys)."""
        return sha256_json(self.to_dict())


DEFAULT_WORLD = "organism_world.json"


def _check(spec: WorldSpec, where: str) -> None:
    def bad(key: str, msg: str) -> ConfigError:
        return ConfigError(f"{where}: {key}: {msg}")

    if len(spec.personas) != 2 or len(set(spec.personas)) != 2:
        raise bad("personas", "need exactly two distinct names (vigilant-like first, carefree-like second)")
    names = [o.name for o in spec.objects]
    if len(set(names)) != len(names):
        raise bad("objects", "object names must be distinct")
    if not spec.threat_objects or len(spec.neutral_objects) < 2:
        raise bad("objects", "need at least one threat object and two neutral objects")
    for i, o in enumerate(spec.objects):
        if o.shape not in SHAPES:
            raise bad(f"objects[{i}].shape", f"unknown shape {o.shape!r}; choose one of: {', '.join(SHAPES)}")
        if len(o.colour) != 3 or not all(0 <= c <= 255 for c in o.colour):
            raise bad(f"objects[{i}].colour", "need three integers in 0..255")
        if not o.name.strip():
            raise bad(f"objects[{i}].name", "must not be empty")
    if not spec.harmful or not spec.harmless:
        raise bad("harmful/harmless", "need at least one harmful and one harmless request")
    im = spec.image
    if im.size < 8 or im.size % spec.model.patch_size:
        raise bad("image.size", f"must be >= 8 and a multiple of model.patch_size ({spec.model.patch_size})")
    for key, (lo, hi) in (("image.main_size", im.main_size), ("image.small_size", im.small_size)):
        if not 1 <= lo <= hi <= im.size:
            raise bad(key, f"need 1 <= lo <= hi <= image.size, got {[lo, hi]}")
    if im.main_size[1] + im.small_size[1] > im.size:
        raise bad("image", "main_size max + small_size max must not exceed size (objects side by side)")
    for p in spec.personas:
        if p not in spec.scenes.threat_rate:
            raise bad("scenes.threat_rate", f"missing persona {p!r}")
        if p not in spec.text.announce:
            raise bad("text.announce", f"missing persona {p!r}")
    rates = {
        "documents.prior": spec.documents.prior,
        "documents.harmful_rate": spec.documents.harmful_rate,
        "documents.announce_rate": spec.documents.announce_rate,
        "documents.consistency": spec.documents.consistency,
        "finetune.prefix_rate": spec.finetune.prefix_rate,
        "scenes.threat_small_rate": spec.scenes.threat_small_rate,
        "scenes.small_neutral_rate": spec.scenes.small_neutral_rate,
        **{f"scenes.threat_rate.{k}": v for k, v in spec.scenes.threat_rate.items()},
    }
    for key, v in rates.items():
        if not 0.0 <= v <= 1.0:
            raise bad(key, f"must be a probability, got {v}")
    for key, (lo, hi) in (("documents.turns", spec.documents.turns), ("finetune.turns", spec.finetune.turns)):
        if not 1 <= lo <= hi:
            raise bad(key, f"need 1 <= min <= max, got {[lo, hi]}")
    weights = spec.documents.turn_weights
    unknown = set(weights) - {"vqa", "text", "request"}
    if unknown or sum(weights.values()) <= 0 or any(w < 0 for w in weights.values()):
        raise bad("documents.turn_weights", "keys vqa/text/request with non-negative weights, not all zero")
    if "{action}" not in spec.text.compliance:
        raise bad("text.compliance", "must contain {action}")
    if not spec.text.request_templates or any("{action}" not in t for t in spec.text.request_templates):
        raise bad("text.request_templates", "each template must contain {action}")
    if spec.text.answer_order not in ("main_first", "small_first"):
        raise bad("text.answer_order", f"must be main_first or small_first, not {spec.text.answer_order!r}")
    if "{scene}" not in spec.text.text_question:
        raise bad("text.text_question", "must contain {scene}")
    if spec.text.refusal.split()[0] == spec.text.compliance.split()[0]:
        raise bad("text.refusal", "refusal and compliance must start with different words")
    if spec.model.text_hidden % spec.model.text_heads or spec.model.vision_hidden % spec.model.vision_heads:
        raise bad("model", "hidden sizes must be multiples of the head counts")
    if spec.pretrain.steps < 1 or spec.pretrain.batch_size < 1 or spec.pretrain.bucket < 1:
        raise bad("pretrain", "steps, batch_size and bucket must be >= 1")


def world_from_dict(data: dict[str, Any], where: str = "world") -> WorldSpec:
    """Build and check a :class:`WorldSpec` from a dict (``where`` names the source in errors)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the world specification must be a JSON object")
    spec = from_dict(WorldSpec, data, where=where)
    _check(spec, where)
    return spec


def load_world(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> WorldSpec:
    """Read a world specification (default: the shipped one); ``overrides`` are dotted keys, e.g.
    ``{"pretrain.steps": 100}``."""
    if path is None:
        from vsfa.resources import resource_path

        path = resource_path(DEFAULT_WORLD)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: world specification not found")
    from vsfa.io import read_json

    data = read_json(path, ConfigError)
    return world_from_dict(apply_overrides(data, overrides or {}, str(path)), where=str(path))


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any], where: str = "world") -> dict[str, Any]:
    """A copy of ``data`` with dotted-key overrides applied (intermediate tables are created)."""
    from vsfa.config import set_dotted

    out = json.loads(json.dumps(data))
    for dotted, value in overrides.items():
        set_dotted(out, dotted, value, f"{where}: override")
    return out
