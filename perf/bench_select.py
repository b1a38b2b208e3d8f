"""Causal selection: skipping statically rejected candidates vs scoring every one, on a finished study.

``vsfa select`` scores each candidate direction with forward passes (addition, subtraction, ablation, random
directions). Candidates in the readout zone, below the first trained layer or under the accuracy floor cannot be
eligible, so by default they are listed unscored (:func:`analysis.selection.needed_candidates`). The baseline,
measured in the same run on the same model, directions and selection items, is ``score_all`` (every candidate
scored, as before). Reported: both wall times, their ratio, how many candidates were scored, whether the chosen
candidate is the same, and the largest difference of any shared candidate's score (must be 0).

    python perf/bench_select.py --study runs/demo-smol-llava-safe --max-items 8 --json perf/results/x.json

The study folder is one ``vsfa demo`` wrote (its ``selection.json`` names the model, directions and requests).
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


def main() -> None:
    from analysis.selection import SelectConfig, select

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", type=Path, required=True, help="a finished study folder")
    ap.add_argument("--max-items", type=int, default=8, help="selection requests per class (study: 32)")
    ap.add_argument("--json", type=Path, help="write the result here")
    args = ap.parse_args()
    saved = json.loads((args.study / "selection.json").read_text())
    settings = {**saved["settings"], "max_items": args.max_items}
    settings.pop("score_all", None)
    fields = {k: saved[k] for k in ("model", "directions", "requests")}
    runs, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, full in (("skip", False), ("score_all", True)):
            cfg = SelectConfig(**fields, **settings, score_all=full, out=Path(tmp) / f"{mode}.json")
            t0 = time.perf_counter()
            runs[mode] = select(cfg)
            seconds[mode] = time.perf_counter() - t0
    key = ("hook", "position", "method")
    full = {tuple(c[k] for k in key): c for c in runs["score_all"]["candidates"]}
    scored = [c for c in runs["skip"]["candidates"] if c["scored"]]
    result = {
        "study": str(args.study),
        "max_items": args.max_items,
        "threads": int(os.environ.get("VSFA_THREADS") or os.environ.get("OMP_NUM_THREADS") or 0),
        "seconds": seconds,
        "ratio_score_all_over_skip": seconds["score_all"] / seconds["skip"],
        "scored": len(scored),
        "candidates": len(full),
        "same_choice": all(runs["skip"]["chosen"][k] == runs["score_all"]["chosen"][k] for k in key),
        "chosen": {k: runs["skip"]["chosen"][k] for k in (*key, "score")},
        "max_score_difference": max(
            abs(c["score"] - full[tuple(c[k] for k in key)]["score"]) for c in scored
        ),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    if not result["same_choice"] or result["max_score_difference"] > 0:
        sys.exit("the skipping selection differs from scoring every candidate")


if __name__ == "__main__":
    main()
