"""Configs are dataclasses read from TOML; CLI flags override; the resolved config is saved with the run.

Unknown keys are an error naming the file and the key (a typo must never be silently ignored).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
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
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    from vsfa.io import read_text

    try:
        data = tomllib.loads(read_text(path, ConfigError))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from None
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return from_dict(cls, data, where=str(path))


def to_dict(obj: Any) -> dict[str, Any]:
    """The resolved config as a plain dict (paths as strings), for saving beside the run."""
    return json_ready(dataclasses.asdict(obj))


def json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def to_toml(data: dict[str, Any]) -> str:
    """Minimal TOML writer for resolved configs (tables, scalars, lists of scalars)."""
    lines: list[str] = []
    tables: list[tuple[str, dict]] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    def emit(prefix: str, d: dict) -> None:
        for k, v in d.items():
            if v is None:
                continue
            if isinstance(v, dict):
                tables.append((f"{prefix}{k}", v))
            else:
                lines.append(f"{k} = {scalar(v)}")

    emit("", json_ready(data))
    while tables:
        name, d = tables.pop(0)
        lines.append(f"\n[{name}]")
        emit(f"{name}.", d)
    return "\n".join(lines) + "\n"
