"""Atomic file writing, hashing and manifests: the on-disk conventions every stage shares.

A folder is complete only when its ``manifest.json`` exists; write it last with :func:`write_manifest`.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
logger = logging.getLogger(__name__)


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


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (``os.umask`` sets it to read it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _follow_umask(path: Path, mode: int) -> None:
    """``mkstemp``/``mkdtemp`` create 0600/0700; give the temp the mode a plain ``open``/``mkdir`` would."""
    os.chmod(path, mode & ~_umask())


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def clean_stale_temps(path: str | Path) -> list[Path]:
    """Remove temp files/folders beside ``path`` left by writers that died (kill -9) before renaming.

    Temp names are ``.<name>.<pid>.<random>.tmp``; one whose pid is no longer running is stale. Returns the
    removed paths.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[^.]+\.tmp")
    removed = []
    for p in path.parent.iterdir():
        m = pattern.fullmatch(p.name)
        if m and not _pid_alive(int(m.group(1))):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it onto ``path``, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    _follow_umask(tmp_path, 0o666)
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


def os_error_message(e: OSError) -> str:
    """A short reason for an OS error (``permission denied``, ``file name too long``, ...)."""
    return (e.strerror or type(e).__name__).lower()


def read_text(path: str | Path, error: type[Exception] | None = None) -> str:
    """A UTF-8 text file's content; missing, unreadable or non-UTF-8 files are one error naming the file.

    ``error``: the :class:`~vsfa.errors.VsfaError` subclass to raise (default DataError).
    """
    from vsfa.errors import DataError

    error = error or DataError
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not a file") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({os_error_message(e)})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise error(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})"
        ) from None


