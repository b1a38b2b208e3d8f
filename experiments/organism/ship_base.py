"""Copy one pretrained organism base into the package (vsfa/resources/organism/), with its recipe in the manifest.

usage: python experiments/organism/ship_base.py BASE_FOLDER --recipe NAME [--finetune key=json ...] --note "..."
The folder keeps every file the build wrote (weights, processor, organism_world.json, pretrain_log.jsonl).
``--finetune`` sets keys of the world file's ``finetune`` block (the fine-tune recipe that goes with the base;
pretraining never reads that block, so the build command still rebuilds the same weights), and the manifest's
world digest follows. The manifest gains a "shipped" block: recipe name, its world overrides, the fine-tune
settings, the build command that rebuilds the base, and the note. The manifest is written last (atomic swap).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from vsfa.config import parse_assignments
from vsfa.io import atomic_dir, dumps, write_manifest
from vsfa.organism.pretrain import WORLD_FILE
from vsfa.organism.shipped import SHIPPED_DIR
from vsfa.organism.world import load_world

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--note", default="")
    ap.add_argument(
        "--finetune", action="append", default=[], help="finetune.KEY=json-value for the world file"
    )
    args = ap.parse_args()
    base = Path(args.base)
    manifest = json.loads((base / "manifest.json").read_text())
    recipe = json.loads((base.parent / "recipe.json").read_text())
    dest = ROOT / "vsfa" / "resources" / SHIPPED_DIR
    with atomic_dir(dest) as tmp:
        for f in sorted(base.iterdir()):
            if f.name != "manifest.json":
                shutil.copy2(f, tmp / f.name)
        finetune = {}
        for key, value in parse_assignments(args.finetune, "--finetune").items():
            finetune[key if key.startswith("finetune.") else f"finetune.{key}"] = value
        if finetune:
            spec = load_world(tmp / WORLD_FILE, overrides=finetune)
            (tmp / WORLD_FILE).write_text(dumps(spec.to_dict()) + "\n")
            manifest["world_digest"] = spec.digest()
        manifest["shipped"] = {
            "recipe": args.recipe,
            "overrides": recipe["overrides"],
            "finetune": finetune,
            "source": str(base.relative_to(ROOT)) if base.is_absolute() else str(base),
            "build": (
                f"vsfa organism build --world vsfa/resources/{SHIPPED_DIR}/organism_world.json "
                f"--seed {manifest['seed']} --precision {manifest['precision']} "
                f"--threads {manifest['torch_threads']} --out OUT"
            ),
            "note": args.note,
        }
        write_manifest(tmp, manifest)
    print(f"shipped {base} -> {dest}")


if __name__ == "__main__":
    main()
