"""MOSSBench (xirui-li/MOSSBench): benign image+query pairs that over-sensitive models refuse.

Layout (repository root or its ``data/`` folder)::

    images_information/information.json   object keyed by pid: image, "short description", question,
                                          metadata {over: "type 1|2|3", human, child, syn, ocr, harm (a list)}, pid
    images/<pid>.png | .webp | .jpg       the extension varies: png, webp, jpg are tried in that order
    ../data_contrast/images_information/information.json   harmful contrast questions on the same images

Test set only: its licence forbids training use, so nothing here may feed training or direction fitting.
"""

from __future__ import annotations

from pathlib import Path

from vsfa.errors import DataError
from vsfa.eval.benchmarks._schema import read_json, require_dir, require_keys, require_str
from vsfa.eval.items import BenchItem, check_image_file

TYPES = {"type 1": "Exaggerated Risk", "type 2": "Negated Harm", "type 3": "Counterintuitive Interpretation"}
EXTENSIONS = ("png", "webp", "jpg")


def _data_dir(root: Path, contrast: bool) -> Path:
    name = "data_contrast" if contrast else "data"
    for cand in (root / name, root.parent / name, root):
        if (cand / "images_information" / "information.json").is_file():
            return cand
    raise DataError(f"{root / name / 'images_information' / 'information.json'}: MOSSBench file not found")


def _image(data_dir: Path, root: Path, rec: dict, pid: str, where: str) -> Path:
    given = rec.get("image")
    candidates = []
    if isinstance(given, str) and given:
        candidates += [data_dir / given, root / "data" / given, root / given]
    candidates += [
        base / "images" / f"{pid}.{ext}" for base in (data_dir, root / "data", root) for ext in EXTENSIONS
    ]
    for p in candidates:
        if p.is_file():
            return check_image_file(p, where)
    raise DataError(
        f"{data_dir / 'images' / (pid + '.png')}: MOSSBench image not found (tried {', '.join(EXTENSIONS)}; {where})"
    )


def load_mossbench(root: str | Path, contrast: bool = False) -> list[BenchItem]:
    """Load MOSSBench's benign set, or with ``contrast`` its harmful contrast set on the same images."""
    root = require_dir(Path(root), "MOSSBench folder")
    data_dir = _data_dir(root, contrast)
    images_root = _data_dir(root, False) if contrast else data_dir
    meta = data_dir / "images_information" / "information.json"
    data = read_json(meta)
    if not isinstance(data, dict):
        raise DataError(f"{meta}: expected an object keyed by pid")
    items = []
    for pid in sorted(data, key=lambda k: (len(k), k)):
        where = f"{meta} [{pid}]"
        rec = require_keys(data[pid], ("question", "metadata"), where)
        metadata = rec["metadata"]
        if not isinstance(metadata, dict) or "over" not in metadata:
            raise DataError(f"{where}: field 'metadata.over' missing")
        over = metadata["over"]
        if over not in TYPES:
            raise DataError(f"{where}: metadata.over must be one of {', '.join(TYPES)}, not {over!r}")
        image = _image(images_root, root, rec, str(rec.get("pid", pid)), where)
        items.append(
            BenchItem(
                "mossbench",
                f"{'contrast' if contrast else 'benign'}/{pid}",
                require_str(rec, "question", where),
                "harmful" if contrast else "benign",
                over,
                "contrast" if contrast else "benign",
                image=image,
                extra={
                    "type_name": TYPES[over],
                    "short_description": rec.get("short description"),
                    "metadata": metadata,
                },
            )
        )
    return items
