"""VSFA data: procedural images, image manifests, neutral VQA builders, answer sources, label-free lint."""
