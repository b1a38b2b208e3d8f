"""Repro: HookedVLM.generate through TransformerBridge (KV cache on) differs from HF generate on LLaVA models.

    .venv/bin/python experiments/demo/bridge_generate_repro.py [MODEL_DIR]

Without a folder it uses the foundation's tiny llava. A single forward matches HF (``vsfa models check``: 0.0
on tiny llava, <1e-4 on smol-llava) and ``use_cache=False`` generation matches too; only cached decoding diverges.
On smol-llava, "What is the capital of France?" gives "The capital of France is Paris." with HF / torch hooks
and "The-----------" through the bridge.
"""

from __future__ import annotations

import sys
import tempfile

import torch

from probes.fidelity import check_batch
from probes.hooked import HookedVLM
from vsfa.env import apply_offline_defaults
from vsfa.models.loading import load_vlm
from vsfa.models.tiny import save_tiny


def main() -> None:
    apply_offline_defaults()
    folder = sys.argv[1] if len(sys.argv) > 1 else save_tiny("llava", tempfile.mkdtemp() + "/tiny-llava")
    results = {}
    for backend, kw in (("torch", {}), ("bridge", {}), ("bridge", {"use_cache": False})):
        vlm = load_vlm(folder)
        out = HookedVLM(vlm, backend=backend).generate(check_batch(vlm), max_new_tokens=8, **kw)
        results[f"{backend}{'' if kw else ' (cache)'}"] = out
        print(f"{backend:6s} {kw or ''}: {out[0].tolist()}")
    ref = results["torch (cache)"]
    print("bridge cached == torch:", torch.equal(ref, results["bridge (cache)"]))
    print("bridge no cache == torch:", torch.equal(ref, results["bridge"]))


if __name__ == "__main__":
    main()
