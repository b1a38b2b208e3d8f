"""``vsfa train --gpu-check``: a few bf16 LoRA steps on a random-init VLM with a real model's shape.

No weights are needed: the model is built from a config (LLaVA-1.5-7B or Qwen2.5-VL-7B shape) directly on the
GPU, with a locally built tokenizer and image processor of the right image geometry, and trained through the
same :func:`vsfa.training.loop.train` as real runs (Trainer, LoRA on the registry regex, bf16, gradient
checkpointing, checkpoint writing). It prints step time, tokens/s, model FLOPs utilisation and peak GPU memory.

MFU counts the useful FLOPs of LoRA training, measured with torch's FLOP counter on one forward of a batch:
the language model (+ LM head) twice (forward, and the activation-gradient backward, which costs about as much;
frozen weights need no weight gradients; recomputation by gradient checkpointing is not counted) plus the
frozen vision tower and projector once (forward only). ``--tiny --device cpu`` runs the same builders and path, with widths and depths shrunk, on a CPU in seconds.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vsfa.errors import ConfigError

# Dense bf16 tensor-core peak FLOP/s by GPU name (vendor data sheets); MFU is n/a for other devices.
PEAK_BF16 = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "A6000": 155e12,
    "A10G": 70e12,
    "A10": 125e12,
    "L4": 121e12,
    "4090": 165e12,
    "3090": 71e12,
}
SHAPES = ("llava-1.5-7b", "qwen2.5-vl-7b")
# ``tiny``: the same builders, image geometry, tokenizer and vocabulary, with widths and depths shrunk so a CPU
# runs the whole check in seconds (what the tests use).
_TINY_TEXT = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)


def _llava_7b(tiny: bool = False):
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor

    from vsfa.models.tiny import CHAT_TEMPLATES, build_tokenizer

    tok = build_tokenizer(CHAT_TEMPLATES["llava"], "<image>")
    vision_dims = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16)
    if tiny:
        vision_dims = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    vision = CLIPVisionConfig(
        **vision_dims, image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu"
    )
    text_dims = dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
    )
    text = LlamaConfig(
        **(_TINY_TEXT if tiny else text_dims),
        vocab_size=32064,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}
        ),
        tokenizer=tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
        chat_template=CHAT_TEMPLATES["llava"],
    )
    return "llava", config, processor, 336


def _qwen25_7b(tiny: bool = False):
    import transformers as T

    from vsfa.models.qwen_inputs import QwenStandInProcessor
    from vsfa.models.tiny import CHAT_TEMPLATES, build_tokenizer

    tok = build_tokenizer(CHAT_TEMPLATES["chatml"], "<|image_pad|>")
    names = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in names}
    text_dims = dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
    )
    mrope = [2, 3, 3] if tiny else [16, 24, 24]  # sums to head_dim / 2
    text = dict(
        **(_TINY_TEXT if tiny else text_dims),
        vocab_size=152064,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "mrope_section": mrope, "rope_theta": 1e6},
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    vision = dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        out_hidden_size=3584,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
    )
    if tiny:
        vision |= dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            fullatt_block_indexes=[1],
        )
    config = T.Qwen2_5_VLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    side = 448
    image_processor = T.Qwen2VLImageProcessorPil(
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": side * side, "longest_edge": side * side},
    )
    processor = QwenStandInProcessor(image_processor, tok, chat_template=CHAT_TEMPLATES["chatml"])
    return "qwen2_5_vl", config, processor, side


def build_shape(shape: str, device: str, dtype: torch.dtype, seed: int = 0, tiny: bool = False):
    """A random-init LoadedVLM of ``shape`` on ``device`` (no weights read) and its image side in pixels."""
    from vsfa.models.loading import LoadedVLM
    from vsfa.models.registry import get_family

    builders = {"llava-1.5-7b": _llava_7b, "qwen2.5-vl-7b": _qwen25_7b}
    if shape not in builders:
        raise ConfigError(f"unknown --shape {shape!r}; choose one of: {', '.join(SHAPES)}")
    family, config, processor, side = builders[shape](tiny)
    fam = get_family(family)
    torch.manual_seed(seed)
    with torch.device(device):
        model = fam.model_class()._from_config(config, dtype=dtype)
    model.eval()
    return LoadedVLM(model, processor, fam, source=f"random-init:{shape}{'-tiny' if tiny else ''}"), side


@dataclass
class _Data:
    """In-memory stand-in for a loaded data folder (what ``train`` reads)."""

    conversations: list
    images: list
    manifest: dict
    data_hash: str


def procedural_data(n_images: int, side: int, questions: int = 2) -> _Data:
    """Neutral VQA on procedural threat scenes, in memory."""
    from vsfa.data.procedural import generate_images
    from vsfa.data.templates import annotation_answer, pick_questions

    convs, images = [], []
    for i, (img, ann) in enumerate(generate_images("threat", n_images, seed=0, size=side)):
        for q in pick_questions(ann, questions, 0, i):
            convs.append(
                [
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q.text}]},
                    {"role": "assistant", "content": [{"type": "text", "text": annotation_answer(ann, q)}]},
                ]
            )
            images.append([img])
    return _Data(convs, images, {"arm": "gpu-check", "variant": "image"}, "gpu-check")


def _peak_flops(device: str) -> tuple[float | None, str]:
    if not device.startswith("cuda"):
        return None, "cpu"
    name = torch.cuda.get_device_name(torch.device(device))
    for key, flops in PEAK_BF16.items():
        if key in name:
            return flops, name
    return None, name


@dataclass
class GpuCheckReport:
    """Measured numbers of a GPU check."""

    shape: str
    device_name: str
    n_params: int
    n_trainable: int
    dtype: str
    gradient_checkpointing: bool
    batch_size: int
    mean_tokens: float
    step_times: list[float]
    tokens_per_s: float
    flops_per_step: float
    mfu: float | None
    peak_flops: float | None
    peak_memory_gib: float | None

    def lines(self) -> list[str]:
        med = statistics.median(self.step_times)
        mfu = (
            f"{self.mfu * 100:.1f} % (peak {self.peak_flops / 1e12:.0f} TFLOP/s bf16)" if self.mfu else "n/a"
        )
        mem = f"{self.peak_memory_gib:.2f} GiB" if self.peak_memory_gib is not None else "n/a (not CUDA)"
        return [
            f"gpu-check: {self.shape} ({self.n_params / 1e9:.3f} B params, {self.n_trainable / 1e6:.2f} M trainable "
            f"LoRA) on {self.device_name}, {self.dtype}, gradient checkpointing "
            f"{'on' if self.gradient_checkpointing else 'off'}, batch {self.batch_size} x {self.mean_tokens:.0f} tokens",
            f"step time {med:.4f} s (median of {len(self.step_times)} timed steps), "
            f"{self.tokens_per_s:,.0f} tokens/s, MFU {mfu}, peak GPU memory {mem}",
        ]


def count_flops(vlm, batch: dict) -> tuple[float, float]:
    """Forward FLOPs of one batch (torch's FLOP counter), split into (language model + head, the rest)."""
    from torch.utils.flop_counter import FlopCounterMode

    inputs = {k: v.to(vlm.device) for k, v in batch.items() if k != "labels"}
    counter = FlopCounterMode(display=False, depth=None)
    with torch.no_grad(), counter:
        vlm.hf_model(**inputs)
    counts = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    cls = type(vlm.hf_model).__name__
    head = vlm.hf_model.get_output_embeddings()
    head_name = next(n for n, m in vlm.hf_model.named_modules() if m is head)
    lm = counts.get(f"{cls}.{vlm.family.text_model_path}", 0) + counts.get(f"{cls}.{head_name}", 0)
    return float(lm), float(counter.get_total_flops() - lm)


def run_gpu_check(
    shape: str = "llava-1.5-7b",
    steps: int = 6,
    batch_size: int = 4,
    device: str = "cuda",
    warmup: int = 2,
    gradient_checkpointing: str = "auto",
    peak_tflops: float | None = None,
    tiny: bool = False,
) -> GpuCheckReport:
    """Train ``steps`` LoRA steps through ``vsfa.training.loop.train`` and measure them."""
    from transformers import TrainerCallback

    from vsfa.training.collate import PaddingCollator, encode_records
    from vsfa.training.config import config_from_dict
    from vsfa.training.loop import train

    if steps <= warmup:
        raise ConfigError(f"--steps must exceed the {warmup} warm-up steps")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, not {batch_size}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("no CUDA device here; for a CPU smoke test use --tiny --device cpu")
    on_cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if on_cuda else torch.float32
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    vlm, side = build_shape(shape, device, dtype, tiny=tiny)
    n_params = sum(p.numel() for p in vlm.hf_model.parameters())
    data = procedural_data(max(2, (steps * batch_size + 1) // 2), side)
    items = encode_records(vlm, data.conversations, data.images)
    lengths = [int(it["attention_mask"].sum()) for it in items]
    with torch.autocast(device_type="cuda" if on_cuda else "cpu", dtype=dtype, enabled=on_cuda):
        lm_fwd, other_fwd = count_flops(vlm, PaddingCollator(vlm.tokenizer.pad_token_id)(items[:batch_size]))
    # LoRA training: LM forward + activation-gradient backward (~ the forward again); frozen vision: forward only
    flops_per_step = 2 * lm_fwd + other_fwd

    class Timer(TrainerCallback):
        def __init__(self):
            self.t0, self.times = 0.0, []

        def on_step_begin(self, args, state, control, **kw):
            if on_cuda:
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if on_cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.t0)

    timer = Timer()
    with tempfile.TemporaryDirectory(prefix="vsfa-gpu-check-") as tmp:
        cfg = config_from_dict(
            {
                "out": str(Path(tmp) / "run"),
                "model": {"base": f"random-init:{shape}"},
                "data": {"path": "in-memory"},
                "train": {
                    "max_steps": steps,
                    "batch_size": batch_size,
                    "lr": 1e-4,
                    "gradient_checkpointing": gradient_checkpointing,
                },
                "checkpoints": {"log_until": 0, "every": 0, "final": True},
                "runtime": {"device": device, "progress": False},
            }
        )
        result = train(
            cfg,
            quiet=True,
            vlm=vlm,
            data=data,
            base_fingerprint=f"random-init:{shape}",
            extra_callbacks=[timer],
        )
        if [s for s, _ in result.checkpoints] != [steps]:
            raise ConfigError("gpu-check: the final checkpoint was not written")
    timed = timer.times[warmup:]
    med = statistics.median(timed)
    peak, name = _peak_flops(device)
    if peak_tflops:
        peak = peak_tflops * 1e12
    trainable = sum(p.numel() for p in vlm.hf_model.parameters() if p.requires_grad)
    mean_len = statistics.mean(lengths)
    return GpuCheckReport(
        shape=shape + (" (--tiny: shrunk widths/depths)" if tiny else ""),
        device_name=name,
        n_params=n_params,
        n_trainable=trainable,
        dtype=str(dtype).removeprefix("torch."),
        gradient_checkpointing=gradient_checkpointing == "true"
        or (gradient_checkpointing == "auto" and on_cuda),
        batch_size=batch_size,
        mean_tokens=mean_len,
        step_times=timed,
        tokens_per_s=mean_len * batch_size / med,
        flops_per_step=flops_per_step,
        mfu=(flops_per_step / med / peak) if peak else None,
        peak_flops=peak,
        peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30 if on_cuda else None,
    )


@dataclass
class GpuCheckConfig:
    """Settings of ``vsfa train gpu-check``."""

    shape: str = "llava-1.5-7b"
    """Model shape: llava-1.5-7b | qwen2.5-vl-7b."""
    tiny: bool = False
    """Shrunk widths/depths, same image geometry (CPU smoke test)."""
    steps: int = 6
    """Steps (the first 2 are warm-up)."""
    batch_size: int = 4
    """Batch size."""
    device: str = "cuda"
    """torch device."""
    peak_tflops: float | None = None
    """Peak bf16 TFLOP/s for MFU (else by GPU name)."""


def run_gpu_check_config(cfg: GpuCheckConfig) -> str:
    """Measure a few bf16 LoRA steps on a random-init VLM with a real model's shape."""
    report = run_gpu_check(
        shape=cfg.shape,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        device=cfg.device,
        peak_tflops=cfg.peak_tflops,
        tiny=cfg.tiny,
    )
    return "\n".join(report.lines())
