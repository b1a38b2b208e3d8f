"""Benchmark loaders by name, each reading the released layout from a user-supplied local copy.

``load_benchmark("mmsafety", "/data/MM-SafetyBench", variants=("SD", "text"))`` -> list of
:class:`~vsfa.eval.items.BenchItem`. Names: see :data:`BENCHMARKS` (``vsfa eval --bench NAME=PATH``).
Options given as strings (from the CLI) are converted to the loader's types.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vsfa.errors import ConfigError, DataError
from vsfa.eval.benchmarks.builtin import load_builtin
from vsfa.eval.benchmarks.figstep import load_figstep
from vsfa.eval.benchmarks.mmsafety import load_mmsafety
from vsfa.eval.benchmarks.mmvet import load_mmvet
from vsfa.eval.benchmarks.mossbench import load_mossbench
from vsfa.eval.benchmarks.spavl import load_spavl
from vsfa.eval.benchmarks.vlguard import load_vlguard
from vsfa.eval.benchmarks.xstest import load_xstest
from vsfa.eval.items import BenchItem


@dataclass(frozen=True)
class Benchmark:
    """A named loader with fixed defaults (e.g. ``figstep_tiny`` = FigStep with ``subset="tiny"``)."""

    name: str
    loader: Callable[..., list[BenchItem]]
    description: str
    needs_path: bool = True
    fixed: dict[str, Any] = field(default_factory=dict)

    def option_types(self) -> dict[str, Any]:
        hints = typing.get_type_hints(self.loader)
        params = list(inspect.signature(self.loader).parameters)[1:]
        return {p: hints.get(p, str) for p in params if p not in self.fixed}


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("figstep", load_figstep, "FigStep / SafeBench, 500 typographic harmful requests"),
        Benchmark("figstep_tiny", load_figstep, "SafeBench-Tiny, 50 items", fixed={"subset": "tiny"}),
        Benchmark("mmsafety", load_mmsafety, "MM-SafetyBench, 13 scenarios x SD/SD_TYPO/TYPO (+ text)"),
        Benchmark("spavl", load_spavl, "SPA-VL test harm (and help) parquet"),
        Benchmark("mmvet", load_mmvet, "MM-Vet v1, 218 benign capability questions"),
        Benchmark("xstest", load_xstest, "XSTest, 250 safe + 200 unsafe text prompts"),
        Benchmark("vlguard", load_vlguard, "VLGuard test: unsafes, safe_unsafes, safe_safes"),
        Benchmark("mossbench", load_mossbench, "MOSSBench, 300 benign over-sensitivity items"),
        Benchmark(
            "mossbench_contrast", load_mossbench, "MOSSBench harmful contrast set", fixed={"contrast": True}
        ),
        Benchmark("builtin", load_builtin, "built-in offline harmful/harmless requests", needs_path=False),
    )
}


def _convert(value: Any, tp: Any, where: str) -> Any:
    if not isinstance(value, str):
        return value
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = typing.get_origin(tp)
    if base in (typing.Union, types.UnionType):
        tp = args[0] if args else str
        base = typing.get_origin(tp)
    if base is tuple:
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if tp is bool:
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    return value


def load_benchmark(name: str, path: str | Path | None = None, **options: Any) -> list[BenchItem]:
    """Load benchmark ``name`` from ``path`` with loader ``options`` (strings are converted)."""
    if name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
    bench = BENCHMARKS[name]
    types_ = bench.option_types()
    unknown = [k for k in options if k not in types_]
    if unknown:
        raise ConfigError(f"benchmark {name!r}: unknown option {unknown[0]!r} (options: {', '.join(types_)})")
    kwargs = {k: _convert(v, types_[k], f"{name}.{k}") for k, v in options.items()}
    if bench.needs_path and path is None:
        raise ConfigError(f"benchmark {name!r} needs a local path: --bench {name}=PATH")
    if bench.needs_path and not Path(path).exists():
        raise DataError(f"{path}: benchmark folder for {name!r} not found")
    items = bench.loader(path, **bench.fixed, **kwargs)
    if not items:
        raise DataError(f"{path}: benchmark {name!r} has no items")
    ids = [it.item_id for it in items]
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: benchmark {name!r} has duplicate item ids")
    return items


@dataclass
class ListConfig:
    """Settings of ``vsfa eval benchmarks`` (none)."""


def list_benchmarks(cfg: ListConfig) -> str:
    """List the benchmark loaders and their options."""
    lines = []
    for b in BENCHMARKS.values():
        opts = ", ".join(b.option_types())
        lines.append(f"{b.name:20s} {b.description}" + (f"  [options: {opts}]" if opts else ""))
    return "\n".join(lines)


__all__ = ["BENCHMARKS", "Benchmark", "BenchItem", "load_benchmark"]
