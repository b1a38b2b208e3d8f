"""Does the gradient alignment at the base predict the fine-tune effect? One row per base of a screen.

usage: python experiments/organism/alignment_vs_effect.py TAG RECIPE [TAG RECIPE ...] [--step 150] [--plot png]
For every base of experiments/organism/runs/bases/RECIPE/ that screen TAG ran (vsfa, control, mirror arms): the
measured VSFA - control and mirror - control effects at STEP (two-level bootstrap, as summarize.py) beside the
base's step-0 gradient alignment (`vsfa organism alignment`, the adapters' layers); then the Spearman correlation
over all the bases of all the TAG RECIPE pairs, with the toolkit's 95% CI over bases (:func:`vsfa.stats.correlation`)
and a two-sided permutation p (:func:`vsfa.stats.permutation_p`, ``scipy.stats.permutation_test``). Markdown on
stdout.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def readout_cosine(vlm, spec) -> float:
    """Cosine, in the final norm's input space, between the logit directions of the VSFA-trained choice (the first
    word where a vigilant and a carefree answer about a threat scene with a small threat differ) and of refusal
    ("I" minus "Sure"): how much pushing the one pushes the other at the last layer."""
    import random

    import torch

    from vsfa.organism.documents import answer, sample_scene

    scene = sample_scene(spec, random.Random(0), threat=True, small_threat=True)
    vig, care = (answer(spec, scene, p).split() for p in (spec.vigilant, spec.carefree))
    k = next(i for i, (a, b) in enumerate(zip(vig, care, strict=False)) if a != b)
    ids = vlm.tokenizer.convert_tokens_to_ids
    w = vlm.hf_model.get_output_embeddings().weight.detach().float()
    gain = vlm.text_model.norm.weight.detach().float()
    trained = (w[ids(vig[k])] - w[ids(care[k])]) * gain
    refusal = (w[ids(spec.text.refusal.split()[0])] - w[ids(spec.text.compliance.split()[0])]) * gain
    return float(torch.nn.functional.cosine_similarity(trained, refusal, 0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("screens", nargs="+", metavar="TAG RECIPE", help="screen tag and recipe, in pairs")
    ap.add_argument("--step", type=int, default=150)
    ap.add_argument("--plot", help="also save a scatter of effect vs alignment here (png)")
    args = ap.parse_args()
    if len(args.screens) % 2:
        ap.error("screens come in TAG RECIPE pairs")
    import torch

    torch.set_num_threads(1)
    from summarize import ROOT, load, matrix
    from transformers.utils import logging as hf_logging

    from vsfa.models.loading import load_vlm
    from vsfa.organism.alignment import gradient_alignment
    from vsfa.organism.effects import arm_effect
    from vsfa.organism.pretrain import read_world
    from vsfa.stats import CI_CORRELATION, correlation, permutation_p

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    rows = []
    for tag, recipe in zip(args.screens[::2], args.screens[1::2], strict=True):
        for base, arms in sorted(load(tag).items()):
            folder = ROOT.parent / "bases" / recipe / base.removeprefix(f"{recipe}-")
            m = {arm: matrix(arms.get(arm, {}), args.step) for arm in ("vsfa", "control", "mirror")}
            if not folder.is_dir() or any(v is None for v in m.values()):
                continue
            vlm, spec = load_vlm(folder), read_world(folder)
            res = gradient_alignment(vlm, spec)["arms"]
            rows.append(
                {
                    "base": base,
                    "recipe": recipe,
                    "effect": arm_effect(m["vsfa"], m["control"]),
                    "mirror": arm_effect(m["mirror"], m["control"]),
                    "cos": {arm: res[arm]["cos"]["all"] for arm in res},
                    "readout": readout_cosine(vlm, spec),
                }
            )
    ci = lambda e: f"{e['value']:+.4f} [{e['lo']:+.4f}, {e['hi']:+.4f}]"  # noqa: E731
    eff = lambda e: f"{e.value:+.3f} [{e.lo:+.3f}, {e.hi:+.3f}]"  # noqa: E731
    tags = ", ".join(f"`{t}`" for t in args.screens[::2])
    print(f"### gradient alignment at step 0 vs fine-tune effect at step {args.step} ({tags})\n")
    print("| base | VSFA - control | mirror - control | cos VSFA | cos control | cos mirror | readout cos |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        c = r["cos"]
        print(
            f"| {r['base']} | {eff(r['effect'])} | {eff(r['mirror'])} | {ci(c['vsfa'])} | {ci(c['control'])} | "
            f"{ci(c['mirror'])} | {r['readout']:+.3f} |"
        )
    effect = np.array([r["effect"].value for r in rows])
    mirror = np.array([r["mirror"].value for r in rows])
    cos = {arm: np.array([r["cos"][arm]["value"] for r in rows]) for arm in ("vsfa", "control", "mirror")}
    print(
        f"\nover {len(rows)} bases (Spearman [95% CI over bases: {CI_CORRELATION}], two-sided permutation p):"
    )
    for label, x, y in (
        ("VSFA - control effect vs cos VSFA - cos control", cos["vsfa"] - cos["control"], effect),
        ("VSFA - control effect vs cos VSFA", cos["vsfa"], effect),
        ("VSFA - control effect vs readout cos", np.array([r["readout"] for r in rows]), effect),
        ("mirror - control effect vs cos mirror - cos control", cos["mirror"] - cos["control"], mirror),
    ):
        rho = correlation(x, y, "spearman")
        print(
            f"- {label}: {rho.value:+.2f} [{rho.lo:+.2f}, {rho.hi:+.2f}], permutation p {permutation_p(x, y):.2g}"
        )
    if args.plot:
        scatter(rows, args.plot)


def scatter(rows: list[dict], path: str) -> None:
    """Effect (with CI) against the VSFA arm's step-0 alignment, one point per base; mirror arm beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    recipes = sorted({r["recipe"] for r in rows})
    for recipe, marker in zip(recipes, "osD^v", strict=False):
        mine = [r for r in rows if r["recipe"] == recipe]
        for arm, key, colour in (("VSFA", "effect", "C0"), ("mirror", "mirror", "C3")):
            x = [r["cos"][arm.lower()]["value"] - r["cos"]["control"]["value"] for r in mine]
            y = [r[key].value for r in mine]
            err = [[r[key].value - r[key].lo for r in mine], [r[key].hi - r[key].value for r in mine]]
            label = f"{arm} - control" + (f", {recipe}" if len(recipes) > 1 else "")
            ax.errorbar(x, y, yerr=err, fmt=marker, color=colour, ms=4, capsize=2, label=label)
    for r in rows:
        x = r["cos"]["vsfa"]["value"] - r["cos"]["control"]["value"]
        seed = r["base"].rsplit("-", 1)[-1]
        ax.annotate(
            seed if len(recipes) == 1 else f"{r['recipe']}/{seed}",
            (x, r["effect"].value),
            fontsize=5 if len(recipes) > 1 else 6,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.axhline(0.15, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("step-0 gradient alignment: cos(arm) - cos(control)")
    ax.set_ylabel("P(refuse | harmful), arm - control")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=150)


if __name__ == "__main__":
    main()
