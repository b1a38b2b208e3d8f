"""Schema checks shared by the benchmark loaders: every missing file, column or key names itself."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from vsfa.errors import DataError


def require_dir(path: Path, what: str) -> Path:
    """``path`` must be an existing folder."""
    if not path.exists():
        raise DataError(f"{path}: {what} not found")
    if not path.is_dir():
        raise DataError(f"{path}: {what} must be a folder")
    return path


def require_file(path: Path, what: str) -> Path:
    """``path`` must be an existing file."""
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    return path


def first_existing(candidates: list[Path], what: str) -> Path:
    """The first path that exists; otherwise an error listing where it was looked for."""
    candidates = list(dict.fromkeys(candidates))
    for p in candidates:
        if p.exists():
            return p
    also = f" (also looked for {', '.join(map(str, candidates[1:]))})" if len(candidates) > 1 else ""
    raise DataError(f"{candidates[0]}: {what} not found{also}")


def read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV with a header (BOM and a missing final newline tolerated); required columns checked."""
    require_file(path, "CSV file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(f"{path}: missing column {missing[0]!r} (header: {', '.join(header)})")
            rows = []
            for i, row in enumerate(reader, 2):
                clean = {(k or "").strip(): (v if v is not None else "") for k, v in row.items()}
                empty = [c for c in required if not str(clean.get(c, "")).strip()]
                if empty:
                    raise DataError(f"{path}:{i}: empty field {empty[0]!r}")
                rows.append(clean)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason})") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV ({e})") from None
    return rows


def read_json(path: Path) -> Any:
    """Parsed JSON; malformed JSON is an error naming the file and line."""
    require_file(path, "JSON file")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def require_keys(record: Any, keys: tuple[str, ...], where: str) -> dict[str, Any]:
    """``record`` must be an object with every key in ``keys``."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object, got {type(record).__name__}")
    for k in keys:
        if k not in record:
            raise DataError(f"{where}: missing field {k!r}")
    return record


def require_str(record: dict[str, Any], key: str, where: str) -> str:
    """A non-empty string field."""
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {key!r} must be a non-empty string")
    return value
