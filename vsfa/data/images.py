"""Image manifests (content hash, size, decode check) and procedural image sets on disk.

An *image manifest* is a JSONL file, one row per image::

    {"path": "sub/a.png", "sha256": "...", "width": 640, "height": 480, "format": "PNG", "bytes": 12345,
     "label": "threat"}

``path`` is relative to the manifest file's folder (absolute when the image lies elsewhere). An *image set* is
a folder with images, ``images.jsonl`` (its manifest), optionally ``annotations.jsonl`` (one row per image:
``{"image": <path as in the manifest>, ...annotation}``) and ``manifest.json`` (written last).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from vsfa.config import check_counts
from vsfa.data.procedural import KINDS, STYLES, generate_icons, generate_images
from vsfa.errors import DataError
from vsfa.io import (
    atomic_dir,
    output_lock,
    read_jsonl,
    read_manifest,
    reuse_or_replace,
    sha256_bytes,
    sha256_file,
    write_json_atomic,
    write_jsonl_atomic,
    write_manifest,
)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
IMAGE_MANIFEST = "images.jsonl"
ANNOTATIONS = "annotations.jsonl"
LABELS = ("threat", "neutral", "unsafe", "safe", "unknown")


def load_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image as RGB; missing or corrupt files are a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
    if rgb.width < 1 or rgb.height < 1:
        raise DataError(f"{path}: image has no pixels")
    return rgb


def image_info(path: Path) -> dict:
    """Hash, size and format of one image file (decoding it fully)."""
    data = path.read_bytes()
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.load()
            width, height = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
    if width < 1 or height < 1:
        raise DataError(f"{path}: image has no pixels")
    return {"sha256": sha256_bytes(data), "width": width, "height": height, "format": fmt, "bytes": len(data)}


def _rel(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), base.resolve())
    except ValueError:  # other drive
        return str(path.resolve())


@dataclass
class ScanResult:
    """Rows of a manifest plus the files left out (path, reason)."""

    rows: list[dict]
    bad: list[tuple[str, str]]
    duplicates: int


def scan_images(folder: str | Path, label: str, base: str | Path, skip_bad: bool = False) -> ScanResult:
    """Scan ``folder`` recursively for images; paths relative to ``base``.

    Corrupt or unreadable files are an error naming each one, unless ``skip_bad`` (then reported in ``bad``).
    """
    folder, base = Path(folder), Path(base)
    if label not in LABELS:
        raise DataError(f"label must be one of {', '.join(LABELS)}, not {label!r}")
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    rows, bad = [], []
    for p in files:
        try:
            info = image_info(p)
        except (DataError, OSError) as e:
            bad.append((str(p), str(e).removeprefix(f"{p}: ")))
            continue
        rows.append({"path": _rel(p, base), "label": label, **info})
    if bad and not skip_bad:
        listed = "; ".join(f"{p} ({why})" for p, why in bad[:5])
        more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        raise DataError(f"{len(bad)} unreadable image(s): {listed}{more}; pass --skip-bad to leave them out")
    if not rows:
        raise DataError(f"{folder}: no readable images")
    seen: set[str] = set()
    duplicates = 0
    for r in rows:
        duplicates += r["sha256"] in seen
        seen.add(r["sha256"])
    return ScanResult(rows, bad, duplicates)


def write_image_manifest(
    images: str | Path, label: str, out: str | Path, skip_bad: bool = False
) -> tuple[Path, dict]:
    """Write an image manifest JSONL for a folder; with ``skip_bad`` also ``<out>.report.json``.

    Returns (manifest path, report dict).
    """
    out = Path(out)
    result = scan_images(images, label, out.parent, skip_bad=skip_bad)
    report = {
        "images": str(images),
        "label": label,
        "n_images": len(result.rows),
        "n_skipped": len(result.bad),
        "skipped": [{"path": p, "reason": why} for p, why in result.bad],
        "duplicates": result.duplicates,
    }
    if result.bad:
        write_json_atomic(out.with_name(out.name + ".report.json"), report)
    write_jsonl_atomic(out, result.rows)
    return out, report


def read_image_manifest(path: str | Path) -> tuple[Path, list[dict]]:
    """Read an image manifest (a JSONL file, or an image-set folder holding ``images.jsonl``).

    Returns (folder the paths are relative to, rows). Rows lacking ``path``/``sha256`` are an error.
    """
    path = Path(path)
    if path.is_dir():
        read_manifest(path)  # an image set must be complete
        path = path / IMAGE_MANIFEST
    rows = read_jsonl(path)
    if not rows:
        raise DataError(f"{path}: empty image manifest")
    for i, r in enumerate(rows, 1):
        if "path" not in r or "sha256" not in r:
            raise DataError(f"{path}:{i}: manifest row needs 'path' and 'sha256'")
    return path.parent, rows


def read_annotations(path: str | Path, base: Path) -> dict[str, dict]:
    """Annotations JSONL -> {image path relative to ``base``: annotation}."""
    path = Path(path)
    out = {}
    for i, r in enumerate(read_jsonl(path), 1):
        if "image" not in r:
            raise DataError(f"{path}:{i}: annotation row needs 'image'")
        img = Path(r["image"])
        full = img if img.is_absolute() else path.parent / img
        out[_rel(full, base)] = r
    return out


def write_procedural_set(
    kind: str,
    n: int,
    out: str | Path,
    seed: int = 0,
    size: int = 224,
    text_prob: float = 0.25,
    style: str = "scene",
    overwrite: bool = False,
) -> Path:
    """Render ``n`` procedural images of ``kind`` into an image-set folder (atomically; manifest last).

    ``style``: ``scene`` (several objects, optional sign) or ``icon`` (one large object: what a small vision
    tower such as the smol-llava demo model can name). A complete set of the same inputs is reused; one of
    other inputs is refused unless ``overwrite``.
    """
    if kind not in KINDS:
        raise DataError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if style not in STYLES:
        raise DataError(f"style must be one of {', '.join(STYLES)}, not {style!r}")
    check_counts("images", n=n, size=size)
    if not 0.0 <= text_prob <= 1.0:
        raise DataError(f"text_prob must be between 0 and 1, not {text_prob!r}")
    out = Path(out)
    generator = {"name": "vsfa.data.procedural", "seed": seed, "size": size, "text_prob": text_prob}
    inputs = {"kind": kind, "n": n, **generator, "style": style}
    with output_lock(out):
        if reuse_or_replace(out, inputs, overwrite):
            return out
        return _render_set(kind, n, out, seed, size, text_prob, style, inputs)


def _render_set(
    kind: str, n: int, out: Path, seed: int, size: int, text_prob: float, style: str, inputs: dict
) -> Path:
    if style == "icon":
        scenes = generate_icons(kind, n, seed=seed, size=size)
    else:
        scenes = generate_images(kind, n, seed=seed, size=size, text_prob=text_prob)
    with atomic_dir(out) as tmp:
        rows, anns = [], []
        for im, ann in scenes:
            name = f"{kind}-{ann['seed']:06d}.png"
            im.save(tmp / name, format="PNG", optimize=False)
            rows.append({"path": name, "label": kind, **image_info(tmp / name)})
            anns.append({"image": name, **ann})
        write_jsonl_atomic(tmp / IMAGE_MANIFEST, rows)
        write_jsonl_atomic(tmp / ANNOTATIONS, anns)
        write_manifest(
            tmp,
            {
                "kind": "vsfa-image-set",
                "label": kind,
                "n_images": n,
                "generator": {
                    "name": "vsfa.data.procedural",
                    "seed": seed,
                    "size": size,
                    "text_prob": text_prob,
                    "style": style,
                },
                "images_sha256": sha256_file(tmp / IMAGE_MANIFEST),
                "inputs": inputs,
            },
        )
    return out


@dataclass
class ImagesConfig:
    """Settings of ``vsfa data images``."""

    kind: str
    """threat | neutral"""
    n: int
    """Number of images."""
    out: Path
    """Output image-set folder."""
    seed: int = 0
    """First scene seed (scenes seed..seed+n-1)."""
    size: int = 224
    """Image side in pixels."""
    text_prob: float = 0.25
    """Share of scenes with a sign carrying a short text."""
    style: str = "scene"
    """scene | icon (one large object, for small vision towers)."""
    overwrite: bool = False
    """Replace a complete set rendered with other settings."""


def run_images(cfg: ImagesConfig) -> str:
    """Render procedural threat/neutral scenes with exact annotations (same seed: same layout)."""
    folder = write_procedural_set(
        cfg.kind,
        cfg.n,
        cfg.out,
        seed=cfg.seed,
        size=cfg.size,
        text_prob=cfg.text_prob,
        style=cfg.style,
        overwrite=cfg.overwrite,
    )
    return f"wrote {cfg.n} {cfg.kind} images to {folder}"


@dataclass
class ManifestConfig:
    """Settings of ``vsfa data manifest``."""

    images: Path
    """Image folder (scanned recursively)."""
    label: str
    """threat | neutral | unsafe | safe | unknown"""
    out: Path
    """Output manifest (JSONL)."""
    skip_bad: bool = False
    """Leave out unreadable images and list them in <out>.report.json."""


def run_manifest(cfg: ManifestConfig) -> str:
    """Image manifest of a folder: content hash, size, decode check."""
    path, report = write_image_manifest(cfg.images, cfg.label, cfg.out, skip_bad=cfg.skip_bad)
    skipped = f", skipped {report['n_skipped']} (see {path}.report.json)" if report["n_skipped"] else ""
    return f"wrote {path}: {report['n_images']} images{skipped}"
