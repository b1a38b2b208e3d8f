"""The organism as a stock LLaVA: word-level tokenizer, processor, model config, and a fast batch encoder.

The tokenizer is a ``tokenizers`` WordLevel model over the world's vocabulary (split on whitespace), wrapped in a
``PreTrainedTokenizerFast`` with the LLaVA chat template of :mod:`vsfa.models.tiny`; the processor is a stock
``LlavaProcessor`` with a CLIP image processor. The saved folder opens with :func:`vsfa.models.load_vlm` like
any LLaVA checkpoint.

:class:`Codec` turns :class:`~vsfa.organism.documents.Document` s into model inputs without going through the
processor (pretraining speed); ``tests/vsfa/organism/test_organism.py`` checks that it gives exactly the ids, assistant-token
labels and pixel values of ``LoadedVLM.encode_chat``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vsfa.organism.documents import Document
from vsfa.organism.world import WorldSpec

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
USER, ASSISTANT = "USER:", "ASSISTANT:"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def vocabulary(spec: WorldSpec) -> list[str]:
    """Every word the world can produce, in a stable order (specials first)."""
    t = spec.text
    texts = [USER, ASSISTANT, "a an and", t.small_word, t.question, t.refusal]
    texts += [t.text_question.replace("{scene}", " "), t.compliance.replace("{action}", " ")]
    texts += [tpl.replace("{action}", " ") for tpl in t.request_templates]
    texts += [o.name for o in spec.objects] + spec.harmful + spec.harmless
    texts.append(t.threat_prefix)
    if spec.documents.announce_rate > 0:  # only then are announcements words of the world
        texts += list(t.announce.values())
    words: list[str] = []
    for text in texts:
        for w in text.split():
            if w not in words and w not in SPECIALS:
                words.append(w)
    return SPECIALS + words


def chat_template() -> str:
    from vsfa.models.tiny import CHAT_TEMPLATES

    return CHAT_TEMPLATES["llava"]


def build_tokenizer(spec: WorldSpec):
    """A word-level fast tokenizer (left padding, ``<s>`` prepended) with the LLaVA chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary(spec))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    fast.padding_side = "left"
    fast.chat_template = chat_template()
    return fast


def n_image_tokens(spec: WorldSpec) -> int:
    return (spec.image.size // spec.model.patch_size) ** 2


def build_processor(spec: WorldSpec, tokenizer=None):
    """A stock ``LlavaProcessor`` (CLIP image processor at the world's image size)."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    tokenizer = tokenizer or build_tokenizer(spec)
    size = spec.image.size
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.model.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
        chat_template=chat_template(),
    )


def build_config(spec: WorldSpec, tokenizer):
    """``LlavaConfig``: CLIP tower -> GELU projector -> Llama decoder, sized by ``spec.model``."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    m = spec.model
    vision = CLIPVisionConfig(
        hidden_size=m.vision_hidden,
        intermediate_size=m.vision_intermediate,
        num_hidden_layers=m.vision_layers,
        num_attention_heads=m.vision_heads,
        image_size=spec.image.size,
        patch_size=m.patch_size,
        projection_dim=m.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=m.text_hidden,
        intermediate_size=m.text_intermediate,
        num_hidden_layers=m.text_layers,
        num_attention_heads=m.text_heads,
        num_key_value_heads=m.text_heads,
        max_position_embeddings=m.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=m.tie_embeddings,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
        tie_word_embeddings=m.tie_embeddings,
    )


def new_model(spec: WorldSpec, seed: int, tokenizer=None):
    """A freshly initialised organism (deterministic in ``seed``) and its processor."""
    from transformers import LlavaForConditionalGeneration

    processor = build_processor(spec, tokenizer)
    config = build_config(spec, processor.tokenizer)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    return model, processor


@dataclass
class Batch:
    """Model inputs for teacher forcing; ``labels`` are -100 except on the marked assistant tokens."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor | None

    def inputs(self) -> dict[str, torch.Tensor]:
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.pixel_values is not None:
            out["pixel_values"] = self.pixel_values
        return out


class Codec:
    """Fast document -> ids / labels / pixels, identical to the processor path (see module docstring)."""

    def __init__(self, spec: WorldSpec, tokenizer):
        self.spec = spec
        self.vocab = tokenizer.get_vocab()
        self.unk = self.vocab["<unk>"]
        self.bos, self.eos, self.pad = (self.vocab[t] for t in ("<s>", "</s>", "<pad>"))
        self.image = self.vocab["<image>"]
        self.n_image = n_image_tokens(spec)
        self.mean = np.asarray(CLIP_MEAN, dtype=np.float32)
        self.std = np.asarray(CLIP_STD, dtype=np.float32)

    def words(self, text: str) -> list[int]:
        return [self.vocab.get(w, self.unk) for w in text.split()]

    def ids(self, doc: Document, train_on: str = "all") -> tuple[list[int], list[bool]]:
        """Token ids of the whole conversation and a mask of the trained assistant tokens (``all``|``last``)."""
        ids, mask = [self.bos], [False]
        if doc.system:
            ids += self.words(doc.system)
            mask += [False] * (len(ids) - 1)
        user, assistant = self.vocab[USER], self.vocab[ASSISTANT]
        last = len(doc.turns) - 1
        for i, t in enumerate(doc.turns):
            head = [user] + ([self.image] * self.n_image if t.kind == "vqa" else []) + self.words(t.user)
            head.append(assistant)
            body = self.words(t.assistant) + [self.eos]
            ids += head + body
            marked = train_on == "all" or i == last
            mask += [False] * len(head) + [marked] * len(body)
        return ids, mask

    def pixels(self, images) -> np.ndarray:
        """CLIP-normalised ``[n, 3, H, W]`` float32 array."""
        arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images]) / 255.0
        return ((arr - self.mean) / self.std).transpose(0, 3, 1, 2).astype(np.float32)

    def batch(self, docs: list[Document], train_on: str = "all") -> Batch:
        """Right-padded teacher-forcing batch of whole documents."""
        seqs = [self.ids(d, train_on) for d in docs]
        width = max(len(s) for s, _ in seqs)
        ids = torch.full((len(docs), width), self.pad, dtype=torch.long)
        att = torch.zeros((len(docs), width), dtype=torch.long)
        labels = torch.full((len(docs), width), -100, dtype=torch.long)
        for row, (s, m) in enumerate(seqs):
            n = len(s)
            ids[row, :n] = torch.tensor(s)
            att[row, :n] = 1
            labels[row, :n] = torch.where(torch.tensor(m), torch.tensor(s), torch.tensor(-100))
        images = [im for d in docs for im in d.images(self.spec)]
        pix = torch.from_numpy(self.pixels(images)) if images else None
        return Batch(ids, att, labels, pix)


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions."""
    shift = logits[:, :-1].reshape(-1, logits.shape[-1])
    target = labels[:, 1:].reshape(-1)
    return torch.nn.functional.cross_entropy(shift.float(), target, ignore_index=-100)
