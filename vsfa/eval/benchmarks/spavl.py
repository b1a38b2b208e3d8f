"""SPA-VL test set (HF ``sqrti/SPA-VL``, config ``test``): parquet with the images inside.

Layout (dataset root or its ``test/`` folder)::

    test/harm-*.parquet   265 rows: image {bytes, path}, question, class1, class2, class3
    test/help-*.parquet   265 rows, same columns

``harm`` holds harmful image+question pairs (VSFA's "SPA-VL ASR"); ``help`` is the helpfulness set, whose
questions are not labelled harmful or benign (label ``unknown``).
"""

from __future__ import annotations

from pathlib import Path

from vsfa.errors import DataError
from vsfa.eval.benchmarks._schema import require_dir
from vsfa.eval.items import BenchItem

COLUMNS = ("image", "question", "class1", "class2", "class3")
SPLIT_LABEL = {"harm": "harmful", "help": "unknown"}


def _shards(root: Path, split: str) -> list[Path]:
    folder = root / "test" if (root / "test").is_dir() else root
    shards = sorted(folder.glob(f"{split}-*.parquet"))
    if not shards:
        raise DataError(f"{folder / (split + '-*.parquet')}: SPA-VL {split} parquet not found")
    return shards


def load_spavl(root: str | Path, splits: tuple[str, ...] = ("harm",)) -> list[BenchItem]:
    """Load SPA-VL test ``splits`` ("harm", "help"); images are decoded from the parquet bytes."""
    import pyarrow.parquet as pq

    root = require_dir(Path(root), "SPA-VL folder")
    bad = [s for s in splits if s not in SPLIT_LABEL]
    if bad:
        raise DataError(f"unknown SPA-VL split {bad[0]!r}; choose from {', '.join(SPLIT_LABEL)}")
    items: list[BenchItem] = []
    for split in splits:
        index = 0
        for shard in _shards(root, split):
            try:
                table = pq.read_table(shard)
            except Exception as e:
                raise DataError(f"{shard}: unreadable parquet ({type(e).__name__}: {e})") from None
            missing = [c for c in COLUMNS if c not in table.column_names]
            if missing:
                raise DataError(
                    f"{shard}: missing column {missing[0]!r} (columns: {', '.join(table.column_names)})"
                )
            for row_no, row in enumerate(table.select(list(COLUMNS)).to_pylist()):
                where = f"{shard} row {row_no}"
                image = row["image"]
                if isinstance(image, dict):
                    data = image.get("bytes")
                elif isinstance(image, bytes | bytearray):
                    data = image
                else:
                    data = None
                if not data:
                    raise DataError(f"{where}: field 'image' has no bytes (expected an HF Image struct)")
                if not isinstance(row["question"], str) or not row["question"].strip():
                    raise DataError(f"{where}: field 'question' must be a non-empty string")
                ref = f"{shard.name}#{row_no}"
                items.append(
                    BenchItem(
                        "spavl",
                        f"{split}/{index}",
                        row["question"],
                        SPLIT_LABEL[split],
                        str(row["class1"] or ""),
                        split,
                        image=bytes(data),
                        image_ref=ref,
                        extra={
                            "class2": row["class2"],
                            "class3": row["class3"],
                            "split": split,
                            "source_path": (image or {}).get("path") if isinstance(image, dict) else None,
                        },
                    )
                )
                index += 1
    return items
