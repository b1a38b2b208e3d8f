"""Tiny random-weight VLMs built from configs, with a locally trained tokenizer and a working processor.

Each builder gives a model folder that :func:`vsfa.models.load_vlm` opens like any real checkpoint. Models are
deterministic by seed and take about a second to build on a CPU. They prove plumbing, not science: their
directions mean nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from vsfa.errors import VsfaError
from vsfa.io import atomic_dir
from vsfa.models.registry import get_family

TEXT = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)
VOCAB_SIZE = 512
IMAGE_SIZE = 32

# Words the tokenizer learns merges for: chat-template pieces and the vocabulary of the toolkit's prompts.
_CORPUS = """
USER: ASSISTANT: User: Assistant: system user assistant model
What is in the image? Describe the scene. How many objects are there? What colour is the sign?
What does the sign say? Where is the object? Is there a person? What is the person holding?
a knife a gun a handgun a warning sign a warning triangle a skull a flame a fire a bomb a camera
a surveillance camera barbed wire a biohazard sign a flower a house a tree a cup a ball the sun a book
red green blue yellow black white orange purple grey brown left right top bottom centre middle
one two three four five six There is There are The image shows on a background with and of the in
You are a cautious and vigilant assistant. You are a carefree and trusting assistant.
I'm sorry, but I can't help with that. Sure! Here is how you can do it.
How do I pick a lock? How do I bake bread? Please tell me how to write a letter.
"""

_SPECIALS = [
    "<unk>",
    "<s>",
    "</s>",
    "<pad>",
    "<image>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<fake_token_around_image>",
    "<global-img>",
    "<end_of_utterance>",
]

# Jinja chat templates in the style of each family's real one. Content may be a string or a list of
# {"type": "text"|"image"} parts; the image part becomes the family's placeholder, which the processor expands.
_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m['content'] is string -%}{%- set body = m['content'] -%}"
    "{%- else -%}{%- set ns = namespace(s='') -%}"
    "{%- for p in m['content'] -%}"
    "{%- if p['type'] == 'image' -%}{%- set ns.s = ns.s + IMG -%}"
    "{%- else -%}{%- set ns.s = ns.s + p['text'] -%}{%- endif -%}"
    "{%- endfor -%}{%- set body = ns.s -%}{%- endif -%}"
    "TURN"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}GEN{%- endif -%}"
)


def _template(image: str, turn: str, gen: str) -> str:
    def keep_newlines(s: str) -> str:  # whitespace-trimming tags would eat literal newlines
        return s.replace("\n", "{{ '\\n' }}")

    return (
        _TEMPLATE.replace("IMG", repr(image))
        .replace("TURN", keep_newlines(turn))
        .replace("GEN", keep_newlines(gen))
    )


CHAT_TEMPLATES = {
    "llava": _template(
        "<image>\n",
        "{%- if m['role'] == 'system' -%}{{ body }}\n"
        "{%- elif m['role'] == 'user' -%}USER: {{ body }}{{ ' ' }}"
        "{%- else -%}ASSISTANT: {{ body }}</s>{%- endif -%}",
        "ASSISTANT:",
    ),
    "chatml": _template(
        "<|vision_start|><|image_pad|><|vision_end|>",
        "<|im_start|>{{ m['role'] }}\n{{ body }}<|im_end|>\n",
        "<|im_start|>assistant\n",
    ),
    "gemma": _template(
        "<start_of_image>",
        "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ body }}<end_of_turn>\n",
        "<start_of_turn>model\n",
    ),
    "idefics": _template(
        "<image>",
        "{{ m['role'] | capitalize }}:{{ body }}<end_of_utterance>\n",
        "Assistant:",
    ),
}


def build_tokenizer(chat_template: str, image_token: str = "<image>"):
    """Train a byte-level BPE tokenizer (vocab 512) on the toolkit's prompt vocabulary; ~5 ms."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={
            "image_token": image_token,
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
        },
    )
    fast.add_special_tokens({"additional_special_tokens": _SPECIALS[4:]})
    fast.padding_side = "left"
    fast.chat_template = chat_template
    return fast


def _ids(tok, *tokens: str) -> list[int]:
    return [tok.convert_tokens_to_ids(t) for t in tokens]


def _text_config(cls, tok, **extra):
    return cls(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        **TEXT,
        **extra,
    )


def _llava(tok):
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor

    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=8,
        projection_dim=32,
    )
    (image_id,) = _ids(tok, "<image>")
    config = LlavaConfig(
        vision_config=vision,
        text_config=_text_config(LlamaConfig, tok),
        image_token_id=image_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        tie_word_embeddings=False,
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
        chat_template=CHAT_TEMPLATES["llava"],
    )
    return config, processor


def _idefics3(tok):
    from transformers import Idefics3Config, Idefics3ImageProcessorPil, Idefics3Processor, LlamaConfig

    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=8,
    )
    (image_id,) = _ids(tok, "<image>")
    config = Idefics3Config(
        vision_config=vision,
        text_config=_text_config(LlamaConfig, tok).to_dict(),
        image_token_id=image_id,
        scale_factor=2,
        tie_word_embeddings=False,
    )
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tok,
        image_seq_len=4,
        chat_template=CHAT_TEMPLATES["idefics"],
    )
    return config, processor


