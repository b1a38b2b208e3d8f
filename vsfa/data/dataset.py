"""Read a built data folder for training, and cut nested subsets of it.

``load_data`` is what ``vsfa train`` calls: it checks the folder is complete (manifest), that ``data.jsonl``
still has the content hash the manifest recorded, that every record is a conversation ending with an assistant
turn, that every image exists, decodes and has the recorded hash, and (for label-free data) that every target
still passes the lint. Any failure is a DataError naming the file and record.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from vsfa.data.build import DATA_FILE, data_manifest
from vsfa.data.images import load_image
from vsfa.data.lint import LabelLint, format_hits
from vsfa.errors import ArtifactError, DataError
from vsfa.io import (
    atomic_dir,
    output_lock,
    read_jsonl,
    read_manifest,
    sha256_bytes,
    sha256_file,
    write_jsonl_atomic,
    write_manifest,
)


@dataclass
class VqaData:
    """A loaded data folder: records, manifest and decoded images (``images[i]`` for record ``i``)."""

    folder: Path
    manifest: dict[str, Any]
    records: list[dict]
    images: list[list[Image.Image]] = field(default_factory=list)

    @property
    def data_hash(self) -> str:
        return self.manifest["data_hash"]

    @property
    def conversations(self) -> list[list[dict]]:
        return [r["messages"] for r in self.records]

    def __len__(self) -> int:
        return len(self.records)


def _check_record(rec: Any, where: str) -> None:
    if not isinstance(rec, dict) or not isinstance(rec.get("messages"), list) or not rec["messages"]:
        raise DataError(f"{where}: record needs a non-empty 'messages' list")
    if rec["messages"][-1].get("role") != "assistant":
        raise DataError(f"{where}: the conversation must end with an assistant message")
    n_parts = sum(
        1
        for m in rec["messages"]
        if not isinstance(m.get("content"), str)
        for p in m.get("content") or []
        if p.get("type") == "image"
    )
    if n_parts != len(rec.get("images") or []):
        raise DataError(
            f"{where}: {n_parts} image part(s) but {len(rec.get('images') or [])} image reference(s)"
        )


def load_data(folder: str | Path, decode_images: bool = True) -> VqaData:
    """Load and validate a data folder (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: data folder not found")
    try:
        manifest = read_manifest(folder)
    except ArtifactError as e:
        raise DataError(str(e)) from None
    data_file = folder / manifest.get("data_file", DATA_FILE)
    if not data_file.is_file():
        raise DataError(f"{data_file}: data file not found")
    if sha256_file(data_file) != manifest.get("data_hash"):
        raise DataError(
            f"{data_file}: content does not match the manifest's data_hash (edited after the build?)"
        )
    records = read_jsonl(data_file)
    if not records:
        raise DataError(f"{data_file}: empty data set")
    for i, rec in enumerate(records, 1):
        _check_record(rec, f"{data_file}:{i}")
    if not manifest.get("labelled", False) and not any(r.get("labelled") for r in records):
        hits = LabelLint().lint_records(records)
        if hits:
            raise DataError(f"{data_file}: labelled targets in a label-free data set: {format_hits(hits)}")
    images: list[list[Image.Image]] = []
    if decode_images:
        cache: dict[Path, tuple[Image.Image, str]] = {}
        for i, rec in enumerate(records, 1):
            group = []
            for ref in rec.get("images") or []:
                path = Path(ref) if os.path.isabs(ref) else folder / ref
                if path not in cache:
                    if not path.is_file():
                        raise DataError(f"{data_file}:{i}: image not found: {path}")
                    raw = path.read_bytes()
                    cache[path] = (load_image(path), sha256_bytes(raw))
                img, digest = cache[path]
                if rec.get("image_sha256") and len(rec["images"]) == 1 and digest != rec["image_sha256"]:
                    raise DataError(f"{data_file}:{i}: image {path} changed since the build (hash mismatch)")
                group.append(img)
            images.append(group)
    return VqaData(folder, manifest, records, images)


def _rebase(records: list[dict], src: Path, dst: Path) -> list[dict]:
    out = []
    for r in records:
        refs = [
            ref if os.path.isabs(ref) else os.path.relpath((src / ref).resolve(), dst.resolve())
            for ref in r.get("images") or []
        ]
        out.append({**r, "images": refs})
    return out


def subset_order(image_keys: Sequence[int], seed: int) -> list[int]:
    """Seeded order of image indices; the first n form the size-n subset, so subsets are nested."""
    keys = sorted(set(image_keys))
    return random.Random(f"vsfa-subsets:{seed}").sample(keys, len(keys))


def make_subsets(
    data: str | Path, sizes: Sequence[int], seed: int = 0, out_root: str | Path | None = None
) -> list[Path]:
    """Nested subsets by image (all records of the chosen images): ``<data>-n<size>`` or ``out_root/n<size>``.

    The image order depends only on the seed and the image indices, so the same sizes and seed give matched
    subsets across the image/text/mixed/control variants of one build.
    """
    src = Path(data)
    loaded = load_data(src, decode_images=False)
    by_image: dict[int, list[dict]] = {}
    for r in loaded.records:
        by_image.setdefault(int(r.get("image_index", 0)), []).append(r)
    sizes = sorted(set(int(s) for s in sizes))
    if not sizes or sizes[0] < 1 or sizes[-1] > len(by_image):
        raise DataError(f"subset sizes must be between 1 and {len(by_image)} images, not {sizes}")
    order = subset_order(list(by_image), seed)
    outs = []
    for s in sizes:
        chosen = set(order[:s])
        recs = [r for r in loaded.records if int(r.get("image_index", 0)) in chosen]
        dst = Path(out_root) / f"n{s}" if out_root is not None else src.with_name(f"{src.name}-n{s}")
        with output_lock(dst), atomic_dir(dst) as tmp:
            rebased = _rebase(recs, src, tmp)
            write_jsonl_atomic(tmp / DATA_FILE, rebased)
            keep = {
                k: v for k, v in loaded.manifest.items() if k not in ("data_hash", "images_hash", "n_records")
            }
            extra = {
                **keep,
                "subset": {
                    "n_images": s,
                    "seed": seed,
                    "sizes": sizes,
                    "parent": str(src),
                    "parent_data_hash": loaded.data_hash,
                },
            }
            for k in ("templates", "forms", "image_kinds", "n_images", "data_file", "kind"):
                extra.pop(k, None)
            write_manifest(tmp, data_manifest(rebased, tmp / DATA_FILE, extra))
        outs.append(dst)
    return outs


@dataclass
class SubsetsConfig:
    """Settings of ``vsfa data subsets``."""

    data: Path
    """Data folder (a variant folder of a build)."""
    sizes: list[int]
    """Image counts, e.g. 100,200,400,700."""
    seed: int = 0
    """Sampling seed."""
    out_root: Path | None = None
    """Write OUT_ROOT/n<size> instead of <data>-n<size>."""


def run_subsets(cfg: SubsetsConfig) -> str:
    """Nested subsets by image for training-scale ablations."""
    folders = make_subsets(cfg.data, cfg.sizes, seed=cfg.seed, out_root=cfg.out_root)
    return "\n".join(f"wrote {f}" for f in folders)
