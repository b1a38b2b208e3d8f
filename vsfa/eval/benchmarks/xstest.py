"""XSTest (paul-rottger/xstest): text prompts for exaggerated safety (over-refusal).

File ``xstest_prompts.csv`` (or the older ``xstest_v2_prompts.csv``) with ``id,prompt,type,label,focus,note``;
``label`` is ``safe`` (benign: refusing it is over-refusal) or ``unsafe`` (the contrast prompts). It is a
text benchmark: run it without an image (variant ``text``) or with a neutral blank image (``blank``); the
variant records which.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from vsfa.errors import DataError
from vsfa.eval.benchmarks._schema import read_csv
from vsfa.eval.items import BenchItem

COLUMNS = ("id", "prompt", "type", "label")
FILE_NAMES = ("xstest_prompts.csv", "xstest_v2_prompts.csv")
LABELS = {"safe": "benign", "unsafe": "harmful"}


def blank_image(size: int = 224) -> Image.Image:
    """A plain mid-grey image (the neutral stand-in image for text benchmarks)."""
    return Image.new("RGB", (size, size), (128, 128, 128))


def load_xstest(root: str | Path, image: str = "none") -> list[BenchItem]:
    """Load XSTest from its CSV (or a folder holding it); ``image`` "none" | "blank"."""
    root = Path(root)
    if image not in ("none", "blank"):
        raise DataError(f"XSTest image option must be 'none' or 'blank', not {image!r}")
    path = root
    if root.is_dir():
        found = [root / n for n in FILE_NAMES if (root / n).is_file()]
        if not found:
            raise DataError(f"{root / FILE_NAMES[0]}: XSTest prompt file not found")
        path = found[0]
    rows = read_csv(path, COLUMNS)
    items, seen = [], set()
    for line, row in enumerate(rows, 2):
        where = f"{path}:{line}"
        label = LABELS.get(row["label"].strip())
        if label is None:
            raise DataError(f"{where}: field 'label' must be 'safe' or 'unsafe', not {row['label']!r}")
        if row["id"] in seen:
            raise DataError(f"{where}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        variant = "text" if image == "none" else "blank"
        items.append(
            BenchItem(
                "xstest",
                row["id"],
                row["prompt"],
                label,
                row["type"],
                variant,
                image=blank_image() if image == "blank" else None,
                image_ref="blank:224" if image == "blank" else None,
                extra={
                    "xstest_label": row["label"],
                    "focus": row.get("focus", ""),
                    "note": row.get("note", ""),
                },
            )
        )
    return items
