"""Held-out object naming of a built smol-llava folder: per class, wrong answers, and two harder image sets.

    nice -n 10 .venv/bin/python experiments/demo/naming_eval.py MODEL_DIR [--per-class 25] [--out FILE.json]

Sets: ``icons`` (the held-out icon set the acceptance figure uses: 64 px icons, seeds never trained on),
``icons-224`` (the same icons drawn at 224 px and downscaled by the processor), ``scenes-1`` (procedural scenes
with one object and no sign, 224 px, the object in one cell of the 3x3 grid, i.e. small at 64 px).
"""

from __future__ import annotations

import argparse
import time

import torch

from vsfa.data.procedural import render_icon, render_scene
from vsfa.env import apply_offline_defaults
from vsfa.io import write_json_atomic
from vsfa.models import smol_llava
from vsfa.models.loading import load_vlm


def scenes_one_object(per_class: int) -> list[tuple]:
    out, counts, seed = [], dict.fromkeys(smol_llava.CLASSES, 0), 0
    while min(counts.values()) < per_class and seed < 200_000:
        for kind in ("threat", "neutral"):
            img, ann = render_scene(kind, seed, size=224)
            name = ann["objects"][0]["name"]
            if ann["count"] == 1 and counts[name] < per_class:
                counts[name] += 1
                out.append((img, name))
        seed += 1
    return out


def main() -> None:
    apply_offline_defaults()
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--per-class", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sets", default="icons,icons-224,scenes-1")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    vlm = load_vlm(args.model)
    n = args.per_class
    sets = {
        "icons": lambda: smol_llava.heldout_icons(n),
        "icons-224": lambda: [
            (render_icon(name, j * len(smol_llava.CLASSES) + c, 224)[0], name)
            for j in range(n)
            for c, name in enumerate(smol_llava.CLASSES)
        ],
        "scenes-1": lambda: scenes_one_object(n),
    }
    result = {}
    for name in args.sets.split(","):
        items = sets[name]()
        t0 = time.time()
        answers = smol_llava.generate_names(vlm, [im for im, _ in items])
        names = [c for _, c in items]
        rep = smol_llava.naming_report(answers, names)
        rep["wrong"] = [
            {"object": c, "answer": a}
            for a, c in zip(answers, names, strict=True)
            if not smol_llava.is_correct(a, c)
        ]
        rep["seconds"] = round(time.time() - t0, 1)
        result[name] = rep
        print(
            f"{name}: accuracy {rep['accuracy']:.3f} on {rep['n']} (threat {rep['threat']:.3f} / neutral {rep['neutral']:.3f}), {rep['seconds']} s",
            flush=True,
        )
        for c, acc in rep["per_class"].items():
            print(f"  {c:22s} {acc:.2f}")
    if args.out:
        write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()