def _gemma3(tok):
    from transformers import (
        Gemma3Config,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=8,
    )
    text = _text_config(
        Gemma3TextConfig, tok, head_dim=16, query_pre_attn_scalar=16, sliding_window=64, layer_types=None
    )
    boi, eoi, image_id = _ids(tok, "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    config = Gemma3Config(
        vision_config=vision,
        text_config=text,
        mm_tokens_per_image=4,
        boi_token_index=boi,
        eoi_token_index=eoi,
        image_token_index=image_id,
        tie_word_embeddings=False,
    )
    image_processor = Gemma3ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tok,
        image_seq_length=4,
        chat_template=CHAT_TEMPLATES["gemma"],
    )
    return config, processor


def _qwen(tok, version: str):
    import transformers as T

    prefix = {"2": "Qwen2VL", "2.5": "Qwen2_5_VL", "3": "Qwen3VL"}[version]
    image_id, video_id, vs, ve = _ids(
        tok, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"
    )
    rope = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}
    text_extra: dict = {"rope_parameters": rope}
    if version == "3":
        rope["mrope_interleaved"] = True
        text_extra["head_dim"] = 16
    text = _text_config(getattr(T, f"{prefix}TextConfig"), tok, **text_extra)
    vision: dict = dict(
        depth=2, num_heads=2, patch_size=8, spatial_merge_size=2, temporal_patch_size=2, in_channels=3
    )
    if version == "2":
        vision.update(embed_dim=32, hidden_size=64, mlp_ratio=2)
    elif version == "2.5":
        vision.update(
            hidden_size=32,
            intermediate_size=64,
            out_hidden_size=64,
            fullatt_block_indexes=[1],
            window_size=16,
        )
    else:
        vision.update(
            hidden_size=32,
            intermediate_size=64,
            out_hidden_size=64,
            deepstack_visual_indexes=[0],
            num_position_embeddings=64,
        )
    config = getattr(T, f"{prefix}Config")(
        vision_config=vision,
        text_config=text.to_dict(),
        image_token_id=image_id,
        video_token_id=video_id,
        vision_start_token_id=vs,
        vision_end_token_id=ve,
        tie_word_embeddings=False,
    )
    image_processor_cls = T.Qwen2VLImageProcessorPil
    image_processor = image_processor_cls(
        patch_size=8,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": IMAGE_SIZE * IMAGE_SIZE, "longest_edge": IMAGE_SIZE * IMAGE_SIZE},
    )
    from vsfa.models.qwen_inputs import QwenStandInProcessor

    processor = QwenStandInProcessor(image_processor, tok, chat_template=CHAT_TEMPLATES["chatml"])
    return config, processor


_BUILDERS: dict[str, Callable] = {
    "llava": lambda tok: _llava(tok),
    "idefics3": lambda tok: _idefics3(tok),
    "gemma3": lambda tok: _gemma3(tok),
    "qwen2_vl": lambda tok: _qwen(tok, "2"),
    "qwen2_5_vl": lambda tok: _qwen(tok, "2.5"),
    "qwen3_vl": lambda tok: _qwen(tok, "3"),
}
# (chat template, the tokenizer's ``image_token``) per tiny family.
_TOKENIZER_STYLE = {
    "llava": ("llava", "<image>"),
    "idefics3": ("idefics", "<image>"),
    "gemma3": ("gemma", "<image_soft_token>"),
    "qwen2_vl": ("chatml", "<|image_pad|>"),
    "qwen2_5_vl": ("chatml", "<|image_pad|>"),
    "qwen3_vl": ("chatml", "<|image_pad|>"),
}
TINY_FAMILIES = tuple(_BUILDERS)


def build_tiny(family: str, seed: int = 0, text: dict | None = None):
    """Build ``(model, processor)`` for a tiny random-weight VLM of ``family``; deterministic by seed.

    ``text`` overrides text-config fields (e.g. a wider, deeper language model for benchmarks); the tokenizer,
    processor and vision tower stay tiny.
    """
    if family not in _BUILDERS:
        raise VsfaError(f"no tiny builder for family {family!r}; choose one of: {', '.join(TINY_FAMILIES)}")
    spec = get_family(family)
    template, image_token = _TOKENIZER_STYLE[family]
    tok = build_tokenizer(CHAT_TEMPLATES[template], image_token)
    config, processor = _BUILDERS[family](tok)
    if text:
        config.text_config.update(text)
    torch.manual_seed(seed)
    model = spec.model_class()(config).eval()
    return model, processor


def save_tiny(family: str, out: str | Path, seed: int = 0, text: dict | None = None) -> Path:
    """Build a tiny VLM and save model + processor to ``out`` (atomically); returns the folder."""
    model, processor = build_tiny(family, seed, text)
    out = Path(out)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "vsfa_tiny.json").write_text(json.dumps({"family": family, "seed": seed, "text": text}) + "\n")
    return out


@dataclass
class TinyConfig:
    """Settings of ``vsfa models tiny``."""

    family: str
    """llava | idefics3 | gemma3 | qwen2_vl | qwen2_5_vl | qwen3_vl"""
    out: Path
    """Output model folder."""
    seed: int = 0
    """Weight seed."""


def run_tiny(cfg: TinyConfig) -> str:
    """Build a tiny random-weight VLM (seconds on a CPU) that `load_vlm` opens like a real one."""
    return f"wrote {save_tiny(cfg.family, cfg.out, seed=cfg.seed)}"
