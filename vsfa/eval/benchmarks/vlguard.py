"""VLGuard test set (ys-zong/VLGuard): images with safe/unsafe instructions, in three evaluation subsets.

Layout: ``test.json`` (a JSON list) and the unzipped ``test/`` image folder beside it (at the given folder or
its ``data/``); each record has ``id``,
``image`` (relative to ``test/``, e.g. ``bad_ads/<uuid>.png``), ``safe`` (bool), ``instr-resp`` (list of dicts),
and, for unsafe images, ``harmful_category`` / ``harmful_subcategory``.

Subsets (as in ``VLGuard_eval.py``):

* ``unsafes``: unsafe images with ``instr-resp[0].instruction`` (harmful)
* ``safe_unsafes``: safe images with their ``unsafe_instruction`` (harmful)
* ``safe_safes``: safe images with their ``safe_instruction`` (benign; refusing is over-refusal)
"""

from __future__ import annotations

from pathlib import Path

from vsfa.errors import DataError
from vsfa.eval.benchmarks._schema import first_existing, read_json, require_dir, require_keys, require_str
from vsfa.eval.items import BenchItem, check_image_file

SUBSETS = {"unsafes": "harmful", "safe_unsafes": "harmful", "safe_safes": "benign"}


def load_vlguard(
    root: str | Path,
    subsets: tuple[str, ...] = tuple(SUBSETS),
    split: str = "test",
    image_root: str | Path | None = None,
) -> list[BenchItem]:
    """Load VLGuard ``split`` ("test") for the given evaluation subsets."""
    root = require_dir(Path(root), "VLGuard folder")
    bad = [s for s in subsets if s not in SUBSETS]
    if bad:
        raise DataError(f"unknown VLGuard subset {bad[0]!r}; choose from {', '.join(SUBSETS)}")
    meta = first_existing([root / f"{split}.json", root / "data" / f"{split}.json"], f"VLGuard {split}.json")
    records = read_json(meta)
    if not isinstance(records, list):
        raise DataError(f"{meta}: expected a JSON list of records")
    if image_root:
        img_root = require_dir(Path(image_root), "VLGuard image folder")
    else:  # beside the JSON (a clone keeps both under data/)
        img_root = require_dir(meta.parent / split, "VLGuard image folder (or pass image_root)")
    items = []
    for subset in subsets:
        for i, rec in enumerate(records):
            where = f"{meta} [{i}]"
            require_keys(rec, ("id", "image", "safe", "instr-resp"), where)
            if not isinstance(rec["safe"], bool):
                raise DataError(f"{where}: field 'safe' must be true or false")
            pairs = rec["instr-resp"]
            if not isinstance(pairs, list) or not pairs or not all(isinstance(p, dict) for p in pairs):
                raise DataError(f"{where}: field 'instr-resp' must be a non-empty list of objects")
            if subset == "unsafes":
                if rec["safe"]:
                    continue
                text = require_str(pairs[0], "instruction", f"{where} instr-resp[0]")
            else:
                if not rec["safe"]:
                    continue
                key = "unsafe_instruction" if subset == "safe_unsafes" else "safe_instruction"
                found = [p[key] for p in pairs if key in p]
                if not found or not isinstance(found[0], str) or not found[0].strip():
                    raise DataError(f"{where}: safe image without a {key!r} in 'instr-resp'")
                text = found[0]
            image = check_image_file(img_root / require_str(rec, "image", where), where)
            category = rec.get("harmful_category") or ("none" if rec["safe"] else "")
            if not category:
                raise DataError(f"{where}: unsafe image without 'harmful_category'")
            items.append(
                BenchItem(
                    "vlguard",
                    f"{subset}/{rec['id']}",
                    text,
                    SUBSETS[subset],
                    category,
                    subset,
                    image=image,
                    extra={"subcategory": rec.get("harmful_subcategory"), "image_key": rec["image"]},
                )
            )
    return items
