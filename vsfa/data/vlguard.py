"""The VLGuard baseline: its released ``train.json`` (labelled safety data) as a data folder of the same form.

``train.json`` is a list of records ``{"id", "image", "safe", "harmful_category"?, "instr-resp": [...]}``;
safe images carry ``{safe_instruction, response}`` and ``{unsafe_instruction, response}``, unsafe images one
``{instruction, response}`` (see ../shared/reference/benchmarks.md §2.7). Every pair becomes one chat record,
trained by the same trainer as VSFA data. The manifest marks the folder as labelled; the label-free lint does
not apply (refusals are the point of this baseline).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from vsfa.data.build import DATA_FILE, data_manifest
from vsfa.data.images import image_info
from vsfa.errors import DataError
from vsfa.io import (
    atomic_dir,
    output_lock,
    read_text,
    sha256_file,
    write_json_atomic,
    write_jsonl_atomic,
    write_manifest,
)

_INSTRUCTION_KEYS = ("instruction", "safe_instruction", "unsafe_instruction")


def _pairs(rec: dict, where: str) -> list[tuple[str, str, str]]:
    pairs = rec.get("instr-resp")
    if not isinstance(pairs, list) or not pairs:
        raise DataError(f"{where}: 'instr-resp' must be a non-empty list")
    out = []
    for j, pr in enumerate(pairs):
        keys = [k for k in _INSTRUCTION_KEYS if k in pr]
        if len(keys) != 1 or not isinstance(pr.get("response"), str):
            raise DataError(
                f"{where}: instr-resp[{j}] needs one of {', '.join(_INSTRUCTION_KEYS)} and 'response'"
            )
        out.append((keys[0], str(pr[keys[0]]), pr["response"]))
    return out


def read_vlguard(train_json: str | Path) -> list[dict]:
    """Parse and validate VLGuard's ``train.json``."""
    path = Path(train_json)
    if not path.is_file():
        raise DataError(f"{path}: VLGuard train.json not found")
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON ({e.msg})") from None
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a non-empty JSON list of records")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or "image" not in rec or "safe" not in rec:
            raise DataError(f"{path}: record {i} needs 'image' and 'safe'")
        _pairs(rec, f"{path}: record {i} ({rec.get('id', '?')})")
    return data


def build_vlguard(
    train_json: str | Path,
    images_root: str | Path,
    out: str | Path,
    n_images: int | None = None,
    seed: int = 0,
    skip_bad: bool = False,
) -> Path:
    """Write VLGuard as a data folder (``data.jsonl`` + ``manifest.json``, atomically).

    ``n_images`` takes a seeded sample of images (all their pairs), e.g. to match VSFA's ~700 images.
    Missing/corrupt images are an error naming them, or with ``skip_bad`` left out and listed in a report.
    """
    data = read_vlguard(train_json)
    root = Path(images_root)
    if not root.is_dir():
        raise DataError(f"{root}: VLGuard image folder not found")
    order = list(range(len(data)))
    if n_images is not None:
        if not 1 <= n_images <= len(data):
            raise DataError(f"n_images must be between 1 and {len(data)}, not {n_images}")
        order = sorted(random.Random(f"vsfa-vlguard:{seed}").sample(order, n_images))
    out = Path(out)
    records, bad = [], []
    with output_lock(out), atomic_dir(out) as tmp:
        for idx in order:
            rec = data[idx]
            img = root / rec["image"]
            try:
                info = image_info(img) if img.is_file() else None
            except DataError as e:
                info, why = None, str(e).removeprefix(f"{img}: ")
            else:
                why = "image not found"
            if info is None:
                bad.append({"path": str(img), "reason": why})
                continue
            kind = "safe" if rec["safe"] else "unsafe"
            for key, instruction, response in _pairs(rec, str(train_json)):
                records.append(
                    {
                        "id": f"vlguard/{rec.get('id', idx)}/{key}",
                        "messages": [
                            {
                                "role": "user",
                                "content": [{"type": "image"}, {"type": "text", "text": instruction}],
                            },
                            {"role": "assistant", "content": [{"type": "text", "text": response}]},
                        ],
                        "images": [os.path.relpath(img.resolve(), (tmp).resolve())],
                        "variant": "vlguard",
                        "form": "image",
                        "template": f"vlguard:{key}",
                        "question": instruction,
                        "answer_source": "vlguard",
                        "image_kind": kind,
                        "image_index": idx,
                        "image_sha256": info["sha256"],
                        "labelled": True,
                        "harmful_category": rec.get("harmful_category"),
                    }
                )
        if bad and not skip_bad:
            listed = "; ".join(f"{b['path']} ({b['reason']})" for b in bad[:5])
            more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
            raise DataError(
                f"{len(bad)} VLGuard image(s) unusable: {listed}{more}; pass --skip-bad to leave them out"
            )
        if not records:
            raise DataError(f"{train_json}: no usable records (empty data set)")
        write_jsonl_atomic(tmp / DATA_FILE, records)
        if bad:
            write_json_atomic(tmp / "skipped.json", bad)
        write_manifest(
            tmp,
            data_manifest(
                records,
                tmp / DATA_FILE,
                {
                    "variant": "vlguard",
                    "arm": "vlguard",
                    "labelled": True,
                    "lint": {"applied": False, "reason": "labelled safety data (VLGuard baseline)"},
                    "answer_source": {"name": "vlguard", "train_json": str(train_json)},
                    "source_sha256": sha256_file(train_json),
                    "seed": seed,
                    "n_skipped": len(bad),
                },
            ),
        )
    return out


@dataclass
class VlguardConfig:
    """Settings of ``vsfa data vlguard``."""

    train_json: Path
    """VLGuard train.json."""
    images_root: Path
    """Folder the records' image paths are relative to."""
    out: Path
    """Output data folder."""
    n_images: int | None = None
    """Seeded sample of N images (all their pairs)."""
    seed: int = 0
    """Sample seed."""
    skip_bad: bool = False
    """Leave out missing/corrupt images (listed in skipped.json)."""


def run_vlguard(cfg: VlguardConfig) -> str:
    """VLGuard's labelled safety data as a data folder (the safety fine-tuning baseline)."""
    from vsfa.io import read_manifest

    folder = build_vlguard(
        cfg.train_json, cfg.images_root, cfg.out, n_images=cfg.n_images, seed=cfg.seed, skip_bad=cfg.skip_bad
    )
    man = read_manifest(folder)
    return f"{folder}: {man['n_records']} records, {man['n_images']} images (labelled)"
