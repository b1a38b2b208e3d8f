"""Configs are dataclasses read from TOML; CLI flags override; the resolved config is saved with the run.

Unknown keys are an error naming the file and the key (a typo must never be silently ignored). This module
holds the one ``KEY=VALUE`` parser (:func:`parse_assignment`, TOML values) and the one dotted-key helper
(:func:`set_dotted`) that the CLI, the training config, the study presets and the organism world share, and
writes TOML with ``tomli-w`` (:func:`to_toml`).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from vsfa.errors import ConfigError

T = TypeVar("T")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where) if len(args) == 1 else value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} ({value!r})")
    if tp is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{where}: expected a path, got {type(value).__name__} ({value!r})")
        return Path(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a dict; unknown keys and wrong types are ConfigErrors naming the key."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(fields)})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def check_counts(where: str, minimum: int = 1, **values: Any) -> None:
    """Each of ``values`` is None (unset) or an integer >= ``minimum``; else a ConfigError naming the field.

    Counts like ``batch_size=0`` or ``limit=-3`` are never reinterpreted (as "all" or "all but 3").
    """
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{where}: {name} must be an integer >= {minimum}, not {value!r}")


def load_toml(cls: type[T], path: str | Path, overrides: dict[str, Any] | None = None) -> T:
    """Read ``cls`` from a TOML file, then apply ``overrides`` (dotted keys, e.g. ``{"lora.r": 8}``)."""
    data = read_toml(path)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_dotted(data, dotted, value, where=str(path))
    return from_dict(cls, data, where=str(path))


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a missing file, bad UTF-8 or bad TOML is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    from vsfa.io import read_text

    try:
        return tomllib.loads(read_text(path, ConfigError))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from None


def parse_value(raw: str) -> Any:
    """A TOML value (``8``, ``1e-4``, ``true``, ``[1, 2]``, ``"x"``); anything else is the bare string."""
    try:
        return tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return raw.strip()


def parse_assignment(item: str, where: str = "--set") -> tuple[str, Any]:
    """``"train.lr=1e-4"`` -> ``("train.lr", 0.0001)``: the one ``KEY=VALUE`` parser (TOML values)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{where} {item!r}: expected KEY=VALUE (e.g. train.lr=1e-4)")
    return key.strip(), parse_value(raw)


def parse_assignments(items: Iterable[str], where: str = "--set") -> dict[str, Any]:
    """Several ``KEY=VALUE`` items as a dict of dotted keys (a later item wins)."""
    return dict(parse_assignment(item, where) for item in items)


def set_dotted(data: dict[str, Any], dotted: str, value: Any, where: str = "config") -> None:
    """Set ``data["a"]["b"] = value`` for ``dotted == "a.b"``, creating tables; the one dotted-key helper."""
    *parents, leaf = dotted.split(".")
    node = data
    for p in parents:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{where}: {dotted!r}: {p!r} is not a table")
        node = nxt
    node[leaf] = value


def nest(flat: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """``{"a.b": 1, "c": 2}`` -> ``{"a": {"b": 1}, "c": 2}``."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        set_dotted(out, dotted, value, where)
    return out


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``top`` laid over it, table by table."""
    out = dict(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def to_dict(obj: Any) -> dict[str, Any]:
    """The resolved config as a plain dict (paths as strings), for saving beside the run."""
    return json_ready(dataclasses.asdict(obj))


def json_ready(value: Any) -> Any:
    """Paths as strings and tuples as lists, recursively (JSON / TOML ready)."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def to_toml(data: dict[str, Any]) -> str:
    """A resolved config as TOML text (written by ``tomli-w``); ``None`` values are left out of tables.

    TOML has no null: a ``None`` inside a list is a ConfigError naming the key, never the string "None".
    """
    import tomli_w

    def clean(value: Any, where: str) -> Any:
        if isinstance(value, dict):
            return {k: clean(v, f"{where}.{k}" if where else k) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            if any(v is None for v in value):
                raise ConfigError(f"{where}: TOML cannot hold None inside a list ({value!r})")
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    return tomli_w.dumps(clean(json_ready(data), ""))
