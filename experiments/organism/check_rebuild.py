"""Check that the current code rebuilds a base: rerun its first N pretraining steps (same world file, seed,
precision, 1 thread) and compare the logged losses with the base's pretrain_log.jsonl.

usage: python experiments/organism/check_rebuild.py BASE_FOLDER [--steps 100]
(The warm-up does not depend on the total step count, so the first steps of a full rebuild are these steps.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from pathlib import Path

import torch


class Stop(Exception):
    pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from vsfa.organism.pretrain import pretrain, read_world

    base = Path(args.base)
    manifest = json.loads((base / "manifest.json").read_text())
    logged = {
        r["step"]: r["loss"] for r in map(json.loads, (base / "pretrain_log.jsonl").read_text().splitlines())
    }
    got = {}

    def progress(rec):
        got[rec["step"]] = rec["loss"]
        if rec["step"] >= args.steps:
            raise Stop

    with tempfile.TemporaryDirectory() as tmp, contextlib.suppress(Stop):
        pretrain(
            read_world(base),
            manifest["seed"],
            Path(tmp) / "m",
            precision=manifest["precision"],
            progress=progress,
            readouts=False,
        )
    same = all(logged.get(s) == v for s, v in got.items())
    print(
        json.dumps(
            {
                "base": str(base),
                "steps": sorted(got),
                "rebuilt": got,
                "logged": {s: logged.get(s) for s in got},
                "identical": same,
            }
        )
    )


if __name__ == "__main__":
    main()
