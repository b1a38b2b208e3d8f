"""Selection / evaluation splits of a request set: nothing reported is computed on the items it was chosen on.

A study splits its request set (harmful vs harmless requests, ``requests.jsonl`` format) once, by group (the
matched ``pair`` by default, so a pair never straddles the split), into

* **selection** items: direction derivation, the harmful-vs-harmless separation of the layer search, the causal
  candidate scores of :mod:`analysis.selection`, any strength choice;
* **evaluation** items: tracking, link, safety evaluation, steering and undo numbers, everything reported.

A file whose rows carry ``split`` keeps it (``extract`` / ``selection`` -> selection, ``heldout`` /
``evaluation`` -> evaluation; a row without one, or with another word, is an error), unless every row is in one
part; a file without the column, or with every row in one part, gets a split made here (``made: "hash"``): groups ordered by
``sha256(f"{seed}:{group}")``, the first ``round(fraction * groups)`` go to evaluation. The split is returned
as a :class:`SetSplit` (ids per part, grouping key, seed, where it came from) for the study manifest, and
:func:`write_split` writes one requests file per part.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vsfa.errors import ConfigError, DataError
from vsfa.io import read_jsonl, write_jsonl_atomic
from vsfa.resources import resource_path

SELECTION, EVALUATION = "selection", "evaluation"
PARTS = (SELECTION, EVALUATION)
# a row's own ``split`` value -> part; the first name of each part is what a written file carries
FILE_SPLITS = {"extract": SELECTION, "selection": SELECTION, "heldout": EVALUATION, "evaluation": EVALUATION}
WRITTEN_SPLIT = {SELECTION: "extract", EVALUATION: "heldout"}


@dataclass(frozen=True)
class SetSplit:
    """Which items of one set are for selection and which for evaluation, and how that was decided."""

    set: str
    source: str  # the file that was split
    key: str  # grouping key: a group's items are all in one part
    seed: int
    fraction: float  # share of groups in evaluation (when made here)
    made: str  # "file" (the rows' own split column) or "hash" (made here)
    selection: tuple[str, ...]
    evaluation: tuple[str, ...]

    def part_of(self, item_id: str) -> str:
        """``selection`` or ``evaluation``; a DataError for an id in neither."""
        if item_id in self.selection:
            return SELECTION
        if item_id in self.evaluation:
            return EVALUATION
        raise DataError(f"{self.source}: item {item_id!r} is in neither part of the split")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["selection"], d["evaluation"] = list(self.selection), list(self.evaluation)
        d["n"] = {SELECTION: len(self.selection), EVALUATION: len(self.evaluation)}
        return d


def request_rows(spec: str | Path) -> tuple[Path, list[dict[str, Any]]]:
    """The rows of a request set: ``requests`` (the shipped file) or a ``.jsonl`` path."""
    path = resource_path("requests.jsonl") if str(spec) in ("requests", "requests_image") else Path(spec)
    if not path.is_file():
        raise DataError(f"{path}: request set not found (give 'requests' or a requests-format .jsonl file)")
    rows = read_jsonl(path)
    if not rows:
        raise DataError(f"{path}: no requests")
    for i, row in enumerate(rows, 1):
        if "id" not in row:
            raise DataError(f"{path}:{i}: missing field 'id'")
    return Path(path), rows


def _group(row: dict[str, Any], key: str) -> str:
    return str(row.get(key) or row["id"])


def split_rows(
    rows: list[dict[str, Any]],
    key: str = "pair",
    seed: int = 0,
    fraction: float = 0.5,
    source: str = "",
    name: str = "",
) -> SetSplit:
    """Split ``rows`` by group (see the module docstring); both parts must be non-empty."""
    if not 0 < fraction < 1:
        raise ConfigError(f"{source or 'split'}: split fraction must be in (0, 1), not {fraction}")
    groups = list(dict.fromkeys(_group(r, key) for r in rows))
    own = [r.get("split") for r in rows]
    if any(v is not None for v in own):  # a split column: every row must say its part, in known words
        bad = next(((i, v) for i, v in enumerate(own, 1) if v not in FILE_SPLITS), None)
        if bad is not None:
            raise DataError(
                f"{source}:{bad[0]}: split {bad[1]!r} is not one of {', '.join(FILE_SPLITS)} "
                "(a file that splits its rows must say so on every row)"
            )
    if None not in own and len({FILE_SPLITS[v] for v in own}) == 2:
        made = "file"
        part_of_group: dict[str, str] = {}
        for r in rows:
            part = FILE_SPLITS[r["split"]]
            if part_of_group.setdefault(_group(r, key), part) != part:
                raise DataError(f"{source}: group {_group(r, key)!r} ({key}) straddles the file's split")
    else:
        made = "hash"
        order = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
        n_eval = min(len(groups) - 1, max(1, round(fraction * len(groups))))
        evaluation = set(order[:n_eval])
        part_of_group = {g: EVALUATION if g in evaluation else SELECTION for g in groups}
    if len(groups) < 2:
        raise DataError(f"{source}: {len(groups)} group(s) by {key!r}: too few to split")
    ids = {p: tuple(str(r["id"]) for r in rows if part_of_group[_group(r, key)] == p) for p in PARTS}
    for p in PARTS:
        if not ids[p]:
            raise DataError(f"{source}: the {p} part of the split is empty")
    return SetSplit(name, source, key, seed, fraction, made, ids[SELECTION], ids[EVALUATION])


def split_set(spec: str | Path, key: str = "pair", seed: int = 0, fraction: float = 0.5) -> SetSplit:
    """Read a request set and split it (:func:`split_rows`)."""
    path, rows = request_rows(spec)
    name = "requests" if str(spec) in ("requests", "requests_image") else path.stem
    return split_rows(rows, key, seed, fraction, source=str(path), name=name)


def write_split(split: SetSplit, out_dir: str | Path) -> dict[str, Path]:
    """One requests file per part, ``<out_dir>/<set>.<part>.jsonl``; rows keep their fields, ``split`` set to
    the part (``extract`` / ``heldout``), relative ``image`` paths made absolute. Returns part -> path."""
    src = Path(split.source)
    rows = read_jsonl(src)
    out: dict[str, Path] = {}
    for part in PARTS:
        keep = set(getattr(split, part))
        chosen = []
        for r in rows:
            if str(r["id"]) not in keep:
                continue
            r = {**r, "split": WRITTEN_SPLIT[part]}
            if r.get("image") and not Path(r["image"]).is_absolute():
                r["image"] = str((src.parent / r["image"]).resolve())
            if r.get("images"):
                r["images"] = [
                    p if Path(p).is_absolute() else str((src.parent / p).resolve()) for p in r["images"]
                ]
            chosen.append(r)
        out[part] = write_jsonl_atomic(Path(out_dir) / f"{split.set}.{part}.jsonl", chosen)
    return out
