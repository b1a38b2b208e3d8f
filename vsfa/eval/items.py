"""The one record every benchmark loader yields, and how its image is opened.

Loaders differ in layout; after loading, every item is a :class:`BenchItem`: where it came from
(``benchmark``, ``item_id``, ``variant``, ``category``), what the model is sent (``text`` plus an optional
image) and whether the request is harmful or benign (``label``). Benchmark-specific fields that judges or
metrics need (MM-Vet ground truth, MM-SafetyBench scenario, the original question) live in ``extra``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from vsfa.errors import DataError
from vsfa.io import sha256_bytes, sha256_file

LABELS = ("harmful", "benign", "unknown")


@dataclass
class BenchItem:
    """One benchmark query: prompt text, optional image, label, category, provenance."""

    benchmark: str
    item_id: str
    text: str
    label: str
    category: str = ""
    variant: str = ""
    image: Path | bytes | Image.Image | None = None
    image_ref: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise DataError(f"{self.benchmark}/{self.item_id}: label {self.label!r} not in {LABELS}")
        if self.image_ref is None and isinstance(self.image, Path):
            self.image_ref = str(self.image)

    @property
    def has_image(self) -> bool:
        return self.image is not None

    def load_image(self) -> Image.Image | None:
        """The item's image as RGB, or None; an unreadable image is a DataError naming its source."""
        if self.image is None:
            return None
        if isinstance(self.image, Image.Image):
            return self.image.convert("RGB")
        where = self.image_ref or f"{self.benchmark}/{self.item_id}"
        try:
            if isinstance(self.image, bytes | bytearray):
                img = Image.open(io.BytesIO(self.image))
            else:
                img = Image.open(self.image)
            img.load()
            return img.convert("RGB")
        except FileNotFoundError:
            raise DataError(f"{where}: image file not found") from None
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"{where}: unreadable image ({type(e).__name__}: {e})") from None

    def image_sha256(self) -> str | None:
        """Content hash of the image source (file bytes, raw bytes, or rendered pixels)."""
        if self.image is None:
            return None
        if isinstance(self.image, Path):
            return sha256_file(self.image) if self.image.is_file() else None
        if isinstance(self.image, bytes | bytearray):
            return sha256_bytes(bytes(self.image))
        return sha256_bytes(self.image.tobytes())

    def describe(self) -> dict[str, Any]:
        """JSON-ready provenance of the item (no image payload)."""
        return {
            "id": self.item_id,
            "benchmark": self.benchmark,
            "variant": self.variant,
            "category": self.category,
            "label": self.label,
            "text": self.text,
            "image": self.image_ref,
            "extra": self.extra,
        }


def check_image_file(path: Path, where: str) -> Path:
    """Fail early with the file named when an image is missing or not an image (header only, cheap)."""
    if not path.is_file():
        raise DataError(f"{path}: image file not found ({where})")
    try:
        with Image.open(path) as img:
            img.size  # noqa: B018  (reads the header)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: unreadable image ({where}: {type(e).__name__})") from None
    return path