def read_json(path: str | Path, error: type[Exception] | None = None) -> Any:
    """A JSON file's content; missing, non-UTF-8 or invalid JSON is one error naming the file (and line)."""
    from vsfa.errors import DataError

    error = error or DataError
    text = read_text(path, error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file; a malformed line is an error naming file and line."""
    from vsfa.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows = []
    for i, line in enumerate(read_text(path).splitlines(), 1):
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
    manifest = read_json(path, ArtifactError)
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    return manifest


def absolute_path(value: str | Path) -> str:
    """``value`` as an absolute path string (for manifests, so they read the same from any directory)."""
    return str(Path(value).expanduser().absolute())


def recorded_path(value: str | None, folder: str | Path) -> str | None:
    """Resolve a path recorded in ``folder``'s manifest (a run folder or one of its checkpoints).

    New manifests store absolute paths. Older ones stored them relative to where training ran; that
    directory is recovered from the manifest's ``config.out`` (the run folder as it was given), so the path
    resolves from any working directory. Falls back to the value as given.
    """
    if not value:
        return None
    path = Path(value)
    if path.is_absolute():
        return value
    folder = Path(folder).absolute()
    run = folder.parent.parent if folder.parent.name == "checkpoints" else folder
    from vsfa.errors import VsfaError

    try:
        out = (read_manifest(folder).get("config") or {}).get("out")
    except VsfaError:  # no readable manifest: the value as given
        out = None
    if out and not Path(out).is_absolute():
        parts = Path(os.path.normpath(out)).parts
        if parts and run.parts[-len(parts) :] == parts:
            root = Path(*run.parts[: len(run.parts) - len(parts)])
            if (root / path).exists():
                return str(root / path)
    return value


def first_difference(a: Any, b: Any, prefix: str = "") -> str:
    """The first field where two JSON-like values differ, as ``key.sub: A here vs B in the folder``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
    return f"{prefix.rstrip('.')}: {a!r} here vs {b!r} in the folder"


def reuse_or_replace(
    target: str | Path, inputs: dict[str, Any], overwrite: bool = False, manifest: str | Path | None = None
) -> bool:
    """The overwrite policy every writer shares, applied before any work. True: reuse the complete output.

    ``target`` is an output folder whose manifest (or the ``manifest`` file given, e.g. a direction sidecar)
    records the ``inputs`` it was built from. Same inputs: reuse it (True). Nothing there: write it (False).
    Different inputs, no record of them, or a folder holding other files: an :class:`~vsfa.errors.ArtifactError`
    naming the first difference, unless ``overwrite`` (then False: it will be replaced).
    """
    from vsfa.errors import ArtifactError

    target = Path(target)
    man = Path(manifest) if manifest is not None else target / MANIFEST
    if target.exists() and manifest is None and not target.is_dir():
        raise ArtifactError(f"{target}: exists and is not a folder")
    if man.is_file():
        theirs = read_json(man, ArtifactError)
        ours = json.loads(dumps(inputs))
        recorded = theirs.get("inputs") if isinstance(theirs, dict) else None
        if recorded == ours:
            return True
        why = "no record of its inputs" if recorded is None else first_difference(ours, recorded)
    elif target.is_dir() and any(target.iterdir()):
        why = "files without a manifest.json"
    else:
        return False
    if overwrite:
        return False
    raise ArtifactError(f"{target}: holds other results ({why}); pass --overwrite to replace them")


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
    clean_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    _follow_umask(tmp, 0o777)
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
DIGEST_CACHE_MIN_BYTES = 256 << 20  # files larger than this are hashed once and their digest cached
DIGEST_CACHE_FILE = "file-digests.json"  # under :func:`vsfa_cache_dir`
_LEGACY_SAMPLE = 4 << 20  # bytes at each end that fingerprints before whole-file hashing read of big files


def vsfa_cache_dir() -> Path:
    """The user's VSFA cache folder: ``$VSFA_CACHE`` if set, else ``~/.cache/vsfa``."""
    root = os.environ.get("VSFA_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "vsfa"


def _stat_key(stat: os.stat_result) -> dict[str, int]:
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ino": stat.st_ino}


def _read_digest_cache(path: Path) -> dict[str, Any]:
    """The digest cache (empty when absent, unreadable or not the expected shape: it is only a cache)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _store_digest(cache: Path, name: str, entry: dict[str, Any]) -> None:
    """Add one entry to the digest cache: re-read, merge, atomic replace (a concurrent writer's entry may be
    lost, never the file: a lost entry only costs one more hash). Entries of vanished files are dropped."""
    entries = _read_digest_cache(cache)
    entries = {k: v for k, v in entries.items() if k != name and os.path.exists(k)}
    entries[name] = entry
    try:
        write_json_atomic(cache, entries)
    except OSError as e:  # a read-only home: hash again next time
        logger.debug("cannot write the digest cache %s (%s)", cache, os_error_message(e))


def _valid_hit(hit: Any, stat: os.stat_result) -> bool:
    """A cache entry that holds a digest and was taken of this very file state."""
    if not isinstance(hit, dict) or not isinstance(hit.get("sha256"), str):
        return False
    return {k: hit.get(k) for k in ("size", "mtime_ns", "ino")} == _stat_key(stat)


def file_digest(path: str | Path) -> str:
    """Hex SHA-256 of a whole file. Files over :data:`DIGEST_CACHE_MIN_BYTES` are read once: their digest is
    cached in ``$VSFA_CACHE/file-digests.json`` by absolute path, size, mtime (ns) and inode, so a changed,
    touched or replaced file is hashed again."""
    path = Path(path)
    stat = path.stat()
    if stat.st_size <= DIGEST_CACHE_MIN_BYTES:
        return sha256_file(path)
    name = str(path.resolve())
    cache = vsfa_cache_dir() / DIGEST_CACHE_FILE
    hit = _read_digest_cache(cache).get(name)
    if _valid_hit(hit, stat):
        return hit["sha256"]
    logger.info("hashing %s (%.1f GB) once; digest cached in %s", path, stat.st_size / 1e9, cache)
    digest = sha256_file(path)
    after = path.stat()
    if _stat_key(after) == _stat_key(stat):  # not written to while it was read
        _store_digest(cache, name, {**_stat_key(stat), "sha256": digest})
    return digest


def _legacy_digest(path: Path) -> str:
    """The digest fingerprints used before whole-file hashing: big files by size + 4 MB head + 4 MB tail."""
    size = path.stat().st_size
    if size <= DIGEST_CACHE_MIN_BYTES:
        return sha256_file(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(_LEGACY_SAMPLE))
        f.seek(size - _LEGACY_SAMPLE)
        h.update(f.read(_LEGACY_SAMPLE))
    return h.hexdigest()


def _fingerprint_files(folder: Path) -> list[Path]:
    return [
        p
        for p in sorted(folder.iterdir())
        if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name in {"config.json", "adapter_config.json"})
    ]


def model_fingerprint(folder: str | Path) -> str:
    """Content key of a model or adapter folder: config + weight files, each hashed whole.

    Big files (a 7B's shards) are read once: :func:`file_digest` caches their digest by path, size and mtime.
    """
    h = hashlib.sha256()
    for p in _fingerprint_files(Path(folder)):
        h.update(p.name.encode())
        h.update(file_digest(p).encode())
    return h.hexdigest()


def fingerprint_matches(recorded: str, folder: str | Path) -> bool:
    """``recorded`` (from a manifest) is ``folder``'s fingerprint: the current whole-file one, or the sampled
    one that manifests written before whole-file hashing hold (it differs only for files over 256 MB)."""
    if recorded == model_fingerprint(folder):
        return True
    files = _fingerprint_files(Path(folder))
    if not any(p.stat().st_size > DIGEST_CACHE_MIN_BYTES for p in files):
        return False
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(_legacy_digest(p).encode())
    return recorded == h.hexdigest()


def lock_path(target: str | Path) -> Path:
    """The lock file of an output ``target`` (a folder or a file stem): ``.<name>.lock`` beside it."""
    target = Path(target)
    name = f".{target.name}.lock"
    if len(name.encode()) > 255:  # the target's own name may still fit: keep the lock from failing first
        name = f".{sha256_bytes(target.name.encode())[:32]}.lock"
    return target.with_name(name)


def _lock_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "another process"


@contextlib.contextmanager
def output_lock(target: str | Path, wait: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on an output folder or file stem while writing it.

    The lock is an ``fcntl.flock`` on ``.<name>.lock`` beside ``target`` (so the target itself is not touched
    before the inputs are checked); the kernel drops it when the holder dies, so a kill -9 never leaves a stale
    lock. A second writer fails at once with an :class:`~vsfa.errors.ArtifactError` naming the holder's pid.
    The lock file (and any parent folders created for it, when empty) is removed on release. ``wait``: block
    until the holder is done instead (for content-addressed caches, where the second writer can reuse).
    """
    from vsfa.errors import ArtifactError

    target = Path(target)
    if target.name in ("", ".", ".."):
        raise ArtifactError(f"{str(target)!r}: not an output path (name a folder, e.g. runs/x)")
    lock = lock_path(target)
    created = []
    parent = lock.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ArtifactError(f"{lock.parent}: cannot create output folder ({os_error_message(e)})") from None
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            _remove_empty(created)
            raise ArtifactError(f"{target}: cannot create its lock file ({os_error_message(e)})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _lock_holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise ArtifactError(
                    f"{target}: in use by {holder} (lock {lock}); wait for it or choose another output"
                ) from None
            raise ArtifactError(f"{lock}: cannot lock ({os_error_message(e)})") from None
        try:  # the holder may have removed the file between our open and flock: lock the current one
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)
        _remove_empty(created)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()
