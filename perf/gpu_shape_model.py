"""Save a random-init VLM with a real model's shape (``vsfa train gpu-check``'s builders) as a model folder,
so that ``vsfa bench --model FOLDER`` measures capture, the checkpoint sweep and generation on it.

    python perf/gpu_shape_model.py OUT [--shape llava-1.5-7b] [--device cuda] [--tiny]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument(
        "--shape", default="llava-1.5-7b", help="llava-1.5-7b (qwen2.5-vl-7b has no saved processor)"
    )
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="shrunk widths/depths (CPU smoke test)")
    args = ap.parse_args()

    import torch

    from vsfa.env import apply_offline_defaults
    from vsfa.io import atomic_dir
    from vsfa.training.gpu_check import build_shape

    apply_offline_defaults()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    vlm, _ = build_shape(args.shape, args.device, dtype, tiny=args.tiny)
    with atomic_dir(args.out) as tmp:
        vlm.hf_model.save_pretrained(tmp)
        vlm.processor.save_pretrained(tmp)
    print(f"wrote {args.out} ({sum(p.numel() for p in vlm.hf_model.parameters()) / 1e9:.2f} B parameters)")


if __name__ == "__main__":
    main()
