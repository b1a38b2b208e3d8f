"""LoRA fine-tuning of VLMs (HF Trainer), checkpoint schedule and resume; ``vsfa.train`` is the public face."""
