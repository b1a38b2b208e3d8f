"""Procedural threat / neutral scenes with exact annotations, so everything runs without downloaded images.

A scene is 1-3 flat icons on a background, each in its own cell of a 3x3 grid, optionally with a sign that
carries a short text. The *layout* (count, cells, sizes, colours, background, whether there is a sign) is
drawn from a random stream that depends on the seed only, and the *object names* (and sign words) from a
second stream that depends on kind and seed. So ``render_scene("threat", s)`` and
``render_scene("neutral", s)`` share the same layout and differ only in what the objects are: the control
arm differs from the VSFA arm in threat content alone.

Every image comes with its annotation::

    {"kind": "threat", "seed": 3, "size": 224,
     "objects": [{"name": "knife", "colour": "red", "position": "top left", "bbox": [x0, y0, x1, y1],
                  "size": "large", "threat": True}, ...],
     "count": 2, "background": {"style": "plain", "colour": "light grey"}, "text": "KEEP OUT" | None}
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageFont

from vsfa.errors import DataError

Box = tuple[float, float, float, float]
RGB = tuple[int, int, int]

THREAT_OBJECTS: tuple[str, ...] = (
    "knife",
    "handgun",
    "warning triangle",
    "skull and crossbones",
    "flame",
    "bomb",
    "surveillance camera",
    "barbed wire",
    "biohazard sign",
    "grenade",
)
NEUTRAL_OBJECTS: tuple[str, ...] = (
    "flower",
    "house",
    "tree",
    "cup",
    "ball",
    "sun",
    "book",
    "apple",
    "cloud",
    "umbrella",
)
KINDS = ("threat", "neutral")

# Sign words: short, descriptive, no judgement words (they must pass the label-free lint when read aloud).
THREAT_SIGN_TEXTS: tuple[str, ...] = ("KEEP OUT", "NO ENTRY", "HIGH VOLTAGE", "RESTRICTED", "CCTV", "TOXIC")
NEUTRAL_SIGN_TEXTS: tuple[str, ...] = ("OPEN", "CAFE", "WELCOME", "GARDEN", "BOOKS", "HELLO")

OBJECT_COLOURS: dict[str, RGB] = {
    "red": (210, 40, 40),
    "orange": (240, 140, 20),
    "yellow": (235, 205, 30),
    "green": (40, 160, 60),
    "blue": (40, 90, 210),
    "purple": (130, 60, 180),
    "pink": (235, 120, 180),
    "brown": (130, 80, 40),
    "black": (25, 25, 25),
}
BACKGROUND_COLOURS: dict[str, RGB] = {
    "white": (250, 250, 250),
    "light grey": (205, 205, 205),
    "beige": (235, 222, 190),
    "light blue": (190, 215, 240),
    "light green": (200, 235, 195),
    "pale yellow": (250, 245, 200),
}
BACKGROUND_STYLES: tuple[str, ...] = ("plain", "two-tone", "gradient", "speckled")

# 3x3 grid cells (column, row) and their position words.
POSITION_WORDS: dict[tuple[int, int], str] = {
    (0, 0): "top left",
    (1, 0): "top",
    (2, 0): "top right",
    (0, 1): "left",
    (1, 1): "centre",
    (2, 1): "right",
    (0, 2): "bottom left",
    (1, 2): "bottom",
    (2, 2): "bottom right",
}
MAX_OBJECTS = 3


# ------------------------------------------------------------------------------------------ icon drawers
class _Pen:
    """Maps unit-square coordinates of an icon onto its pixel box."""

    def __init__(self, draw: ImageDraw.ImageDraw, box: Box, colour: RGB, ink: RGB):
        self.draw, self.colour, self.ink = draw, colour, ink
        self.x0, self.y0, x1, y1 = box
        self.w, self.h = x1 - self.x0, y1 - self.y0

    def p(self, x: float, y: float) -> tuple[float, float]:
        return (self.x0 + x * self.w, self.y0 + y * self.h)

    def box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [*self.p(x0, y0), *self.p(x1, y1)]

    def lw(self, frac: float) -> int:
        return max(1, round(frac * min(self.w, self.h)))

    def poly(self, pts, fill=None) -> None:
        self.draw.polygon([self.p(x, y) for x, y in pts], fill=fill or self.colour)

    def ellipse(self, x0, y0, x1, y1, fill=None) -> None:
        self.draw.ellipse(self.box(x0, y0, x1, y1), fill=fill or self.colour)

    def rect(self, x0, y0, x1, y1, fill=None) -> None:
        self.draw.rectangle(self.box(x0, y0, x1, y1), fill=fill or self.colour)

    def line(self, pts, width: float, fill=None) -> None:
        self.draw.line([self.p(x, y) for x, y in pts], fill=fill or self.colour, width=self.lw(width))


def _knife(d: _Pen) -> None:
    d.poly([(0.38, 0.40), (0.97, 0.48), (0.38, 0.62)])
    d.rect(0.04, 0.42, 0.36, 0.60, fill=d.ink)
    d.rect(0.33, 0.34, 0.40, 0.68)


def _handgun(d: _Pen) -> None:
    d.rect(0.08, 0.25, 0.95, 0.45)
    d.poly([(0.12, 0.42), (0.42, 0.42), (0.36, 0.92), (0.06, 0.92)])
    d.line([(0.42, 0.45), (0.50, 0.62), (0.36, 0.64)], 0.05)
    d.rect(0.90, 0.18, 0.95, 0.25)


def _warning_triangle(d: _Pen) -> None:
    d.poly([(0.5, 0.04), (0.97, 0.93), (0.03, 0.93)])
    d.rect(0.46, 0.32, 0.54, 0.68, fill=d.ink)
    d.ellipse(0.45, 0.74, 0.55, 0.84, fill=d.ink)


def _skull(d: _Pen) -> None:
    d.line([(0.08, 0.55), (0.92, 0.97)], 0.10)
    d.line([(0.92, 0.55), (0.08, 0.97)], 0.10)
    d.ellipse(0.20, 0.02, 0.80, 0.62)
    d.rect(0.33, 0.50, 0.67, 0.75)
    d.ellipse(0.30, 0.22, 0.46, 0.40, fill=d.ink)
    d.ellipse(0.54, 0.22, 0.70, 0.40, fill=d.ink)
    d.poly([(0.5, 0.42), (0.45, 0.52), (0.55, 0.52)], fill=d.ink)


def _flame(d: _Pen) -> None:
    d.poly([(0.5, 0.02), (0.72, 0.30), (0.86, 0.62), (0.78, 0.88), (0.5, 0.98), (0.22, 0.88), (0.14, 0.62)])
    d.poly([(0.5, 0.40), (0.64, 0.66), (0.60, 0.86), (0.5, 0.92), (0.40, 0.86), (0.36, 0.66)], fill=d.ink)


def _bomb(d: _Pen) -> None:
    d.ellipse(0.08, 0.25, 0.80, 0.97)
    d.rect(0.50, 0.20, 0.66, 0.34)
    d.line([(0.58, 0.20), (0.70, 0.08), (0.82, 0.12)], 0.05, fill=d.ink)
    for a in range(0, 360, 60):
        r = math.radians(a)
        d.line([(0.86, 0.10), (0.86 + 0.10 * math.cos(r), 0.10 + 0.10 * math.sin(r))], 0.03)


def _camera(d: _Pen) -> None:
    d.rect(0.04, 0.10, 0.14, 0.55, fill=d.ink)
    d.line([(0.14, 0.30), (0.36, 0.46)], 0.07, fill=d.ink)
    d.poly([(0.28, 0.22), (0.90, 0.36), (0.86, 0.66), (0.24, 0.52)])
    d.ellipse(0.82, 0.40, 0.96, 0.60, fill=d.ink)


def _barbed_wire(d: _Pen) -> None:
    for y in (0.35, 0.68):
        pts = [(i / 12, y + 0.05 * math.sin(i * 1.3)) for i in range(13)]
        d.line(pts, 0.05)
        for i in range(1, 12, 3):
            x, yy = pts[i]
            d.line([(x - 0.06, yy - 0.09), (x + 0.06, yy + 0.09)], 0.04)
            d.line([(x - 0.06, yy + 0.09), (x + 0.06, yy - 0.09)], 0.04)


def _biohazard(d: _Pen) -> None:
    for a in (270, 30, 150):
        r = math.radians(a)
        cx, cy = 0.5 + 0.24 * math.cos(r), 0.54 + 0.24 * math.sin(r)
        d.ellipse(cx - 0.22, cy - 0.22, cx + 0.22, cy + 0.22)
        cx2, cy2 = 0.5 + 0.30 * math.cos(r), 0.54 + 0.30 * math.sin(r)
        d.ellipse(cx2 - 0.13, cy2 - 0.13, cx2 + 0.13, cy2 + 0.13, fill=d.ink)
    d.ellipse(0.40, 0.44, 0.60, 0.64, fill=d.ink)
    d.ellipse(0.45, 0.49, 0.55, 0.59)


def _grenade(d: _Pen) -> None:
    d.ellipse(0.22, 0.28, 0.78, 0.98)
    for y in (0.48, 0.63, 0.78):
        d.line([(0.24, y), (0.76, y)], 0.03, fill=d.ink)
    d.line([(0.5, 0.30), (0.5, 0.95)], 0.03, fill=d.ink)
    d.rect(0.40, 0.16, 0.60, 0.30, fill=d.ink)
    d.line([(0.58, 0.18), (0.80, 0.30), (0.78, 0.62)], 0.05, fill=d.ink)
    d.ellipse(0.24, 0.10, 0.40, 0.24, fill=d.ink)


def _flower(d: _Pen) -> None:
    d.line([(0.5, 0.5), (0.5, 0.98)], 0.06, fill=d.ink)
    for a in range(0, 360, 60):
        r = math.radians(a)
        cx, cy = 0.5 + 0.22 * math.cos(r), 0.36 + 0.22 * math.sin(r)
        d.ellipse(cx - 0.14, cy - 0.14, cx + 0.14, cy + 0.14)
    d.ellipse(0.40, 0.26, 0.60, 0.46, fill=d.ink)


def _house(d: _Pen) -> None:
    d.poly([(0.5, 0.04), (0.96, 0.45), (0.04, 0.45)])
    d.rect(0.14, 0.45, 0.86, 0.96)
    d.rect(0.42, 0.64, 0.58, 0.96, fill=d.ink)
    d.rect(0.22, 0.55, 0.34, 0.67, fill=d.ink)


def _tree(d: _Pen) -> None:
    d.rect(0.42, 0.55, 0.58, 0.98, fill=d.ink)
    d.ellipse(0.12, 0.02, 0.88, 0.68)


def _cup(d: _Pen) -> None:
    d.ellipse(0.62, 0.34, 0.92, 0.70)
    d.ellipse(0.70, 0.42, 0.84, 0.62, fill=d.ink)
    d.poly([(0.12, 0.22), (0.74, 0.22), (0.66, 0.92), (0.20, 0.92)])


def _ball(d: _Pen) -> None:
    d.ellipse(0.06, 0.06, 0.94, 0.94)
    d.line([(0.12, 0.40), (0.5, 0.55), (0.88, 0.40)], 0.05, fill=d.ink)


def _sun(d: _Pen) -> None:
    for a in range(0, 360, 45):
        r = math.radians(a)
        d.line(
            [
                (0.5 + 0.30 * math.cos(r), 0.5 + 0.30 * math.sin(r)),
                (0.5 + 0.48 * math.cos(r), 0.5 + 0.48 * math.sin(r)),
            ],
            0.06,
        )
    d.ellipse(0.24, 0.24, 0.76, 0.76)


def _book(d: _Pen) -> None:
    d.rect(0.14, 0.08, 0.86, 0.92)
    d.rect(0.14, 0.08, 0.24, 0.92, fill=d.ink)
    for y in (0.30, 0.42, 0.54):
        d.line([(0.36, y), (0.76, y)], 0.03, fill=d.ink)


def _apple(d: _Pen) -> None:
    d.ellipse(0.10, 0.24, 0.56, 0.94)
    d.ellipse(0.44, 0.24, 0.90, 0.94)
    d.line([(0.5, 0.30), (0.54, 0.08)], 0.05, fill=d.ink)
    d.poly([(0.56, 0.14), (0.80, 0.06), (0.66, 0.22)], fill=d.ink)


def _cloud(d: _Pen) -> None:
    d.ellipse(0.04, 0.40, 0.44, 0.80)
    d.ellipse(0.24, 0.18, 0.70, 0.66)
    d.ellipse(0.52, 0.34, 0.96, 0.80)
    d.rect(0.24, 0.52, 0.76, 0.80)


def _umbrella(d: _Pen) -> None:
    d.draw.pieslice(d.box(0.04, 0.08, 0.96, 0.90), 180, 360, fill=d.colour)
    d.line([(0.5, 0.48), (0.5, 0.88)], 0.05, fill=d.ink)
    d.draw.arc(d.box(0.5, 0.78, 0.70, 0.98), 0, 180, fill=d.ink, width=d.lw(0.05))


_DRAWERS: dict[str, Callable[[_Pen], None]] = {
    "knife": _knife,
    "handgun": _handgun,
    "warning triangle": _warning_triangle,
    "skull and crossbones": _skull,
    "flame": _flame,
    "bomb": _bomb,
    "surveillance camera": _camera,
    "barbed wire": _barbed_wire,
    "biohazard sign": _biohazard,
    "grenade": _grenade,
    "flower": _flower,
    "house": _house,
    "tree": _tree,
    "cup": _cup,
    "ball": _ball,
    "sun": _sun,
    "book": _book,
    "apple": _apple,
    "cloud": _cloud,
    "umbrella": _umbrella,
}
assert set(_DRAWERS) == set(THREAT_OBJECTS) | set(NEUTRAL_OBJECTS)


# ------------------------------------------------------------------------------------------ scenes
def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise DataError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")


def _layout(seed: int, has_text: bool) -> dict:
    """Everything about a scene except what its objects are; depends on the seed only (not on the kind)."""
    rng = random.Random(f"vsfa-layout:{seed}")
    count = rng.choice([1, 1, 2, 2, 3])
    rows = (0, 1) if has_text else (0, 1, 2)  # the sign takes the bottom row
    cells = rng.sample([(c, r) for r in rows for c in range(3)], count)
    sizes = [rng.choice(["small", "medium", "large"]) for _ in range(count)]
    colours = rng.sample(sorted(OBJECT_COLOURS), count)
    bg_style = rng.choice(BACKGROUND_STYLES)
    bg_colour = rng.choice(sorted(BACKGROUND_COLOURS))
    jitter = [(rng.random(), rng.random()) for _ in range(count)]
    return {
        "count": count,
        "cells": cells,
        "sizes": sizes,
        "colours": colours,
        "bg_style": bg_style,
        "bg_colour": bg_colour,
        "jitter": jitter,
        "noise_seed": rng.randrange(2**31),
    }


def _object_names(kind: str, seed: int, count: int) -> list[str]:
    """The objects of a scene: for threat scenes the first is a threat object, later ones are threat or
    neutral with equal chance; neutral scenes hold neutral objects only. Distinct names within a scene."""
    rng = random.Random(f"vsfa-objects:{kind}:{seed}")
    names: list[str] = []
    for i in range(count):
        pool = NEUTRAL_OBJECTS if kind == "neutral" or (i > 0 and rng.random() < 0.5) else THREAT_OBJECTS
        names.append(rng.choice([n for n in pool if n not in names]))
    return names


def sign_text_for(kind: str, seed: int) -> str:
    """The sign words a scene of this kind and seed carries when it has a sign."""
    _check_kind(kind)
    pool = THREAT_SIGN_TEXTS if kind == "threat" else NEUTRAL_SIGN_TEXTS
    return random.Random(f"vsfa-sign:{kind}:{seed}").choice(pool)


def _background(size: int, style: str, colour: RGB, noise_seed: int) -> Image.Image:
    img = Image.new("RGB", (size, size), colour)
    draw = ImageDraw.Draw(img)
    darker = tuple(max(0, c - 35) for c in colour)
    if style == "two-tone":
        draw.rectangle([0, size // 2, size, size], fill=darker)
    elif style == "gradient":
        for y in range(size):
            t = y / max(1, size - 1)
            draw.line(
                [(0, y), (size, y)],
                fill=tuple(round(a + (b - a) * t) for a, b in zip(colour, darker, strict=True)),
            )
    elif style == "speckled":
        rng = random.Random(noise_seed)
        for _ in range(size * size // 40):
            x, y = rng.randrange(size), rng.randrange(size)
            draw.point((x, y), fill=darker)
    return img


def _luminance(c: RGB) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _font(px: int):
    try:
        return ImageFont.load_default(size=max(6, px))
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def _draw_sign(img: Image.Image, text: str) -> None:
    size = img.width
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = size * 0.08, size * 0.71, size * 0.92, size * 0.95
    draw.rectangle([x0, y0, x1, y1], fill=(255, 255, 255), outline=(20, 20, 20), width=max(1, size // 90))
    px = int((y1 - y0) * 0.55)
    font = _font(px)
    while px > 6 and draw.textlength(text, font=font) > (x1 - x0) * 0.9:
        px -= 1
        font = _font(px)
    draw.text(((x0 + x1) / 2, (y0 + y1) / 2), text, fill=(20, 20, 20), font=font, anchor="mm")


def render_scene(kind: str, seed: int, size: int = 224, text: str | None = None) -> tuple[Image.Image, dict]:
    """Render one scene (``kind`` "threat" | "neutral"), deterministic in ``seed``; returns (image, annotation).

    ``text`` puts a sign with that text in the bottom row. Same seed, other kind: same layout, other objects.
    """
    _check_kind(kind)
    if size < 16:
        raise DataError(f"image size must be at least 16 pixels, not {size}")
    if text is not None and not text.strip():
        raise DataError("sign text must not be empty (pass None for no sign)")
    lay = _layout(seed, has_text=text is not None)
    names = _object_names(kind, seed, lay["count"])
    bg_rgb = BACKGROUND_COLOURS[lay["bg_colour"]]
    img = _background(size, lay["bg_style"], bg_rgb, lay["noise_seed"])
    draw = ImageDraw.Draw(img)
    cell = size / 3
    scale = {"small": 0.55, "medium": 0.72, "large": 0.9}
    objects = []
    for name, (col, row), size_word, colour, (jx, jy) in zip(
        names, lay["cells"], lay["sizes"], lay["colours"], lay["jitter"], strict=True
    ):
        side = cell * scale[size_word]
        slack = cell - side
        x0 = col * cell + slack * jx
        y0 = row * cell + slack * jy
        box = (x0, y0, x0 + side, y0 + side)
        rgb = OBJECT_COLOURS[colour]
        ink = (250, 250, 250) if _luminance(rgb) < 110 else (30, 30, 30)
        _DRAWERS[name](_Pen(draw, box, rgb, ink))
        objects.append(
            {
                "name": name,
                "colour": colour,
                "position": POSITION_WORDS[(col, row)],
                "bbox": [round(v) for v in box],
                "size": size_word,
                "threat": name in THREAT_OBJECTS,
            }
        )
    if text is not None:
        _draw_sign(img, text.strip())
    annotation = {
        "kind": kind,
        "seed": seed,
        "size": size,
        "objects": objects,
        "count": len(objects),
        "background": {"style": lay["bg_style"], "colour": lay["bg_colour"]},
        "text": text.strip() if text is not None else None,
    }
    return img, annotation


def has_sign(seed: int, text_prob: float) -> bool:
    """Whether scene ``seed`` carries a sign at sign rate ``text_prob`` (kind-independent)."""
    return random.Random(f"vsfa-has-sign:{seed}").random() < text_prob


def generate_images(
    kind: str, n: int, seed: int = 0, size: int = 224, text_prob: float = 0.25
) -> list[tuple[Image.Image, dict]]:
    """``n`` scenes of ``kind`` with scene seeds ``seed .. seed+n-1``; a ``text_prob`` share carries a sign.

    Threat and neutral sets with the same arguments share layouts, counts and sign placement one to one.
    """
    _check_kind(kind)
    if n < 1:
        raise DataError(f"number of images must be at least 1, not {n}")
    if not 0.0 <= text_prob <= 1.0:
        raise DataError(f"text_prob must be in [0, 1], not {text_prob}")
    out = []
    for s in range(seed, seed + n):
        text = sign_text_for(kind, s) if has_sign(s, text_prob) else None
        out.append(render_scene(kind, s, size=size, text=text))
    return out


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def article(phrase: str) -> str:
    """``a``/``an`` + phrase."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def object_phrase(obj: dict) -> str:
    """ "a red knife" (colour + name with an article)."""
    return article(f"{obj['colour']} {obj['name']}") if obj.get("colour") else article(obj["name"])


