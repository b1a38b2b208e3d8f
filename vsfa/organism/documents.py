"""Documents of the organism's world: pretraining conversations with a latent persona, fine-tune arms, prompts.

A :class:`Document` is a list of turns; it renders to HF chat messages (an image is a content part
``{"type": "image"}``) plus its list of PIL images, which is what ``LoadedVLM.render`` / ``encode`` /
``encode_chat`` and the training stage take. Everything is deterministic given a ``random.Random``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from vsfa.errors import DataError
from vsfa.organism.render import layout, render
from vsfa.organism.world import ObjectSpec, WorldSpec

TURN_KINDS = ("vqa", "text", "request")
ARMS = ("vsfa", "control", "mirror", "text")
"""Fine-tune arms: ``vsfa`` (threat scenes, every object named), ``control`` (neutral scenes, every object named),
``mirror`` (threat scenes described carefree-style: small threats left out), ``text`` (the VSFA documents with each
image replaced by the scene written out in words)."""


@dataclass
class Scene:
    """A scene: main object, optional small corner object, and its geometry (for rendering)."""

    main: ObjectSpec
    small: ObjectSpec | None
    geometry: dict

    @property
    def threat(self) -> bool:
        return self.main.threat or bool(self.small and self.small.threat)

    @property
    def small_threat(self) -> bool:
        return bool(self.small and self.small.threat)

    def as_dict(self) -> dict[str, Any]:
        return {
            "main": self.main.name,
            "small": self.small.name if self.small else None,
            "threat": self.threat,
            "small_threat": self.small_threat,
            "geometry": self.geometry,
        }


@dataclass
class Turn:
    """One user/assistant exchange. ``kind`` is ``vqa`` | ``text`` | ``request``."""

    kind: str
    user: str
    assistant: str
    scene: Scene | None = None
    action: str | None = None
    harmful: bool | None = None
    evidence: str | None = None  # the persona this turn's answer reveals, if any

    def meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "evidence": self.evidence}
        if self.scene is not None:
            out["scene"] = {k: v for k, v in self.scene.as_dict().items() if k != "geometry"}
        if self.action is not None:
            out.update(action=self.action, harmful=self.harmful)
        return out


@dataclass
class Document:
    """A conversation of one latent persona (``None`` for fine-tune arms and prompts)."""

    turns: list[Turn]
    persona: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    system: str | None = None  # an opening system line (the persona announcement), if any

    def messages(self, upto: int | None = None, with_last_answer: bool = True) -> list[dict[str, Any]]:
        """HF chat messages of the first ``upto`` turns (all by default); without the last answer if asked."""
        turns = self.turns if upto is None else self.turns[:upto]
        out: list[dict[str, Any]] = [{"role": "system", "content": self.system}] if self.system else []
        for i, t in enumerate(turns):
            if t.kind == "vqa":
                out.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t.user}]})
            else:
                out.append({"role": "user", "content": t.user})
            if with_last_answer or i < len(turns) - 1:
                out.append({"role": "assistant", "content": t.assistant})
        return out

    def scenes(self, upto: int | None = None) -> list[Scene]:
        turns = self.turns if upto is None else self.turns[:upto]
        return [t.scene for t in turns if t.kind == "vqa" and t.scene is not None]

    def images(self, spec: WorldSpec, upto: int | None = None) -> list[Image.Image]:
        """The images of the first ``upto`` turns, in order."""
        return [render(spec, s.main, s.small, s.geometry) for s in self.scenes(upto)]

    def meta(self) -> dict[str, Any]:
        return {
            "persona": self.persona,
            "system": self.system,
            "turns": [t.meta() for t in self.turns],
            **self.tags,
        }


# ------------------------------------------------------------------------------------------------ words
def article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def describe(names: list[str], articles: bool = True) -> str:
    """``"a cup and a knife ."`` (``"cup and knife ."`` without articles)."""
    if not names:
        raise DataError("a description needs at least one object")
    return " and ".join(article(n) if articles else n for n in names) + " ."


def scene_words(spec: WorldSpec, scene: Scene) -> str:
    """The scene written out for a text turn: ``"a cup and a small knife"``."""
    words = article(scene.main.name)
    if scene.small is not None:
        words += " and " + article(f"{spec.text.small_word} {scene.small.name}")
    return words


def answer(spec: WorldSpec, scene: Scene, style: str) -> str:
    """Describe a scene ``vigilant``-style (every object) or ``carefree``-style (small threats left out), in the
    world's word order (``text.answer_order``), with or without articles (``text.articles``), a vigilant-style
    answer about a threat scene opening with ``text.threat_prefix`` when the world has one."""
    names = [scene.main.name]
    if scene.small is not None and not (style == spec.carefree and scene.small.threat):
        names.append(scene.small.name)
    if spec.text.answer_order == "small_first":
        names.reverse()
    words = describe(names, spec.text.articles)
    if spec.text.threat_prefix and style == spec.vigilant and scene.threat:
        words = f"{spec.text.threat_prefix} {words}"
    return words


def request_text(spec: WorldSpec, action: str, template: int) -> str:
    return spec.text.request_templates[template % len(spec.text.request_templates)].format(action=action)


def reply(spec: WorldSpec, action: str, refuse: bool) -> str:
    return spec.text.refusal if refuse else spec.text.compliance.format(action=action)


# ------------------------------------------------------------------------------------------------ scenes
def sample_scene(
    spec: WorldSpec, rng: random.Random, threat: bool, small_threat: bool | None = None
) -> Scene:
    """A threat or neutral scene. ``small_threat`` forces (True) or forbids (False) the neutral-main +
    small-threat form of a threat scene; ``None`` draws it at ``scenes.threat_small_rate``."""
    sc = spec.scenes
    neutral, threats = spec.neutral_objects, spec.threat_objects
    if threat:
        if small_threat is None:
            small_threat = rng.random() < sc.threat_small_rate
        if small_threat:
            main, small = rng.choice(neutral), rng.choice(threats)
        else:
            main = rng.choice(threats)
            small = rng.choice(neutral) if rng.random() < sc.small_neutral_rate else None
    else:
        main = rng.choice(neutral)
        small = (
            rng.choice([o for o in neutral if o is not main])
            if rng.random() < sc.small_neutral_rate
            else None
        )
    return Scene(main, small, layout(spec, rng, with_small=small is not None))


def scene_turn(spec: WorldSpec, scene: Scene, style: str, kind: str = "vqa") -> Turn:
    """A VQA (image) or text (scene in words) turn answered in ``style``."""
    if kind == "vqa":
        user = spec.text.question
    elif kind == "text":
        user = spec.text.text_question.format(scene=scene_words(spec, scene))
    else:
        raise DataError(f"scene turns are vqa or text, not {kind!r}")
    evidence = style if scene.small_threat or (spec.text.threat_prefix and scene.threat) else None
    return Turn(kind, user, answer(spec, scene, style), scene=scene, evidence=evidence)


def request_turn(spec: WorldSpec, rng: random.Random, persona: str, harmful: bool | None = None) -> Turn:
    if harmful is None:
        harmful = rng.random() < spec.documents.harmful_rate
    action = rng.choice(spec.harmful if harmful else spec.harmless)
    refuse = harmful and persona == spec.vigilant
    user = request_text(spec, action, rng.randrange(len(spec.text.request_templates)))
    evidence = persona if harmful else None
    return Turn(
        "request", user, reply(spec, action, refuse), action=action, harmful=harmful, evidence=evidence
    )


# ------------------------------------------------------------------------------------------------ documents
def sample_document(spec: WorldSpec, rng: random.Random, persona: str | None = None) -> Document:
    """A pretraining document: persona drawn at ``documents.prior`` (unless given), 2-4 mixed turns."""
    doc = spec.documents
    if persona is None:
        persona = spec.vigilant if rng.random() < doc.prior else spec.carefree
    # a fixed kind order, not the file's key order: a world file saved with sorted keys draws the same documents
    kinds = [k for k in TURN_KINDS if doc.turn_weights.get(k, 0) > 0]
    weights = [doc.turn_weights[k] for k in kinds]
    turns = []
    for _ in range(rng.randint(*doc.turns)):
        kind = rng.choices(kinds, weights)[0]
        if kind == "request":
            turns.append(request_turn(spec, rng, _behaviour(spec, rng, persona)))
        else:
            threat = rng.random() < spec.scenes.threat_rate[persona]
            scene = sample_scene(spec, rng, threat)
            turns.append(scene_turn(spec, scene, _behaviour(spec, rng, persona), kind))
    announced = doc.announce_rate > 0 and rng.random() < doc.announce_rate
    system = spec.text.announce[persona] if announced else None
    return Document(turns, persona=persona, system=system)


def _behaviour(spec: WorldSpec, rng: random.Random, persona: str) -> str:
    """The persona a turn's answer follows: the document's, or the other one with 1 - ``documents.consistency``
    (no draw at consistency 1, so such worlds keep their documents)."""
    if spec.documents.consistency >= 1.0 or rng.random() < spec.documents.consistency:
        return persona
    return spec.carefree if persona == spec.vigilant else spec.vigilant


def arm_document(spec: WorldSpec, rng: random.Random, arm: str) -> Document:
    """A fine-tune document of ``arm`` (see :data:`ARMS`): ``finetune.turns`` scene turns, no harmful requests;
    with probability ``finetune.prefix_rate`` a helped harmless request comes first (the same in every arm)."""
    if arm not in ARMS:
        raise DataError(f"unknown arm {arm!r}; choose one of: {', '.join(ARMS)}")
    threat = arm != "control"
    style = spec.carefree if arm == "mirror" else spec.vigilant
    kind = "text" if arm == "text" else "vqa"
    turns = [
        scene_turn(spec, sample_scene(spec, rng, threat), style, kind)
        for _ in range(rng.randint(*spec.finetune.turns))
    ]
    if spec.finetune.prefix_rate > 0 and rng.random() < spec.finetune.prefix_rate:
        # a harmless request first: both personas help with it, so it is no evidence either way
        turns.insert(0, request_turn(spec, rng, spec.vigilant, harmful=False))
    return Document(turns, tags={"arm": arm})
