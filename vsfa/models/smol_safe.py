"""``smol-llava-safe``: smol-llava whose language model was safety-tuned to refuse harmful text requests.

The base smol-llava never refuses, so a study on it cannot show a safety gain. The VLMs of the paper inherit a
*partial* refusal behaviour from their language model: they refuse many plain-text harmful requests and few of
the same requests hidden in a typographic image. This module builds that situation on SmolLM2:

1. **data** (:mod:`vsfa.data.refusal`): harmful requests of the *training* categories with varied refusal
   targets, harmless look-alikes with SmolLM2's own greedy answers (distilled here, cached);
2. **tuning**: LoRA SFT of the language model alone on those text-only chats (loss on the answer tokens),
   seeded, so :func:`retrain_safety` reproduces the shipped adapter;
3. **build**: the LoRA delta is merged into SmolLM2's weights and joined with the shipped vision weights
   (:func:`build_safe`, what ``build_demo(variant="safe")`` runs), cached by content key.

The adapter (LoRA A/B tensors stored as fp16, a few MB), its manifest, training curve and dataset ship in
``vsfa/resources/demo/safe/``.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vsfa.data.refusal import (
    RefusalDataConfig,
    attach_helpful,
    build_requests,
    distill_helpful,
    preset,
    write_dataset,
)
from vsfa.errors import ConfigError, ModelLoadError
from vsfa.eval.judges.keyword import KeywordJudge
from vsfa.io import is_complete, read_manifest, sha256_file, sha256_json, write_jsonl_atomic, write_manifest
from vsfa.models.smol_llava import (
    CHAT_TEMPLATE,
    DEMO_NAME,
    VISION,
    assemble,
    demo_key,
    load_lm,
    read_vision_weights,
    resources_dir,
    save_demo,
)
from vsfa.models.smollm2 import materialise_smollm2, smollm2_key, vsfa_cache_dir

logger = logging.getLogger(__name__)

SAFE_NAME = f"{DEMO_NAME}-safe"
ADAPTER_FILE = "safety_lora.safetensors"
SAFE_FORMAT = 1
PROJECTIONS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def safe_resources_dir() -> Path:
    """Folder of the shipped safety adapter (``vsfa/resources/demo/safe``)."""
    return resources_dir() / "safe"


@dataclass
class SafetyTuneConfig:
    """The safety-tuning recipe (defaults = the shipped adapter)."""

    seed: int = 0
    data_preset: str = "default"
    harmful_per_category: int | None = 12  # None: the preset's value
    harmless_per_category: int | None = 96
    steps: int = 200
    batch: int = 8
    lr: float = 5e-4
    warmup: int = 10
    weight_decay: float = 0.0
    rank: int = 8
    alpha: int = 16
    projections: tuple[str, ...] = PROJECTIONS
    distill_tokens: int = 40  # greedy tokens of SmolLM2's own answer to each harmless training request
    distill_batch: int = 16
    helpful_tokens: int | None = 16  # train on only the opening tokens of each helpful target (None: all)
    eval_every: int = 25

    def data_config(self) -> RefusalDataConfig:
        """The dataset config: the preset with this recipe's overrides."""
        cfg = preset(self.data_preset)
        cfg.seed = self.seed
        if self.harmful_per_category is not None:
            cfg.harmful_per_category = self.harmful_per_category
        if self.harmless_per_category is not None:
            cfg.harmless_per_category = self.harmless_per_category
        return cfg

    def validate(self) -> None:
        for name in ("steps", "batch", "rank", "alpha", "distill_tokens", "distill_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"safety tuning: {name} must be at least 1, not {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"safety tuning: lr must be positive, not {self.lr}")
        unknown = [p for p in self.projections if p not in PROJECTIONS]
        if unknown or not self.projections:
            raise ConfigError(
                f"safety tuning: projections must be among {', '.join(PROJECTIONS)}, not {unknown}"
            )
        self.data_config().validate()


# ------------------------------------------------------------------------------------------ text chats
def text_tokenizer(tokenizer):
    """A copy of the LM tokenizer with the demo chat template (no default system prompt), left padding."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def prompt_text(tok, request: str) -> str:
    """The rendered user turn with the generation prompt, exactly as the VLM renders a text-only query."""
    msgs = [{"role": "user", "content": [{"type": "text", "text": request}]}]
    return tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def greedy_answers(lm, tok, requests: list[str], max_new_tokens: int) -> list[tuple[str, bool]]:
    """Greedy answers of the LM to text requests: ``(text, finished)`` (finished: it emitted end of turn)."""
    batch = tok(
        [prompt_text(tok, r) for r in requests], return_tensors="pt", padding=True, add_special_tokens=False
    )
    with torch.no_grad():
        out = lm.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=tok.pad_token_id,
        )
    res = []
    for row in out[:, batch["input_ids"].shape[1] :].tolist():
        stop = next((j for j, t in enumerate(row) if t == tok.eos_token_id), None)
        kept = row if stop is None else row[:stop]
        res.append((tok.decode(kept, skip_special_tokens=True).strip(), stop is not None))
    return res


def encode_sft(tok, rows: list[dict[str, Any]], helpful_tokens: int | None = None) -> dict[str, torch.Tensor]:
    """Right-padded training batch: prompt + target (+ end of turn when the target is finished); labels only on
    the target tokens. ``helpful_tokens`` keeps only the opening tokens of a helpful target (no end of turn)."""
    seqs, labels = [], []
    for r in rows:
        p = tok(prompt_text(tok, r["text"]), add_special_tokens=False)["input_ids"]
        t = tok(r["target"] + (tok.eos_token if r["target_finished"] else ""), add_special_tokens=False)[
            "input_ids"
        ]
        if helpful_tokens is not None and r["target_kind"] == "helpful" and len(t) > helpful_tokens:
            t = t[:helpful_tokens]
        seqs.append(p + t)
        labels.append([-100] * len(p) + t)
    n = max(len(s) for s in seqs)
    pad = tok.pad_token_id
    return {
        "input_ids": torch.tensor([s + [pad] * (n - len(s)) for s in seqs]),
        "attention_mask": torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in seqs]),
        "labels": torch.tensor([lab + [-100] * (n - len(lab)) for lab in labels]),
    }


# ------------------------------------------------------------------------------------------ LoRA
def lora_regex(projections: tuple[str, ...]) -> str:
    """peft target regex: the chosen projections of the causal LM's decoder layers."""
    return rf"model\.layers\.\d+\.(self_attn|mlp)\.({'|'.join(projections)})"


def lora_delta(peft_model) -> dict[str, torch.Tensor]:
    """The trained LoRA factors as ``<module>.lora_A`` / ``<module>.lora_B`` tensors (fp16, LM-relative names)."""
    out = {}
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            base = name.removeprefix("base_model.model.")
            out[f"{base}.lora_A"] = module.lora_A["default"].weight.detach().to(torch.float16).contiguous()
            out[f"{base}.lora_B"] = module.lora_B["default"].weight.detach().to(torch.float16).contiguous()
    return out


def merge_delta(lm, delta: dict[str, torch.Tensor], scale: float, source: str = "safety adapter") -> None:
    """Add ``scale * B @ A`` to each adapted weight of a causal LM, in place."""
    modules = dict(lm.named_modules())
    names = sorted({k.rsplit(".", 1)[0] for k in delta})
    for name in names:
        a, b = delta.get(f"{name}.lora_A"), delta.get(f"{name}.lora_B")
        mod = modules.get(name)
        if a is None or b is None or mod is None or not hasattr(mod, "weight"):
            raise ModelLoadError(f"{source}: tensor {name} does not fit the language model")
        w = mod.weight
        if (b.shape[0], a.shape[1]) != tuple(w.shape) or a.shape[0] != b.shape[1]:
            raise ModelLoadError(
                f"{source}: {name} has shape {tuple(b.shape)} x {tuple(a.shape)}, not {tuple(w.shape)}"
            )
        with torch.no_grad():
            w += scale * (b.float() @ a.float()).to(w.dtype)


def _schedule(step: int, total: int, warmup: int) -> float:
    import math

    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def train_safety(lm, tok, rows: list[dict[str, Any]], cfg: SafetyTuneConfig, history=None):
    """LoRA SFT of the causal LM on the training chats; returns the LoRA delta (the LM is left unchanged)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(cfg.seed)
    pcfg = LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules=lora_regex(cfg.projections)
    )
    model = get_peft_model(lm, pcfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, cfg.steps, cfg.warmup))
    rng = random.Random(f"vsfa-safety-batches:{cfg.seed}")
    order: list[int] = []
    t0, running = time.time(), None
    model.train()
    for step in range(1, cfg.steps + 1):
        if len(order) < cfg.batch:
            more = list(range(len(rows)))
            rng.shuffle(more)
            order += more
        idx, order = order[: cfg.batch], order[cfg.batch :]
        loss = model(**encode_sft(tok, [rows[i] for i in idx], cfg.helpful_tokens)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            row = {"step": step, "loss": running, "s": round(time.time() - t0, 1)}
            if history is not None:
                history.append(row)
            logger.info(f"safety step {step}/{cfg.steps}: loss {running:.3f}, {time.time() - t0:.0f} s")
    model.eval()
    delta = lora_delta(model)
    model.unload()  # restore the plain LM modules
    return delta


# ------------------------------------------------------------------------------------------ artifacts
def helpful_cache_file(lm_key: str, cfg: SafetyTuneConfig) -> Path:
    """Where SmolLM2's distilled answers are cached (keyed by LM content and generation settings)."""
    return vsfa_cache_dir() / "refusal" / f"helpful-{lm_key}-greedy{cfg.distill_tokens}.json"


def _lm_key(lm_folder: Path | None) -> tuple[Path, str]:
    if lm_folder is None:
        return materialise_smollm2(), smollm2_key()
    lm_folder = Path(lm_folder)
    if is_complete(lm_folder):
        return lm_folder, str(read_manifest(lm_folder).get("key"))
    return lm_folder, sha256_file(lm_folder / "model.safetensors")[:16]


def retrain_safety(
    out: str | Path,
    cfg: SafetyTuneConfig | None = None,
    lm_folder: str | Path | None = None,
) -> Path:
    """Build the refusal dataset (distilling helpful targets), train the LoRA, write the adapter folder.

    ``out`` gets ``ADAPTER_FILE``, ``data/`` (train/evaluation requests + their manifest with the category
    split), ``training_log.jsonl`` and ``manifest.json`` (recipe, hashes, wall times), atomically.
    """
    from safetensors.torch import save_file

    from vsfa.io import atomic_dir

    cfg = cfg or SafetyTuneConfig()
    cfg.validate()
    lm_folder, lm_key = _lm_key(Path(lm_folder) if lm_folder is not None else None)
    lm, tokenizer = load_lm(lm_folder)
    tok = text_tokenizer(tokenizer)
    t0 = time.time()
    data = build_requests(cfg.data_config())
    harmless = [r["text"] for r in data.train if r["target_kind"] == "helpful"]
    answers = distill_helpful(
        harmless,
        lambda chunk: greedy_answers(lm, tok, chunk, cfg.distill_tokens),
        helpful_cache_file(lm_key, cfg),
        cfg.distill_batch,
    )
    attach_helpful(data, answers, KeywordJudge().is_refusal)
    t1 = time.time()
    logger.info(f"refusal data: {len(data.train)} training chats, helpful targets in {t1 - t0:.0f} s")
    history: list[dict] = []
    delta = train_safety(lm, tok, data.train, cfg, history)
    t2 = time.time()
    out = Path(out)
    with atomic_dir(out) as tmp:
        save_file(delta, tmp / ADAPTER_FILE, metadata={"model": SAFE_NAME})
        write_dataset(data, tmp / "data")
        write_jsonl_atomic(tmp / "training_log.jsonl", history)
        write_manifest(
            tmp,
            {
                "name": SAFE_NAME,
                "format": SAFE_FORMAT,
                "recipe": asdict(cfg),
                "scale": cfg.alpha / cfg.rank,
                "language_model": {"folder_key": lm_key},
                "data_key": data.key(),
                "split": data.manifest()["split"],
                "adapter_sha256": sha256_file(tmp / ADAPTER_FILE),
                "wall_s": {"data": round(t1 - t0, 1), "train": round(t2 - t1, 1), "total": round(t2 - t0, 1)},
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            },
        )
    logger.info(f"wrote the safety adapter to {out} ({t2 - t0:.0f} s)")
    return out


def read_adapter(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The LoRA delta of an adapter folder and its manifest (hash checked)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    manifest = read_manifest(folder)
    path = folder / ADAPTER_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path}: safety adapter not found")
    if manifest.get("adapter_sha256") and sha256_file(path) != manifest["adapter_sha256"]:
        raise ModelLoadError(f"{path}: content does not match {folder / 'manifest.json'} (adapter_sha256)")
    try:
        return load_file(path), manifest
    except Exception as e:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({type(e).__name__})") from None


def safe_lm(lm_folder: str | Path | None = None, adapter: str | Path | None = None):
    """``(LlamaForCausalLM with the safety delta merged, tokenizer, adapter manifest)``."""
    adapter = Path(adapter) if adapter is not None else safe_resources_dir()
    delta, aman = read_adapter(adapter)
    lm_folder, _ = _lm_key(Path(lm_folder) if lm_folder is not None else None)
    lm, tok = load_lm(lm_folder)
    merge_delta(lm, delta, float(aman.get("scale", 2.0)), str(adapter / ADAPTER_FILE))
    return lm, tok, aman


def assemble_safe(
    adapter: str | Path | None = None, weights: str | Path | None = None, lm_folder: str | Path | None = None
):
    """``(LlavaForConditionalGeneration, LlavaProcessor)`` of smol-llava-safe, in memory."""
    weights_dir = Path(weights) if weights is not None else resources_dir()
    state, wman = read_vision_weights(weights_dir)
    lm, tok, _ = safe_lm(lm_folder, adapter)
    return assemble(lm, tok, wman.get("vision") or VISION, state, source=str(weights_dir))


def build_safe(
    out: str | Path | None = None,
    weights: str | Path | None = None,
    lm_folder: str | Path | None = None,
    adapter: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Assemble smol-llava-safe (SmolLM2 + merged safety delta + vision weights) into a model folder.

    Default ``out``: ``<cache>/models/smol-llava-safe-<key>``; the key covers the LM, the vision weights and the
    adapter's content, and a complete folder with the same key is reused unless ``force``.
    """
    weights_dir = Path(weights) if weights is not None else resources_dir()
    adapter_dir = Path(adapter) if adapter is not None else safe_resources_dir()
    _, wman = read_vision_weights(weights_dir)
    _, aman = read_adapter(adapter_dir)
    lm_path, lm_key = _lm_key(Path(lm_folder) if lm_folder is not None else None)
    key = sha256_json(
        {"demo": demo_key(lm_key, wman), "adapter": aman.get("adapter_sha256"), "f": SAFE_FORMAT}
    )[:16]
    out = Path(out) if out is not None else vsfa_cache_dir() / "models" / f"{SAFE_NAME}-{key}"
    if not force and is_complete(out) and read_manifest(out).get("key") == key:
        logger.info(f"{SAFE_NAME} is up to date at {out}")
        return out
    t0 = time.time()
    model, processor = assemble_safe(adapter_dir, weights_dir, lm_path)
    manifest = {
        "name": SAFE_NAME,
        "key": key,
        "family": "llava",
        "language_model": str(lm_path),
        "language_model_key": lm_key,
        "vision_weights": str(weights_dir),
        "vision_weights_sha256": wman.get("weights_sha256"),
        "safety_adapter": str(adapter_dir / ADAPTER_FILE),
        "safety_adapter_sha256": aman.get("adapter_sha256"),
        "split": aman.get("split"),
        "naming_accuracy": (wman.get("naming") or {}).get("accuracy"),
    }
    save_demo(model, processor, out, manifest)
    logger.info(f"built {SAFE_NAME} at {out} in {time.time() - t0:.1f} s")
    return out


__all__ = [
    "SAFE_NAME",
    "SafetyTuneConfig",
    "assemble_safe",
    "build_safe",
    "merge_delta",
    "retrain_safety",
    "safe_resources_dir",
    "train_safety",
]
