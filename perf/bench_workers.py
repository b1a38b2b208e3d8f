"""A whole study in one process vs in worker processes, on the same machine in the same run.

``vsfa demo`` runs training, the base's direction selection, and each run's evaluation and tracking as tasks
(:mod:`vsfa.parallel`). The baseline is ``workers=1``: one process with every free core as torch threads, as
before. Reported: both wall times, their ratio, and whether every result equals the baseline's (selection,
link, steering: the JSON files with the study's own folder name replaced), else the largest difference of a
number and any other field that differs. With one thread per worker against two in one process, sums may round
differently in the last digits.

    python perf/bench_workers.py --study organism --json perf/results/workers.json

Both studies start from nothing (their own folders, a fresh activation cache); the model is the preset's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
RESULTS = ("selection.json", "link.json", "steer/causal.json")


def _results(study: Path) -> dict:
    out = {}
    for rel in RESULTS:
        rep = json.loads((study / rel).read_text().replace(str(study), "STUDY"))
        rep.pop("seconds", None)
        out[rel] = rep
    return out


def _differences(a, b, path: str = "") -> tuple[float, list[str]]:
    """(largest absolute difference of numbers at the same place, places whose non-numbers differ)."""
    if isinstance(a, dict) and isinstance(b, dict):
        parts = [_differences(a[k], b[k], f"{path}.{k}") for k in a.keys() & b.keys()]
        other = [f"{path}.{k}" for k in a.keys() ^ b.keys()]
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        parts, other = (
            [_differences(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True))],
            [],
        )
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        gap = abs(a - b)
        return (0.0 if gap != gap else gap), []  # NaN at both places counts as equal
    else:
        return 0.0, ([] if a == b else [path])
    return max([0.0, *(p[0] for p in parts)]), other + [x for p in parts for x in p[1]]


def main() -> None:
    from vsfa.study import run_study, study_config
    from vsfa.threads import choose_threads, free_cores

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", default="organism", help="a preset of vsfa demo")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the result here")
    args = ap.parse_args()
    seconds, results = {}, {}
    start = {"free_cores": free_cores(), "threads_one_process": choose_threads().threads}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, args.workers):
            out = Path(tmp) / f"workers-{workers}"
            cfg = study_config(args.study, overrides=[f"workers={workers}", "figures=false"], out=out)
            t0 = time.perf_counter()
            run_study(cfg)
            seconds[workers] = time.perf_counter() - t0
            results[workers] = _results(out)
    differences = {rel: _differences(results[1][rel], results[args.workers][rel]) for rel in RESULTS}
    result = {
        "study": args.study,
        **start,
        "workers": args.workers,
        "seconds": {f"workers={k}": round(v, 1) for k, v in seconds.items()},
        "ratio_one_over_workers": round(seconds[1] / seconds[args.workers], 3),
        "same_results": {rel: results[1][rel] == results[args.workers][rel] for rel in RESULTS},
        "largest_difference": {rel: diff[0] for rel, diff in differences.items()},
        "other_differences": {rel: diff[1] for rel, diff in differences.items()},
        "load_after": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
