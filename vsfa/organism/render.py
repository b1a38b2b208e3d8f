"""Icon scenes for the organism's 32x32 world: a main object and, sometimes, a small object in a corner.

Each object is a flat icon with its own colour and shape (see ``SHAPES`` in :mod:`vsfa.organism.world`), drawn
with PIL in a square box on a random light background with pixel noise. Rendering is deterministic given the
scene dict (which carries its own ``seed``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from vsfa.organism.world import ObjectSpec, WorldSpec

RGB = tuple[int, int, int]
Draw = Callable[["_Box"], None]


class _Box:
    """Maps unit-square coordinates of an icon onto its pixel box."""

    def __init__(self, draw: ImageDraw.ImageDraw, x0: float, y0: float, side: float, colour: RGB):
        self.d, self.x0, self.y0, self.s, self.c = draw, x0, y0, side, colour
        self.ink: RGB = (250, 250, 250) if sum(colour) < 330 else (20, 20, 20)

    def p(self, x: float, y: float) -> tuple[float, float]:
        return (self.x0 + x * self.s, self.y0 + y * self.s)

    def poly(self, pts, ink: bool = False) -> None:
        self.d.polygon([self.p(x, y) for x, y in pts], fill=self.ink if ink else self.c)

    def ellipse(self, x0, y0, x1, y1, ink: bool = False) -> None:
        self.d.ellipse([*self.p(x0, y0), *self.p(x1, y1)], fill=self.ink if ink else self.c)

    def rect(self, x0, y0, x1, y1, ink: bool = False) -> None:
        self.d.rectangle([*self.p(x0, y0), *self.p(x1, y1)], fill=self.ink if ink else self.c)

    def line(self, pts, width: float, ink: bool = False) -> None:
        w = max(1, round(width * self.s))
        self.d.line([self.p(x, y) for x, y in pts], fill=self.ink if ink else self.c, width=w)


def _knife(b: _Box) -> None:
    b.poly([(0.35, 0.35), (1.0, 0.5), (0.35, 0.65)])
    b.rect(0.0, 0.4, 0.33, 0.6, ink=True)


def _gun(b: _Box) -> None:
    b.rect(0.05, 0.2, 0.95, 0.45)
    b.poly([(0.1, 0.4), (0.45, 0.4), (0.38, 0.95), (0.05, 0.95)])


def _bomb(b: _Box) -> None:
    b.ellipse(0.05, 0.25, 0.8, 1.0)
    b.line([(0.55, 0.3), (0.75, 0.05), (0.95, 0.1)], 0.1)


def _skull(b: _Box) -> None:
    b.ellipse(0.1, 0.0, 0.9, 0.75)
    b.rect(0.28, 0.6, 0.72, 0.95)
    b.ellipse(0.25, 0.25, 0.45, 0.45, ink=True)
    b.ellipse(0.55, 0.25, 0.75, 0.45, ink=True)


def _flame(b: _Box) -> None:
    b.poly([(0.5, 0.0), (0.8, 0.35), (0.9, 0.7), (0.5, 1.0), (0.1, 0.7), (0.2, 0.35)])
    b.poly([(0.5, 0.45), (0.65, 0.75), (0.5, 0.92), (0.35, 0.75)], ink=True)


def _warning(b: _Box) -> None:
    b.poly([(0.5, 0.0), (1.0, 0.95), (0.0, 0.95)])
    b.rect(0.44, 0.3, 0.56, 0.65, ink=True)
    b.rect(0.44, 0.74, 0.56, 0.85, ink=True)


def _cup(b: _Box) -> None:
    b.rect(0.15, 0.2, 0.7, 0.95)
    b.line([(0.7, 0.35), (0.92, 0.45), (0.92, 0.65), (0.7, 0.75)], 0.1)


def _flower(b: _Box) -> None:
    b.line([(0.5, 0.5), (0.5, 1.0)], 0.1, ink=True)
    for a in range(0, 360, 72):
        r = math.radians(a)
        cx, cy = 0.5 + 0.25 * math.cos(r), 0.4 + 0.25 * math.sin(r)
        b.ellipse(cx - 0.17, cy - 0.17, cx + 0.17, cy + 0.17)
    b.ellipse(0.4, 0.3, 0.6, 0.5, ink=True)


def _ball(b: _Box) -> None:
    b.ellipse(0.0, 0.0, 1.0, 1.0)
    b.line([(0.05, 0.5), (0.95, 0.5)], 0.12, ink=True)


def _tree(b: _Box) -> None:
    b.rect(0.42, 0.55, 0.58, 1.0, ink=True)
    b.ellipse(0.1, 0.0, 0.9, 0.7)


def _house(b: _Box) -> None:
    b.poly([(0.5, 0.0), (1.0, 0.45), (0.0, 0.45)])
    b.rect(0.12, 0.45, 0.88, 1.0)
    b.rect(0.4, 0.65, 0.6, 1.0, ink=True)


def _sun(b: _Box) -> None:
    for a in range(0, 360, 45):
        r = math.radians(a)
        b.line([(0.5, 0.5), (0.5 + 0.5 * math.cos(r), 0.5 + 0.5 * math.sin(r))], 0.1)
    b.ellipse(0.22, 0.22, 0.78, 0.78)


def _square(b: _Box) -> None:
    b.rect(0.1, 0.1, 0.9, 0.9)


def _ring(b: _Box) -> None:
    b.ellipse(0.0, 0.0, 1.0, 1.0)
    b.ellipse(0.3, 0.3, 0.7, 0.7, ink=True)


def _cross(b: _Box) -> None:
    b.rect(0.35, 0.0, 0.65, 1.0)
    b.rect(0.0, 0.35, 1.0, 0.65)


def _diamond(b: _Box) -> None:
    b.poly([(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)])


DRAWERS: dict[str, Draw] = {
    "knife": _knife,
    "gun": _gun,
    "bomb": _bomb,
    "skull": _skull,
    "flame": _flame,
    "warning": _warning,
    "cup": _cup,
    "flower": _flower,
    "ball": _ball,
    "tree": _tree,
    "house": _house,
    "sun": _sun,
    "square": _square,
    "ring": _ring,
    "cross": _cross,
    "diamond": _diamond,
}
CORNERS = ("top left", "top right", "bottom left", "bottom right")


def layout(spec: WorldSpec, rng: random.Random, with_small: bool) -> dict:
    """Draw positions and sizes: ``{"main": [x, y, side], "small": [x, y, side] | None, "corner", "bg", "seed"}``.

    The small object sits in a corner and the main object is placed so that the two do not overlap.
    """
    im = spec.image
    size = im.size
    main_side = rng.randint(*im.main_size)
    small = None
    corner = None
    if with_small:
        s = rng.randint(*im.small_size)
        corner = rng.choice(CORNERS)
        sx = 0 if "left" in corner else size - s
        sy = 0 if "top" in corner else size - s
        small = [sx, sy, s]
        # keep the main object out of the corner: shift it away along x or y
        if rng.random() < 0.5:
            lo, hi = (s, size - main_side) if "left" in corner else (0, size - s - main_side)
            mx = rng.randint(min(lo, hi), max(lo, hi))
            my = rng.randint(0, size - main_side)
        else:
            lo, hi = (s, size - main_side) if "top" in corner else (0, size - s - main_side)
            my = rng.randint(min(lo, hi), max(lo, hi))
            mx = rng.randint(0, size - main_side)
    else:
        mx, my = rng.randint(0, size - main_side), rng.randint(0, size - main_side)
    lo, hi = im.background
    bg = [rng.randint(lo, hi) for _ in range(3)]
    return {
        "main": [mx, my, main_side],
        "small": small,
        "corner": corner,
        "bg": bg,
        "seed": rng.randrange(2**31),
    }


def render(spec: WorldSpec, main: ObjectSpec, small: ObjectSpec | None, geometry: dict) -> Image.Image:
    """Draw a scene from its objects and :func:`layout` geometry (deterministic: noise uses ``geometry["seed"]``)."""
    size = spec.image.size
    img = Image.new("RGB", (size, size), tuple(geometry["bg"]))
    draw = ImageDraw.Draw(img)
    parts = [(main, geometry["main"])]
    if small is not None and geometry.get("small"):
        parts.append((small, geometry["small"]))
    for obj, (x, y, side) in parts:
        DRAWERS[obj.shape](_Box(draw, x, y, side - 1, tuple(obj.colour)))
    if spec.image.noise > 0:
        noise = np.random.default_rng(geometry["seed"]).normal(0.0, spec.image.noise, (size, size, 3))
        arr = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
    return img
