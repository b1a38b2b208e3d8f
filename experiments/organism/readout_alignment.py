"""How close is each layer's persona direction to the refusal readout itself?

Cosine between the difference of means (vigilant - carefree context, last token) at each layer and the
residual-space direction of the logit difference "I" - "Sure" (the first tokens of the refusal and the
compliance: unembedding difference times the final norm's weight), beside the
95th percentile |cosine| of random directions. A direction close to that difference moves the refusal score
by construction, so its correlation with P(refuse) is partly definitional.

usage: python experiments/organism/readout_alignment.py STUDY   (a `vsfa demo --study organism` folder)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from probes.directions import load_directions
from vsfa.models.loading import load_vlm
from vsfa.organism.pretrain import read_world


def main(study: Path) -> None:
    dset = load_directions(study / "directions" / "persona.json")
    model = Path(dset.meta["model"]["source"])
    vlm = load_vlm(model)
    text = read_world(model).text
    tok = vlm.tokenizer
    refuse, comply = text.refusal.split()[0], text.compliance.split()[0]
    w = vlm.hf_model.get_output_embeddings().weight.detach().float()
    diff = w[tok.convert_tokens_to_ids(refuse)] - w[tok.convert_tokens_to_ids(comply)]
    norm = vlm.hf_model.get_submodule(vlm.family.final_norm_path)
    diff = diff * norm.weight.detach().float()  # the residual-space direction of the logit difference
    g = torch.randn(2000, diff.shape[0], generator=torch.Generator().manual_seed(0))
    rand95 = float(((g @ diff) / (g.norm(dim=1) * diff.norm())).abs().quantile(0.95))
    print(f"readout W_U[{refuse!r}] - W_U[{comply!r}]; random |cos| 95th percentile {rand95:.3f}")
    for d in dset.by_layer():
        cos = float(d.vector @ diff / (d.vector.norm() * diff.norm()))
        mark = " (selected)" if d.hook == (dset.selected or {}).get("hook") else ""
        print(f"{d.hook}: cos {cos:+.3f}{mark}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
