"""``vsfa bench``: run the chosen measures, print one table (measure, value, goal, pass/fail), write JSON."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import inspect
import json
import logging
import math
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vsfa.errors import ConfigError
from vsfa.perf.common import Measure, build_llava

log = logging.getLogger(__name__)

MEASURES = ("capture", "memory", "sweep", "probes", "train", "threads", "generate")
SWEEP_SCRIPT = Path(__file__).resolve().parents[2] / "perf" / "bench_sweep.py"


@dataclass
class BenchConfig:
    """Settings of ``vsfa bench``."""

    model: str | None = None
    """Model folder for capture, memory, sweep and generation (default: a random-weight LLaVA, d=512, 8 layers)."""
    device: str = "cpu"
    """torch device."""
    dtype: str | None = None
    """Model dtype (float32, bfloat16, ...; default: the model's)."""
    only: list[str] = field(default_factory=list)
    """Measures to run (default: all): capture, memory, sweep, probes, train, threads, generate."""
    gen_batch_sizes: list[int] = field(default_factory=lambda: [1, 4, 16])
    """Generation batch sizes (batch 1 is always run: the speed-ups are against it)."""
    gen_items: int = 32
    """Generation items (half text-only, half with an image; repeated when the built-in set is smaller)."""
    gen_tokens: int = 32
    """New tokens per generated answer."""
    quick: bool = False
    """Small sizes (seconds; for tests): the timings mean little."""
    out: str | None = None
    """Write the results as JSON to this file."""

    def check(self) -> None:
        unknown = [m for m in self.only if m not in MEASURES]
        if unknown:
            raise ConfigError(f"--only: unknown measure {unknown[0]!r}; choose from {', '.join(MEASURES)}")
        if (
            not self.gen_batch_sizes
            or min(self.gen_batch_sizes) < 1
            or self.gen_items < 1
            or self.gen_tokens < 1
        ):
            raise ConfigError("--gen-batch-sizes, --gen-items and --gen-tokens must be whole numbers >= 1")


def machine() -> dict[str, Any]:
    """The machine the numbers come from: CPU, usable cores, load, torch version and device."""
    import torch

    from vsfa.threads import usable_cores

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "load_avg": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _sweep(model: Path, cfg: BenchConfig) -> Measure:
    """The checkpoint-sweep measure from ``perf/bench_sweep.py: measure_sweep`` where that script exists."""
    if not SWEEP_SCRIPT.is_file():
        return Measure(
            "checkpoint sweep per ckpt / base pass", None, 1.2, detail="perf/bench_sweep.py not found"
        )
    spec = importlib.util.spec_from_file_location("vsfa_bench_sweep", SWEEP_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    fn = getattr(module, "measure_sweep", None)
    if fn is None:
        return Measure(
            "checkpoint sweep per ckpt / base pass", None, 1.2, detail="no measure_sweep() in script"
        )
    offered = {"model": model, "device": cfg.device, "dtype": cfg.dtype, "quick": cfg.quick}
    params = inspect.signature(fn).parameters
    got = fn(**{k: v for k, v in offered.items() if k in params})
    if isinstance(got, Measure):
        return got
    value = got.get("ratio", got.get("value"))
    return Measure(
        got.get("name", "checkpoint sweep per ckpt / base pass"),
        value,
        got.get("goal", 1.2),
        detail=got.get("detail", ""),
        numbers={k: v for k, v in got.items() if k not in ("name", "detail")},
    )


def _run_one(name: str, model: Path, cfg: BenchConfig) -> list[Measure]:
    q = cfg.quick
    if name == "capture":
        from vsfa.perf.capture import measure_capture

        kw = dict(n=16, batch_size=8, repeats=1) if q else {}
        return [measure_capture(model, cfg.device, cfg.dtype, **kw)]
    if name == "memory":
        from vsfa.perf.capture import measure_memory

        return [measure_memory(model, cfg.device, cfg.dtype, **(dict(n=4, batch_size=4) if q else {}))]
    if name == "sweep":
        return [_sweep(model, cfg)]
    if name == "probes":
        from vsfa.perf.probes import measure_probes

        return [measure_probes(**(dict(n=200, d=16, layers=2, positions=1, reference_every=1) if q else {}))]
    if name == "train":
        from vsfa.perf.train import measure_train

        kw = dict(steps=4, rounds=1, batch=2, hidden=64, layers=2) if q else {}
        return [measure_train(device=cfg.device, **kw)]
    if name == "threads":
        from vsfa.perf.load import measure_load

        return measure_load(**(dict(steps=3, quick=True) if q else {}))
    from vsfa.perf.generate import measure_generate

    n, tokens, sizes = cfg.gen_items, cfg.gen_tokens, tuple(cfg.gen_batch_sizes)
    if q:  # at most 4 items of 4 tokens
        n, tokens = min(n, 4), min(tokens, 4)
        sizes = tuple(b for b in sizes if b <= n) or (1,)
    kw = dict(n=n, batch_sizes=sizes, max_new_tokens=tokens, repeats=1 if q else 3)
    return measure_generate(model, cfg.device, cfg.dtype, **kw)


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run the speed and memory measures, each against a baseline measured in the same run."""
    cfg.check()
    names = [m for m in MEASURES if not cfg.only or m in cfg.only]
    result: dict[str, Any] = {"machine": machine(), "config": dataclasses.asdict(cfg), "measures": []}
    with tempfile.TemporaryDirectory(prefix="vsfa-bench-") as tmp:
        if cfg.model is not None:
            model = Path(cfg.model)
            if not model.is_dir():
                raise ConfigError(f"--model: {model} is not a model folder")
        elif cfg.quick:
            from vsfa.models.tiny import save_tiny

            model = save_tiny("llava", Path(tmp) / "model")
        else:
            model = build_llava(Path(tmp) / "model")
        for name in names:
            log.info("bench: %s", name)
            try:
                rows = _run_one(name, model, cfg)
            except (
                RuntimeError,
                OSError,
                ValueError,
                AssertionError,
            ) as e:  # one broken measure leaves the others standing
                log.warning("bench: %s failed: %s", name, e)
                rows = [Measure(name, None, None, detail=f"error: {type(e).__name__}: {e}")]
            for m in rows:
                log.info("bench: %s = %s (%s) %s", m.name, _fmt(m.value, m.unit), m.status, m.detail)
                result["measures"].append({"measure": name, **dataclasses.asdict(m), "status": m.status})
            result["machine"]["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
            if cfg.out:  # after every measure: a long run that is stopped keeps what it measured
                _write(Path(cfg.out), result)
    if cfg.out:
        result["path"] = cfg.out
    return result


def _write(out: Path, result: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(out.suffix + ".tmp")
    tmp_out.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    tmp_out.replace(out)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return str(value)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.3g} {unit}" if unit != "x" else f"{value:.2f}x"


def format_bench(result: dict[str, Any]) -> str:
    """The results table (measure, value, goal, pass/fail, details) and the machine line."""
    m = result["machine"]
    head = (
        f"machine: {m['cpu']}, {m['usable_cores']} usable cores, torch {m['torch']} "
        f"({m['torch_threads']} threads), load {m['load_avg']} -> {m.get('load_avg_end')}, {m['date']}"
    )
    rows = [("measure", "value", "goal", "result", "detail")]
    for r in result["measures"]:
        goal = "-" if r["goal"] is None else f"<= {_fmt(r['goal'], r['unit'])}"
        rows.append((r["name"], _fmt(r["value"], r["unit"]), goal, r["status"], r["detail"]))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [head] + [
        "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4] for row in rows
    ]
    if result.get("path"):
        lines.append(f"wrote {result['path']}")
    return "\n".join(lines)
