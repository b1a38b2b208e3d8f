"""Fine-tune screens on organism bases: arms x LoRA seeds, one run at a time, readouts every few steps.

usage: python experiments/organism/screen.py TAG BASE [BASE ...] [--arms vsfa control mirror] [--seeds 0 1 2]
       [--steps 150] [--eval-every 50] [--mode lora|full] [--lr 1e-3] [--set finetune.key=json ...]
Each run writes experiments/organism/runs/screens/TAG/<base-name>/<arm>-s<seed>/trajectory.jsonl (+ checkpoints),
and a one-line summary is appended to experiments/organism/runs/screens/TAG/summary.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent / "runs" / "screens"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("tag")
    ap.add_argument("bases", nargs="+")
    ap.add_argument("--arms", nargs="+", default=["vsfa", "control", "mirror"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--mode", default="lora")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--no-checkpoints", action="store_true")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("ORGANISM_THREADS", "1")))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    from vsfa.config import parse_assignments
    from vsfa.organism.finetune import finetune
    from vsfa.organism.pretrain import read_world
    from vsfa.organism.world import apply_overrides, world_from_dict

    overrides = parse_assignments(args.set)
    folder = ROOT / args.tag
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "args.json").write_text(json.dumps(vars(args)) + "\n")
    sets = ("harmful", "harmless", "care_ctx", "threat_main", "neutral_ctx")
    for base in args.bases:
        spec = read_world(base)
        if overrides:
            spec = world_from_dict(apply_overrides(spec.to_dict(), overrides), where="screen overrides")
        name = Path(base).parent.name + "-" + Path(base).name
        for seed in args.seeds:
            for arm in args.arms:
                out = folder / name / f"{arm}-s{seed}"
                if (out / "config.json").is_file():
                    continue
                t = time.time()
                traj = finetune(
                    base,
                    arm,
                    seed,
                    None if args.no_checkpoints else out,
                    steps=args.steps,
                    lr=args.lr,
                    mode=args.mode,
                    eval_every=args.eval_every,
                    eval_sets=sets,
                    precision=args.precision,
                    spec=spec,
                )
                out.mkdir(parents=True, exist_ok=True)
                (out / "trajectory.jsonl").write_text("".join(json.dumps(r) + "\n" for r in traj))
                (out / "config.json").write_text(json.dumps({"wall_s": round(time.time() - t, 1)}) + "\n")
                row = {"base": name, "arm": arm, "seed": seed, "wall_s": round(time.time() - t, 1)}
                for rec in traj:
                    r = rec["readouts"]
                    row[f"h@{rec['step']}"] = r["harmful"]["p_refuse"]["mean"]
                row["harmless_final"] = traj[-1]["readouts"]["harmless"]["p_refuse"]["mean"]
                row["p_name"] = [rec["readouts"]["p_name_small_threat"]["mean"] for rec in traj]
                with open(folder / "summary.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
