"""The VLM family registry: every model-family quirk lives here, one entry per family.

An entry says which HF class to load, where the language-model decoder layers and final norm live, how image
tokens appear in ``input_ids``, how a chat prompt with an image is written (the processor's chat template
with ``{"type": "image"}`` content parts), the LoRA target regex restricted to the language model, and
whether TransformerLens' ``TransformerBridge`` has an adapter for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vsfa.errors import ModelLoadError

LORA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Family:
    """One VLM family and its quirks."""

    name: str
    description: str
    architectures: tuple[str, ...]
    hf_class: str
    text_model_path: str  # module path of the language-model decoder (has .layers, .norm, .embed_tokens)
    tl_adapter: str | None = None  # TransformerBridge adapter class; None -> torch-hook backend
    tl_exact_inputs_embeds: bool = True  # False: bridge cannot be fed merged embeddings exactly (M-RoPE etc.)
    processor_needs_torchvision: bool = False  # real processor needs torchvision (we fall back to a stand-in)
    extra_input_keys: tuple[str, ...] = ()  # processor outputs the forward needs beside ids/mask/pixels
    image_placeholder: str = "<image>"  # what the chat template writes for an image part
    # Modules (relative to a decoder layer) whose output is what attention / MLP add to the residual stream.
    projector_path: str = "model.multi_modal_projector"  # vision-to-language projector (trainable on request)
    attn_out_module: str = "self_attn"
    mlp_out_module: str = "mlp"
    lora_projections: tuple[str, ...] = field(default=LORA_PROJECTIONS)

    @property
    def layers_path(self) -> str:
        return f"{self.text_model_path}.layers"

    @property
    def final_norm_path(self) -> str:
        return f"{self.text_model_path}.norm"

    @property
    def lora_target_regex(self) -> str:
        """peft ``target_modules`` regex: the projections of the language-model decoder layers only."""
        path = re.escape(self.layers_path)
        return rf"{path}\.\d+\..*\.({'|'.join(self.lora_projections)})"

    def model_class(self):
        """The transformers model class of this family."""
        import transformers

        return getattr(transformers, self.hf_class)


_QWEN_KEYS = ("image_grid_thw", "mm_token_type_ids")

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="llava",
            description="LLaVA-1.5 (CLIP + Llama/Vicuna)",
            architectures=("LlavaForConditionalGeneration",),
            hf_class="LlavaForConditionalGeneration",
            text_model_path="model.language_model",
            tl_adapter="LlavaArchitectureAdapter",
        ),
        Family(
            name="llava_next",
            description="LLaVA-NeXT / LLaVA-1.6 (any-resolution tiles)",
            architectures=("LlavaNextForConditionalGeneration",),
            hf_class="LlavaNextForConditionalGeneration",
            text_model_path="model.language_model",
            tl_adapter="LlavaNextArchitectureAdapter",
            extra_input_keys=("image_sizes",),
        ),
        Family(
            name="qwen2_vl",
            projector_path="model.visual.merger",
            description="Qwen2-VL (M-RoPE; no TransformerBridge adapter)",
            architectures=("Qwen2VLForConditionalGeneration",),
            hf_class="Qwen2VLForConditionalGeneration",
            text_model_path="model.language_model",
            tl_adapter=None,
            tl_exact_inputs_embeds=False,
            processor_needs_torchvision=True,
            extra_input_keys=_QWEN_KEYS,
            image_placeholder="<|vision_start|><|image_pad|><|vision_end|>",
        ),
        Family(
            name="qwen2_5_vl",
            projector_path="model.visual.merger",
            description="Qwen2.5-VL (M-RoPE, windowed vision attention)",
            architectures=("Qwen2_5_VLForConditionalGeneration",),
            hf_class="Qwen2_5_VLForConditionalGeneration",
            text_model_path="model.language_model",
            tl_adapter="Qwen2_5_VLArchitectureAdapter",
            tl_exact_inputs_embeds=False,
            processor_needs_torchvision=True,
            extra_input_keys=_QWEN_KEYS,
            image_placeholder="<|vision_start|><|image_pad|><|vision_end|>",
        ),
        Family(
            name="qwen3_vl",
            projector_path="model.visual.merger",
            description="Qwen3-VL (interleaved M-RoPE, deepstack visual features)",
            architectures=("Qwen3VLForConditionalGeneration",),
            hf_class="Qwen3VLForConditionalGeneration",
            text_model_path="model.language_model",
            tl_adapter="Qwen3VLArchitectureAdapter",
            tl_exact_inputs_embeds=False,
            processor_needs_torchvision=True,
            extra_input_keys=_QWEN_KEYS,
            image_placeholder="<|vision_start|><|image_pad|><|vision_end|>",
        ),
        Family(
            name="gemma3",
            description="Gemma 3 multimodal (SigLIP + Gemma3; bidirectional attention on image tokens)",
            architectures=("Gemma3ForConditionalGeneration",),
            hf_class="Gemma3ForConditionalGeneration",
            text_model_path="model.language_model",
            tl_adapter="Gemma3MultimodalArchitectureAdapter",
            tl_exact_inputs_embeds=False,
            extra_input_keys=("token_type_ids",),
            image_placeholder="<start_of_image>",
            attn_out_module="post_attention_layernorm",  # Gemma normalises sub-layer outputs before the add
            mlp_out_module="post_feedforward_layernorm",
        ),
        Family(
            name="idefics3",
            projector_path="model.connector",
            description="Idefics3 / SmolVLM (SigLIP-style tower + pixel shuffle + Llama)",
            architectures=("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration"),
            hf_class="Idefics3ForConditionalGeneration",
            text_model_path="model.text_model",
            tl_adapter="Idefics3ArchitectureAdapter",
            extra_input_keys=("pixel_attention_mask",),
        ),
    )
}

_BY_ARCH = {arch: fam for fam in FAMILIES.values() for arch in fam.architectures}


def get_family(name: str) -> Family:
    """The registry entry called ``name``; unknown names are an error listing the supported ones."""
    if name not in FAMILIES:
        raise ModelLoadError(f"unknown model family {name!r}; supported: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_for_config(config, source: str = "config") -> Family:
    """Detect the family from a config's ``architectures`` (or ``model_type`` as a fallback)."""
    archs = list(getattr(config, "architectures", None) or [])
    for arch in archs:
        if arch in _BY_ARCH:
            fam = _BY_ARCH[arch]
            if arch == "SmolVLMForConditionalGeneration":  # same layout; load with its own class
                return Family(**{**fam.__dict__, "hf_class": arch, "tl_adapter": None})
            return fam
    model_type = getattr(config, "model_type", None)
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    supported = ", ".join(sorted(_BY_ARCH))
    raise ModelLoadError(
        f"{source}: unsupported architecture {archs or model_type!r}; supported architectures: {supported}"
    )


@dataclass
class ListConfig:
    """Settings of ``vsfa models list`` (none)."""


def list_families(cfg: ListConfig) -> str:
    """List the supported VLM families and their quirks."""
    rows = [("family", "architectures", "decoder layers", "hooks", "LoRA target regex")]
    for fam in FAMILIES.values():
        hooks = f"bridge ({fam.tl_adapter})" if fam.tl_adapter else "torch hooks"
        rows.append((fam.name, ", ".join(fam.architectures), fam.layers_path, hooks, fam.lora_target_regex))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows
    )
