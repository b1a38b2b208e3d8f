"""A stand-in for the Qwen2/2.5/3-VL processors where torchvision is missing.

The real ``Qwen*VLProcessor`` cannot be constructed without torchvision (its video processor needs it), and
torchvision cannot be installed beside the CPU torch. This class does what the real processor does for
images: runs the (PIL) image processor, expands each ``<|image_pad|>`` to ``prod(grid_thw) / merge**2``
tokens, tokenizes, and returns ``mm_token_type_ids`` (1 on image tokens), which the Qwen forward needs for
M-RoPE. Where torchvision exists, :func:`vsfa.models.load_vlm` uses the real processor instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import BatchFeature

STAND_IN_MARKER = "vsfa_processor.json"


class QwenStandInProcessor:
    """Image-only Qwen-VL processor: same outputs as ``Qwen2VLProcessor`` for text + images."""

    image_token = "<|image_pad|>"

    def __init__(self, image_processor, tokenizer, chat_template: str | None = None):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.chat_template = chat_template or tokenizer.chat_template
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)

    def apply_chat_template(
        self, conversation, add_generation_prompt: bool = False, tokenize: bool = False, **kw
    ):
        """Render messages with the chat template (text only; call the processor to tokenize)."""
        return self.tokenizer.apply_chat_template(
            conversation,
            chat_template=self.chat_template,
            add_generation_prompt=add_generation_prompt,
            tokenize=tokenize,
            **kw,
        )

    def __call__(self, text=None, images=None, padding=True, return_tensors="pt", **kwargs) -> BatchFeature:
        texts = [text] if isinstance(text, str) else list(text)
        data: dict = {}
        if images:
            flat = [im for group in images for im in (group if isinstance(group, list | tuple) else [group])]
            image_inputs = self.image_processor(images=flat, return_tensors="pt")
            grid = image_inputs["image_grid_thw"]
            merge = self.image_processor.merge_size**2
            counts = iter((grid.prod(-1) // merge).tolist())
            expanded = []
            for t in texts:
                parts = t.split(self.image_token)
                out = parts[0]
                for part in parts[1:]:
                    out += self.image_token * next(counts) + part
                expanded.append(out)
            texts = expanded
            data.update(image_inputs)
        enc = self.tokenizer(texts, padding=padding, return_tensors=return_tensors, **kwargs)
        data.update(enc)
        data["mm_token_type_ids"] = (enc["input_ids"] == self.image_token_id).to(torch.long)
        return BatchFeature(data, tensor_type=return_tensors)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    def save_pretrained(self, folder: str | Path) -> None:
        """Save tokenizer + image processor (+ chat template) so ``from_pretrained`` rebuilds the same object."""
        folder = Path(folder)
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)
        (folder / "chat_template.jinja").write_text(self.chat_template)
        (folder / STAND_IN_MARKER).write_text(json.dumps({"processor": type(self).__name__}) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> QwenStandInProcessor:
        """Rebuild from a model folder (a tiny one, or a real Qwen-VL checkpoint)."""
        from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

        folder = Path(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        tokenizer.padding_side = "left"
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(folder)
        template_file = folder / "chat_template.jinja"
        template = template_file.read_text() if template_file.is_file() else None
        if template is None and (folder / "chat_template.json").is_file():
            template = json.loads((folder / "chat_template.json").read_text()).get("chat_template")
        return cls(image_processor, tokenizer, chat_template=template)
