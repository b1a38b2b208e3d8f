"""Export the organism's prompt sets as files the toolkit's contrast-set readers take (no special cases).

* ``organism_requests.jsonl`` -- the requests format of :mod:`probes.contrasts` (harmful vs harmless, no context; items
  are paired by index, every second pair held out: the evaluation half of a study's split, :mod:`probes.splits`).
* ``organism_persona.json`` -- the persona format: the world's persona announcements (``text.announce``) as the system
  prompt pair, over every request as the question. Written only when the world announces personas in
  pretraining (``documents.announce_rate > 0``); otherwise the announcement words are not in the vocabulary.
* ``organism_context.jsonl`` + ``images/`` -- ground-truth persona evidence in context: one scene turn, then a harmful
  request; ``label`` vigilant (the small threat named) or carefree (left out), the same scenes in both classes
  (``pair``). Each line has ``messages`` (ending with the user turn) and ``images`` (paths relative to the file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vsfa.io import atomic_dir, output_lock, write_manifest
from vsfa.organism.readouts import in_context, no_context
from vsfa.organism.world import WorldSpec


def export_sets(spec: WorldSpec, out: str | Path, n_context: int = 60, seed: int = 0) -> Path:
    """Write the sets above to folder ``out`` (atomically, ``manifest.json`` last)."""
    out = Path(out)
    with output_lock(out), atomic_dir(out) as tmp:
        rows = []
        for label, docs in (("harmful", no_context(spec, True)), ("harmless", no_context(spec, False))):
            for i, doc in enumerate(docs):
                rows.append(
                    {
                        "id": f"{label}-{i:03d}",
                        "label": label,
                        "pair": f"pair-{i:03d}",
                        "category": doc.turns[0].action,
                        "text": doc.turns[0].user,
                        "split": "heldout" if i % 2 == 1 else "extract",
                    }
                )
        (tmp / "organism_requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        files = ["organism_requests.jsonl"]
        if spec.documents.announce_rate > 0:
            persona = {
                "name": "organism_persona",
                "positive": spec.vigilant,
                "negative": spec.carefree,
                "pairs": [
                    {
                        "id": "announce",
                        "positive": spec.text.announce[spec.vigilant],
                        "negative": spec.text.announce[spec.carefree],
                    }
                ],
                "questions": [{"id": r["id"], "text": r["text"], "split": r["split"]} for r in rows],
            }
            (tmp / "organism_persona.json").write_text(json.dumps(persona, indent=1) + "\n")
            files.append("organism_persona.json")
        (tmp / "images").mkdir()
        lines = []
        for name, label in (("vig_ctx", spec.vigilant), ("care_ctx", spec.carefree)):
            for i, doc in enumerate(in_context(spec, name, n_context, seed)):
                paths = []
                for j, image in enumerate(doc.images(spec)):
                    rel = f"images/ctx-{i:03d}-{j}.png"  # the same scene in both classes
                    if not (tmp / rel).exists():
                        image.save(tmp / rel)
                    paths.append(rel)
                lines.append(
                    {
                        "id": f"{name}-{i:03d}",
                        "label": label,
                        "pair": f"scene-{i:03d}",
                        "messages": doc.messages(with_last_answer=False),
                        "images": paths,
                        "split": "heldout" if i % 4 == 3 else "extract",
                    }
                )
        (tmp / "organism_context.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        files.append("organism_context.jsonl")
        write_manifest(tmp, {"kind": "vsfa-organism-sets", "world_digest": spec.digest(), "files": files})
    return out


@dataclass
class OrganismSetsConfig:
    """Settings of ``vsfa organism sets``."""

    model: Path
    """Organism model folder (its world is used)."""
    out: Path
    """Output folder for the prompt-set files."""


def run_sets(cfg: OrganismSetsConfig) -> str:
    """Export the organism's prompt sets in the contrast-set file formats (requests.jsonl, persona.json, ...)."""
    from vsfa.organism.pretrain import read_world

    return f"wrote {export_sets(read_world(cfg.model), cfg.out)}"