def position_phrase(position: str) -> str:
    """ "at the top left", "in the centre", "on the left"."""
    if position == "centre":
        return "in the centre"
    if position in ("left", "right"):
        return f"on the {position}"
    return f"at the {position}"


def describe(annotation: dict) -> str:
    """One neutral sentence describing a scene: objects with colour and place, background, sign text.

    It states what is there, never a judgement of it.
    """
    objects = annotation.get("objects") or []
    if not objects:
        raise DataError("annotation has no objects to describe")
    parts = [
        f"{object_phrase(o)} {position_phrase(o['position'])}" if o.get("position") else object_phrase(o)
        for o in objects
    ]
    sentence = _join(parts)
    bg = annotation.get("background")
    if isinstance(bg, dict) and bg.get("colour"):
        style = "" if bg.get("style") in (None, "plain") else f"{bg['style']} "
        sentence += f" on a {style}{bg['colour']} background"
    if annotation.get("text"):
        sentence += f', with a sign that reads "{annotation["text"]}"'
    return sentence[0].upper() + sentence[1:] + "."


# ------------------------------------------------------------------------------------------ icons
ICON_SCALE = (0.4, 0.9)  # object side as a share of the image side


def render_icon(name: str, seed: int, size: int = 64) -> tuple[Image.Image, dict]:
    """One object alone, drawn large on a background: the icon mode for small vision towers (64 px).

    Background, colour, object size (``ICON_SCALE`` of the image) and position depend on the seed only, so
    two names with the same seed share the layout. The annotation has the same fields as a scene's.
    """
    if name not in _DRAWERS:
        raise DataError(f"unknown object {name!r}; choose one of: {', '.join(_DRAWERS)}")
    if size < 16:
        raise DataError(f"image size must be at least 16 pixels, not {size}")
    rng = random.Random(f"vsfa-icon:{seed}")
    bg_style, bg_colour = rng.choice(BACKGROUND_STYLES), rng.choice(sorted(BACKGROUND_COLOURS))
    colour = rng.choice(sorted(OBJECT_COLOURS))
    share = rng.uniform(*ICON_SCALE)
    side = size * share
    x0, y0 = rng.uniform(0, size - side), rng.uniform(0, size - side)
    img = _background(size, bg_style, BACKGROUND_COLOURS[bg_colour], rng.randrange(2**31))
    rgb = OBJECT_COLOURS[colour]
    ink = (250, 250, 250) if _luminance(rgb) < 110 else (30, 30, 30)
    box = (x0, y0, x0 + side, y0 + side)
    _DRAWERS[name](_Pen(ImageDraw.Draw(img), box, rgb, ink))
    cell = (min(2, int((x0 + side / 2) / size * 3)), min(2, int((y0 + side / 2) / size * 3)))
    threat = name in THREAT_OBJECTS
    obj = {
        "name": name,
        "colour": colour,
        "position": POSITION_WORDS[cell],
        "bbox": [round(v) for v in box],
        "size": "small" if share < 0.55 else "medium" if share < 0.75 else "large",
        "threat": threat,
    }
    annotation = {
        "kind": "threat" if threat else "neutral",
        "seed": seed,
        "size": size,
        "objects": [obj],
        "count": 1,
        "background": {"style": bg_style, "colour": bg_colour},
        "text": None,
    }
    return img, annotation


STYLES = ("scene", "icon")


def generate_icons(kind: str, n: int, seed: int = 0, size: int = 64) -> list[tuple[Image.Image, dict]]:
    """``n`` single-object icons of ``kind`` (objects cycled in order, icon seeds ``seed .. seed+n-1``).

    Threat and neutral sets with the same arguments share backgrounds, colours, sizes and positions one to one.
    """
    _check_kind(kind)
    if n < 1:
        raise DataError(f"number of images must be at least 1, not {n}")
    names = THREAT_OBJECTS if kind == "threat" else NEUTRAL_OBJECTS
    return [render_icon(names[i % len(names)], seed + i, size=size) for i in range(n)]
