"""Atomic file writing, hashing and manifests: the on-disk conventions every stage shares.

A folder is complete only when its ``manifest.json`` exists; write it last with :func:`write_manifest`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return json_safe(obj.tolist())
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return json_safe(asdict(obj))
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats as None and numpy scalars as Python ones (strict JSON everywhere)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text with stable key order (NaN/inf -> null); numpy/torch arrays, paths, dataclasses allowed."""
    return json.dumps(json_safe(obj), indent=indent, sort_keys=True, default=_json_default, allow_nan=False)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it onto ``path``, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write text to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write JSON to ``path`` atomically."""
    return write_text_atomic(path, dumps(obj) + "\n")


def write_csv_atomic(path: str | Path, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> int:
    """Write ``rows`` (dicts with at least ``columns``) as CSV atomically; floats as ``%.6g``. Returns the row count."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in columns})
            n += 1
    return n


def write_jsonl_atomic(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write JSON lines to ``path`` atomically."""
    return write_text_atomic(path, "".join(dumps(r, indent=None) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file; a malformed line is an error naming file and line."""
    from vsfa.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{i}: invalid JSON ({e.msg})") from None
    return rows


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``folder/manifest.json`` atomically. Call it last: it marks the folder complete."""
    return write_json_atomic(Path(folder) / MANIFEST, manifest)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Read a folder's manifest; a missing one means the folder is incomplete (an ArtifactError)."""
    from vsfa.errors import ArtifactError

    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{folder}: no {MANIFEST} (missing or interrupted before completion)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: invalid JSON ({e.msg})") from None


def is_complete(folder: str | Path) -> bool:
    """True when the folder has its manifest."""
    return (Path(folder) / MANIFEST).is_file()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a folder under a temp name beside ``path`` and rename it into place on success.

    An existing ``path`` is replaced only after the new folder is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex SHA-256 of an object's canonical JSON: the content key of configs and specs."""
    return sha256_bytes(dumps(obj, indent=None).encode())


_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".gguf", ".pt"}
_FULL_HASH_LIMIT = 256 << 20  # files up to this size are hashed whole; larger ones by size + head + tail


def _file_digest(path: Path, sample: int = 4 << 20) -> str:
    size = path.stat().st_size
    if size <= _FULL_HASH_LIMIT:
        return sha256_file(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(sample))
        f.seek(size - sample)
        h.update(f.read(sample))
    return h.hexdigest()


def model_fingerprint(folder: str | Path) -> str:
    """Content key of a model or adapter folder: config + weight files (big files sampled, so 7B is cheap).

    Small models (all tiny and demo models) are hashed in full, so two seeds never collide.
    """
    folder = Path(folder)
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name in {"config.json", "adapter_config.json"}):
            h.update(p.name.encode())
            h.update(_file_digest(p).encode())
    return h.hexdigest()
