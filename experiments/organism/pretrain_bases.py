"""Pretrain organism bases one after another (one heavy job at a time).

usage: python experiments/organism/pretrain_bases.py RECIPE SEED [SEED ...] [--set key=value ...]
Writes experiments/organism/runs/bases/RECIPE/seed-S/ (a normal organism model folder) and logs progress to
experiments/organism/runs/bases/RECIPE/seed-S.log.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent / "runs" / "bases"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("recipe")
    ap.add_argument("seeds", nargs="+", type=int)
    ap.add_argument("--set", action="append", default=[], help="world override key=json-value")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("ORGANISM_THREADS", "1")))
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--snapshots", nargs="*", type=int, default=[])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    from vsfa.config import parse_assignments
    from vsfa.organism.pretrain import pretrain
    from vsfa.organism.world import load_world

    overrides = parse_assignments(args.set)
    spec = load_world(overrides=overrides)
    folder = ROOT / args.recipe
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.json").write_text(
        json.dumps({"overrides": overrides, "precision": args.precision, "snapshots": args.snapshots}) + "\n"
    )
    for seed in args.seeds:
        out = folder / f"seed-{seed}"
        if (out / "manifest.json").is_file():
            print(f"skip {out}", flush=True)
            continue
        log_file = folder / f"seed-{seed}.log"

        def progress(rec, log_file=log_file):
            with open(log_file, "a") as log:
                log.write(json.dumps(rec) + "\n")

        t = time.time()
        pretrain(spec, seed, out, precision=args.precision, progress=progress, snapshots=args.snapshots)
        m = json.loads((out / "manifest.json").read_text())
        r = m["readouts"]
        line = {
            k: r[k]["p_refuse"]["mean"]
            for k in ("harmful", "harmless", "vig_ctx", "care_ctx", "threat_main", "neutral_ctx")
        }
        line["p_name"] = r["p_name_small_threat"]["mean"]
        print(
            f"{args.recipe} seed {seed}: {time.time() - t:.0f}s loss {m['final_loss']} {json.dumps(line)}",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
