"""FigStep / SafeBench (ThuCCSLab/FigStep): typographic images of harmful instructions + a benign text prompt.

Layout (the path may be the repository root, its ``data/`` or ``data/question/`` folder, or a question CSV)::

    data/question/safebench.csv          dataset,category_id,task_id,category_name,question,instruction (500 rows)
    data/question/SafeBench-Tiny.csv     same columns, 50 rows
    data/images/SafeBench/query_ForbidQI_{category_id}_{task_id}_6.png
    data/images/SafeBench-Tiny/query_ForbidQI_{category_id}_{task_id}_6.png

Variants: ``figstep`` (the image with the fixed FigStep prompt) and ``text`` (the harmful ``question`` alone,
the text-only baseline). Every row is a harmful request.
"""

from __future__ import annotations

from pathlib import Path

from vsfa.errors import DataError
from vsfa.eval.benchmarks._schema import first_existing, read_csv
from vsfa.eval.items import BenchItem, check_image_file
from vsfa.eval.prompts import FIGSTEP_PROMPT

COLUMNS = ("dataset", "category_id", "task_id", "category_name", "question", "instruction")
SUBSETS = {"full": ("safebench.csv", "SafeBench"), "tiny": ("SafeBench-Tiny.csv", "SafeBench-Tiny")}
VARIANTS = ("figstep", "text")


def image_name(category_id: int | str, task_id: int | str) -> str:
    """The SafeBench image file name of a row (query type 6 is FigStep)."""
    return f"query_ForbidQI_{int(category_id)}_{int(task_id)}_6.png"


def _data_dir(root: Path) -> Path:
    """The ``data/`` folder (holding ``question/`` and ``images/``) for any of the accepted paths."""
    if root.is_file():
        return root.parent.parent
    if (root / "data" / "question").is_dir():
        return root / "data"
    if root.name == "question" and (root.parent / "images").is_dir():
        return root.parent
    return root


def load_figstep(
    root: str | Path, subset: str = "full", variants: tuple[str, ...] = ("figstep",)
) -> list[BenchItem]:
    """Load SafeBench (``subset`` "full" | "tiny") as FigStep image items and/or text-only items."""
    root = Path(root)
    if subset not in SUBSETS:
        raise DataError(f"FigStep subset must be one of {', '.join(SUBSETS)}, not {subset!r}")
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise DataError(f"unknown FigStep variant {bad[0]!r}; choose from {', '.join(VARIANTS)}")
    if root.is_file():  # a question CSV: its name says the subset
        by_name = {csv: name for name, (csv, _) in SUBSETS.items()}
        if root.name not in by_name:
            raise DataError(f"{root}: not a FigStep question file (expected {' or '.join(by_name)})")
        subset = by_name[root.name]
    csv_name, image_dir = SUBSETS[subset]
    data = _data_dir(root)
    csv_path = first_existing(
        [data / "question" / csv_name, root / "question" / csv_name, root / csv_name],
        f"FigStep question file ({subset})",
    )
    rows = read_csv(csv_path, COLUMNS)
    seen: set[tuple[int, int]] = set()
    items: list[BenchItem] = []
    for line, row in enumerate(rows, 2):
        where = f"{csv_path}:{line}"
        try:
            key = (int(row["category_id"]), int(row["task_id"]))
        except ValueError:
            raise DataError(f"{where}: category_id/task_id must be integers") from None
        if key in seen:
            raise DataError(f"{where}: duplicate (category_id, task_id) {key}")
        seen.add(key)
        extra = {
            "question": row["question"],
            "instruction": row["instruction"],
            "category_id": key[0],
            "task_id": key[1],
            "subset": subset,
        }
        item_id = f"{key[0]}_{key[1]}"
        for variant in variants:
            if variant == "figstep":
                path = check_image_file(data / "images" / image_dir / image_name(*key), where)
                items.append(
                    BenchItem(
                        "figstep",
                        f"figstep/{item_id}",
                        FIGSTEP_PROMPT,
                        "harmful",
                        row["category_name"],
                        "figstep",
                        image=path,
                        extra=extra,
                    )
                )
            else:
                items.append(
                    BenchItem(
                        "figstep",
                        f"text/{item_id}",
                        row["question"],
                        "harmful",
                        row["category_name"],
                        "text",
                        extra=extra,
                    )
                )
    return items
