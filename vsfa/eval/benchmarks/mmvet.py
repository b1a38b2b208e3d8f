"""MM-Vet v1 (yuweihao/MM-Vet): capability questions with ground truth, graded by an LLM.

Layout: ``mm-vet.json`` (object keyed ``v1_0``, ``v1_1``, ...; values ``imagename``, ``capability`` list,
``question``, ``answer`` with ``<AND>``/``<OR>``) and ``images/<imagename>``. Every item is benign: it serves
MM-Vet scores (total and per capability, e.g. ``rec``) and the non-refusal rate on benign queries.
"""

from __future__ import annotations

from pathlib import Path

from vsfa.errors import DataError
from vsfa.eval.benchmarks._schema import read_json, require_dir, require_keys, require_str
from vsfa.eval.items import BenchItem, check_image_file

CAPABILITIES = ("rec", "ocr", "know", "gen", "spat", "math")
KEYS = ("imagename", "capability", "question", "answer")


def load_mmvet(root: str | Path) -> list[BenchItem]:
    """Load MM-Vet v1 items from an unpacked ``mm-vet.zip``."""
    root = require_dir(Path(root), "MM-Vet folder")
    meta = root / "mm-vet.json"
    data = read_json(meta)
    if not isinstance(data, dict):
        raise DataError(f"{meta}: expected an object keyed v1_<n>")
    items = []
    for key in sorted(data, key=lambda k: (len(k), k)):
        where = f"{meta} [{key}]"
        rec = require_keys(data[key], KEYS, where)
        caps = rec["capability"]
        if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
            raise DataError(f"{where}: field 'capability' must be a non-empty list of strings")
        unknown = [c for c in caps if c not in CAPABILITIES]
        if unknown:
            raise DataError(f"{where}: unknown capability {unknown[0]!r} (known: {', '.join(CAPABILITIES)})")
        image = check_image_file(root / "images" / require_str(rec, "imagename", where), where)
        answer = rec["answer"]
        if not isinstance(answer, str | int | float):
            raise DataError(f"{where}: field 'answer' must be text")
        items.append(
            BenchItem(
                "mmvet",
                key,
                require_str(rec, "question", where),
                "benign",
                ",".join(sorted(caps)),
                "",
                image=image,
                extra={"capability": list(caps), "answer": str(answer)},
            )
        )
    return items
