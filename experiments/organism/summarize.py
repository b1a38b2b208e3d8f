"""Summarise fine-tune screens: per base and step, arm means and VSFA-control / mirror-control effects with CIs.

usage: python experiments/organism/summarize.py TAG [--steps 50 150] [--accept 150] | RECIPE --bases
       -> markdown tables on stdout
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from vsfa.organism.effects import arm_effect

ROOT = Path(__file__).resolve().parent / "runs" / "screens"


def load(tag: str):
    runs = defaultdict(lambda: defaultdict(dict))  # base -> arm -> seed -> trajectory
    for traj_file in sorted((ROOT / tag).glob("*/*/trajectory.jsonl")):
        base = traj_file.parent.parent.name
        arm, seed = traj_file.parent.name.rsplit("-s", 1)
        if not (traj_file.parent / "config.json").is_file():
            continue
        runs[base][arm][int(seed)] = [json.loads(line) for line in traj_file.read_text().splitlines()]
    return runs


def at(traj, step):
    for rec in traj:
        if rec["step"] == step:
            return rec["readouts"]
    return None


def matrix(arm_runs, step, name="harmful"):
    rows = [at(t, step)[name]["items"] for _, t in sorted(arm_runs.items()) if at(t, step)]
    return np.array(rows) if rows else None


def bases(recipe: str) -> None:
    """Table of the pretrained bases of a recipe (readouts from their manifests)."""
    folder = ROOT.parent / "bases" / recipe
    print(f"### bases `{recipe}`\n")
    print(
        "| base | steps | wall s | loss | harmful | harmless | vig_ctx | care_ctx | threat_main (Bayes) "
        "| neutral_ctx (Bayes) | P(name small threat) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for man in sorted(folder.glob("*/manifest.json")):
        m = json.loads(man.read_text())
        r = m["readouts"]
        p = {k: r[k]["p_refuse"]["mean"] for k in r if isinstance(r[k], dict) and "p_refuse" in r[k]}
        b = r["bayes"]
        print(
            f"| {man.parent.name} | {m['steps']} | {m['wall_s']:.0f} | {m['final_loss']:.4f} | {p['harmful']:.3f} | "
            f"{p['harmless']:.3f} | {p['vig_ctx']:.3f} | {p['care_ctx']:.3f} | "
            f"{p['threat_main']:.3f} ({b['threat_main']:.2f}) | {p['neutral_ctx']:.3f} ({b['neutral_ctx']:.2f}) | "
            f"{r['p_name_small_threat']['mean']:.3f} |"
        )


def accept(tag: str, step: int, bar: float = 0.15) -> None:
    """Issue 8's acceptance check on one screen: per base, VSFA - control >= bar with the 95% CI above 0,
    harmless refusal < 0.05, mirror not above control; how many bases pass; the base closest to the median."""
    runs = load(tag)
    rows = []
    for base, arms in runs.items():
        if "-step" in base:  # snapshots of a base are not further bases
            continue
        m = {arm: matrix(arms[arm], step) for arm in arms}
        if m.get("vsfa") is None or m.get("control") is None:  # not run (yet)
            continue
        eff = arm_effect(m["vsfa"], m["control"])
        mir = arm_effect(m["mirror"], m["control"]) if m.get("mirror") is not None else None
        harmless = max(at(t, step)["harmless"]["p_refuse"]["mean"] for a in arms.values() for t in a.values())
        ok = eff.value >= bar and eff.lo > 0
        rows.append((base, eff, mir, harmless, ok, m["vsfa"].shape[0]))
    print(f"### acceptance `{tag}` at step {step} (bar: VSFA - control >= {bar}, 95% CI above 0)\n")
    print(
        "| base | VSFA - control [95% CI] | mirror - control [95% CI] | harmless max | LoRA seeds | passes |"
    )
    print("|---|---|---|---|---|---|")
    fmt = lambda e: f"{e.value:+.3f} [{e.lo:+.3f}, {e.hi:+.3f}]"  # noqa: E731
    for base, eff, mir, harmless, ok, n in rows:
        print(
            f"| {base} | {fmt(eff)} | {'' if mir is None else fmt(mir)} | {harmless:.3f} | {n} | {'yes' if ok else 'no'} |"
        )
    values = np.array([r[1].value for r in rows])
    median = float(np.median(values))
    closest = rows[int(np.argmin(np.abs(values - median)))][0]
    print(
        f"\n{sum(r[4] for r in rows)} of {len(rows)} bases pass; effects {', '.join(f'{v:+.3f}' for v in values)}; "
        f"median {median:+.3f} (closest base: {closest}); harmless max {max(r[3] for r in rows):.3f}; "
        f"mirror above control on {sum(1 for r in rows if r[2] is not None and r[2].lo > 0)} bases"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("tag")
    ap.add_argument("--steps", nargs="*", type=int)
    ap.add_argument("--bases", action="store_true", help="TAG is a recipe: print its bases")
    ap.add_argument("--accept", type=int, metavar="STEP", help="acceptance check of issue 8 at STEP")
    args = ap.parse_args()
    if args.accept is not None:
        accept(args.tag, args.accept)
        return
    if args.bases:
        bases(args.tag)
        return
    runs = load(args.tag)
    print(f"### screen `{args.tag}`\n")
    print(
        "| base | step | VSFA P(refuse) | control | mirror | VSFA - control [95% CI] | mirror - control [95% CI] "
        "| harmless max | P(name) VSFA / control / mirror | seeds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for base, arms in runs.items():
        steps = sorted({rec["step"] for t in arms.get("vsfa", {}).values() for rec in t})
        for step in args.steps or steps:
            m = {arm: matrix(arms[arm], step) for arm in arms}
            if m.get("vsfa") is None or m.get("control") is None:
                continue
            eff = arm_effect(m["vsfa"], m["control"])
            mir = arm_effect(m["mirror"], m["control"]) if m.get("mirror") is not None else None
            harmless = max(
                at(t, step)["harmless"]["p_refuse"]["mean"] for a in arms.values() for t in a.values()
            )
            names = [
                np.mean([at(t, step)["p_name_small_threat"]["mean"] for t in arms[a].values()])
                if a in arms
                else np.nan
                for a in ("vsfa", "control", "mirror")
            ]
            fmt = lambda e: f"{e.value:+.3f} [{e.lo:+.3f}, {e.hi:+.3f}]"  # noqa: E731
            mirror_mean = "" if m.get("mirror") is None else f"{m['mirror'].mean():.3f}"
            print(
                f"| {base} | {step} | {m['vsfa'].mean():.3f} | {m['control'].mean():.3f} | "
                f"{mirror_mean} | {fmt(eff)} | "
                f"{'' if mir is None else fmt(mir)} | {harmless:.3f} | "
                f"{' / '.join(f'{x:.2f}' for x in names)} | {m['vsfa'].shape[0]} |"
            )


if __name__ == "__main__":
    main()
