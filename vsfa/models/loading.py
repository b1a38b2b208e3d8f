"""Load a VLM (base, base + LoRA adapter, or merged) with its processor and registry entry.

``load_vlm`` is the one way the toolkit opens a model: tiny test models, the demo models and 7B checkpoints
go through the same code. Family quirks come from :mod:`vsfa.models.registry`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vsfa.env import guard_torchvision_autoinstall, torchvision_available
from vsfa.errors import ModelLoadError
from vsfa.io import fingerprint_matches, model_fingerprint
from vsfa.models.qwen_inputs import STAND_IN_MARKER, QwenStandInProcessor
from vsfa.models.registry import Family, family_for_config

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
_DTYPES |= {"float16": torch.float16, "fp16": torch.float16}
# bitsandbytes weights (CUDA only): 8-bit, or 4-bit NF4; both compute in bfloat16
QUANTIZED = ("int8", "nf4")
# ``device="auto"``: accelerate's device_map="auto" spreads the model over the GPUs (and CPU RAM)
MAPPED = "auto"

Message = dict[str, Any]


@dataclass
class LoadedVLM:
    """A loaded VLM: the HF (or peft) model, its processor/tokenizer, and its family entry."""

    model: Any
    processor: Any
    family: Family
    source: str
    adapter: str | None = None
    merged: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def hf_model(self):
        """The underlying transformers model (inside a peft wrapper if an adapter is attached unmerged)."""
        from peft import PeftModel

        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    @property
    def config(self):
        return self.hf_model.config

    @property
    def text_config(self):
        return getattr(self.config, "text_config", self.config)

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf_model.parameters()).dtype

    @property
    def image_token_id(self) -> int:
        return int(self.config.image_token_id)

    @property
    def text_model(self):
        """The language-model decoder module (has ``layers``, ``norm``, ``embed_tokens``)."""
        return self.hf_model.get_submodule(self.family.text_model_path)

    @property
    def layers(self) -> Sequence[torch.nn.Module]:
        return self.hf_model.get_submodule(self.family.layers_path)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def d_model(self) -> int:
        return int(self.text_config.hidden_size)

    def render(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        """Render chat messages (content parts ``{"type": "image"}`` / ``{"type": "text"}``) to prompt text."""
        return self.processor.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=False
        )

    def encode(self, texts: Sequence[str], images: Sequence[Sequence[Any]] | None = None, **kwargs):
        """Tokenize a batch (left padding) with its images, on the model's device.

        ``images[i]`` lists the images of ``texts[i]``; pass ``None`` for a text-only batch.
        """
        self.tokenizer.padding_side = "left"
        has_images = images is not None and any(len(group) for group in images)
        if has_images and not all(len(group) for group in images):
            raise ModelLoadError("a batch must be all text-only or all with images")
        if has_images:
            batch = self.processor(
                text=list(texts),
                images=[list(g) for g in images],
                padding=True,
                return_tensors="pt",
                **kwargs,
            )
        else:
            batch = self.tokenizer(list(texts), padding=True, return_tensors="pt", **kwargs)
            if "mm_token_type_ids" in self.family.extra_input_keys:
                batch["mm_token_type_ids"] = torch.zeros_like(batch["input_ids"])
            if "token_type_ids" in self.family.extra_input_keys:
                batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        if "token_type_ids" not in self.family.extra_input_keys:
            batch.pop("token_type_ids", None)
        return batch.to(self.device)

    def _token_ids(self, text: str, images: Sequence[Any]) -> list[int]:
        return self.encode([text], [list(images)] if images else None)["input_ids"][0].tolist()

    def encode_chat(
        self,
        conversations: Sequence[list[Message]],
        images: Sequence[Sequence[Any]] | None = None,
        train_on: str = "last",
    ):
        """Tokenize whole conversations (teacher forcing) with labels on assistant tokens only.

        Each conversation ends with an assistant message. ``train_on="last"`` marks the final assistant turn,
        ``"all"`` every assistant turn. Returns the left-padded batch plus ``labels`` (token ids on marked
        assistant tokens, -100 elsewhere) and ``response_mask`` (bool, same positions). Turn boundaries come
        from rendering each prefix with the chat template, so template tokens such as end-of-turn markers
        are part of the response exactly as the template writes them.
        """
        if train_on not in ("last", "all"):
            raise ModelLoadError(f"train_on must be 'last' or 'all', not {train_on!r}")
        groups = [list(g) for g in images] if images is not None else [[] for _ in conversations]
        texts, spans = [], []
        for conv, imgs in zip(conversations, groups, strict=True):
            if not conv or conv[-1]["role"] != "assistant":
                raise ModelLoadError("each conversation must end with an assistant message")
            texts.append(self.render(conv, add_generation_prompt=False))
            turns = [i for i, m in enumerate(conv) if m["role"] == "assistant"]
            marked = turns if train_on == "all" else turns[-1:]
            item_spans = []
            for i in marked:
                n_img = sum(_count_images(m) for m in conv[:i])
                before = self._token_ids(self.render(conv[:i], add_generation_prompt=True), imgs[:n_img])
                through = self._token_ids(
                    self.render(conv[: i + 1], add_generation_prompt=False), imgs[:n_img]
                )
                item_spans.append((before, through))
            spans.append(item_spans)
        batch = self.encode(texts, groups if any(groups) else None)
        ids = batch["input_ids"]
        lengths = batch["attention_mask"].sum(1).tolist()
        mask = torch.zeros_like(ids, dtype=torch.bool)
        for row, (length, item_spans) in enumerate(zip(lengths, spans, strict=True)):
            offset = ids.shape[1] - int(length)  # left padding
            full = ids[row, offset:].tolist()
            for before, through in item_spans:
                start, end = len(before), len(through)
                if not (start < end <= length and full[:start] == before and full[:end] == through):
                    raise ModelLoadError(
                        f"conversation {row}: the chat template does not tokenize turn by turn as a prefix "
                        "of the whole conversation; cannot locate the assistant tokens"
                    )
                mask[row, offset + start : offset + end] = True
        batch["labels"] = torch.where(mask, ids, torch.full_like(ids, -100))
        batch["response_mask"] = mask
        return batch


def _count_images(message: Message) -> int:
    content = message.get("content")
    if isinstance(content, str):
        return 0
    return sum(1 for part in content if part.get("type") == "image")


def check_device(device: str) -> None:
    """``device`` names a torch device this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``...), or is
    ``auto`` (spread over the GPUs with accelerate's ``device_map="auto"``)."""
    if device == MAPPED:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelLoadError(f"unknown device {device!r}; e.g. cpu, cuda, cuda:0, mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r}: no CUDA GPU is available here (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {device!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device {device!r}: MPS is not available here (use --device cpu)")


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """Default: float32 on CPU, bfloat16 on CUDA; the compute dtype (bfloat16) of 8/4-bit weights."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in QUANTIZED:
        return torch.bfloat16
    if dtype is None or dtype == "auto":
        on_gpu = str(device).startswith("cuda") or (device == MAPPED and torch.cuda.is_available())
        return torch.bfloat16 if on_gpu else torch.float32
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of: {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def quantization_config(dtype: str, family: Family):
    """bitsandbytes settings of an ``int8`` / ``nf4`` dtype (the vision tower and projector stay in bfloat16);
    a ModelLoadError where there is no CUDA GPU or no bitsandbytes."""
    if not torch.cuda.is_available():
        raise ModelLoadError(f"dtype {dtype!r}: 8/4-bit weights (bitsandbytes) need a CUDA GPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelLoadError(f"dtype {dtype!r} needs bitsandbytes (pip install bitsandbytes)") from None
    from transformers import BitsAndBytesConfig

    keep = [family.projector_path.rsplit(".", 1)[-1], "vision_tower", "visual", "lm_head"]
    if dtype == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=keep)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=keep,
    )


def _check_model_folder(path: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        hint = (
            ""
            if os.environ.get("HF_HUB_OFFLINE") != "1"
            else " (hub access is off: pass a local model folder)"
        )
        raise ModelLoadError(f"{path}: model folder not found{hint}")
    if not folder.is_dir():
        raise ModelLoadError(f"{path}: not a folder")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{path}: no config.json in the model folder")
    return folder


def read_family(path: str | Path) -> Family:
    """Detect the family of a model folder from its config.json without loading weights."""
    from transformers import AutoConfig

    folder = _check_model_folder(str(path))
    try:
        config = AutoConfig.from_pretrained(folder)
    except Exception as e:  # unknown model_type etc.
        raise ModelLoadError(
            f"{folder / 'config.json'}: cannot read config ({type(e).__name__}: {e})"
        ) from None
    return family_for_config(config, source=str(folder / "config.json"))


def load_processor(folder: Path, family: Family):
    """The folder's processor; the Qwen stand-in where the real one needs the missing torchvision."""
    from transformers import AutoProcessor

    if (folder / STAND_IN_MARKER).is_file() or (
        family.processor_needs_torchvision and not torchvision_available()
    ):
        try:
            return QwenStandInProcessor.from_pretrained(folder)
        except Exception as e:
            raise ModelLoadError(
                f"{folder}: cannot build the tokenizer/processor offline ({type(e).__name__}: {e})"
            ) from None
    try:
        processor = AutoProcessor.from_pretrained(folder)
    except Exception as e:
        raise ModelLoadError(
            f"{folder}: cannot build the tokenizer/processor offline ({type(e).__name__}: {e})"
        ) from None
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None:
        raise ModelLoadError(f"{folder}: the processor has no tokenizer (need a multimodal processor folder)")
    tokenizer.padding_side = "left"
    return processor


def _check_adapter(adapter: Path, base_folder: Path, family: Family) -> None:
    if not adapter.is_dir():
        raise ModelLoadError(f"{adapter}: adapter folder not found")
    cfg_file = adapter / "adapter_config.json"
    if not cfg_file.is_file():
        raise ModelLoadError(f"{adapter}: no adapter_config.json (not a peft adapter folder)")
    trained_on = json.loads(cfg_file.read_text()).get("auto_mapping", {}) or {}
    trained_class = trained_on.get("base_model_class")
    if trained_class and trained_class not in family.architectures and trained_class != family.hf_class:
        raise ModelLoadError(
            f"{adapter}: adapter was trained on a {trained_class}, not a {family.hf_class} ({base_folder})"
        )
    manifest_file = adapter / "manifest.json"
    if manifest_file.is_file():
        from vsfa.io import read_json

        problem = base_mismatch(adapter, read_json(manifest_file, ModelLoadError), base_folder)
        if problem:
            raise ModelLoadError(problem)


def base_mismatch(checkpoint: str | Path, manifest: dict[str, Any], base_folder: str | Path) -> str | None:
    """Why ``base_folder`` is not the base ``checkpoint`` was trained on (None when it is).

    Names the field that differs: the recorded ``base_model_fingerprint`` (config + weights) against the
    folder's, and says whether the folder is the recorded one whose content changed, or another folder.
    """
    from vsfa.io import recorded_path

    expected = manifest.get("base_model_fingerprint")
    if not expected or fingerprint_matches(expected, base_folder):
        return None
    actual = model_fingerprint(base_folder)
    recorded = recorded_path(manifest.get("base_model"), checkpoint)
    same = recorded is not None and Path(recorded).resolve() == Path(base_folder).resolve()
    where = (
        f"{base_folder} is the recorded folder, but its config.json or weights changed since training"
        if same
        else f"recorded base_model {manifest.get('base_model', '?')}, given {base_folder}"
    )
    return f"{checkpoint}: base_model_fingerprint differs (manifest {expected[:12]}, folder {actual[:12]}): {where}"


def base_model_of(checkpoint: str | Path, base: str | Path | None = None) -> Path:
    """The base model folder a checkpoint was trained on (``base``, else its manifest's ``base_model``),
    checked against the recorded ``base_model_fingerprint``."""
    from vsfa.errors import ArtifactError
    from vsfa.io import read_manifest, recorded_path

    ckpt = Path(checkpoint)
    if not ckpt.is_dir():
        raise ArtifactError(f"{ckpt}: checkpoint folder not found")
    manifest = read_manifest(ckpt)
    recorded = base or recorded_path(manifest.get("base_model"), ckpt)
    if not recorded:
        raise ArtifactError(f"{ckpt / 'manifest.json'}: no base_model recorded; pass --base")
    folder = Path(recorded)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: base model folder not found (from {ckpt / 'manifest.json'})")
    problem = base_mismatch(ckpt, manifest, folder)
    if problem:
        raise ModelLoadError(problem)
    return folder


def load_vlm(
    path_or_id: str | Path,
    adapter: str | Path | None = None,
    merge: bool = False,
    dtype: str | torch.dtype | None = None,
    device: str = "cpu",
    attn_implementation: str | None = None,
) -> LoadedVLM:
    """Load a VLM from a local folder, optionally with a peft LoRA adapter (attached, or merged if ``merge``).

    ``path_or_id`` may also be a model source spec (``tiny:<family>``, ``organism``, ``smol-llava[-<variant>]``;
    :func:`vsfa.models.sources.resolve_model`); ``source`` then records the resolved folder.
    The family is detected from ``config.json``'s ``architectures``. Errors (missing folder, no config,
    unknown architecture, adapter of another base or shape, processor not buildable offline) are
    :class:`~vsfa.errors.ModelLoadError` with a one-line message naming the path.
    """
    from vsfa.models.sources import is_spec, resolve_model

    guard_torchvision_autoinstall()
    check_device(device)
    if is_spec(path_or_id):
        path_or_id = resolve_model(path_or_id)
    folder = _check_model_folder(str(path_or_id))
    family = read_family(folder)
    torch_dtype = resolve_dtype(dtype, device)
    processor = load_processor(folder, family)
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if merge and adapter is not None and dtype in QUANTIZED:
        raise ModelLoadError(
            f"{adapter}: an adapter cannot be merged into {dtype} weights (attach it instead)"
        )
    placed = device == MAPPED or dtype in QUANTIZED  # from_pretrained puts the weights; .to() would undo it
    if dtype in QUANTIZED:
        kwargs["quantization_config"] = quantization_config(str(dtype), family)
    if placed:
        kwargs["device_map"] = "auto" if device == MAPPED else device
    try:
        model = family.model_class().from_pretrained(folder, **kwargs)
    except Exception as e:
        raise ModelLoadError(
            f"{folder}: cannot load weights ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None
    (model if placed else model.to(device)).eval()
    info: dict[str, Any] = {
        "dtype": str(dtype if dtype in QUANTIZED else torch_dtype).removeprefix("torch."),
        "device": device,
    }
    adapter_path = None
    if adapter is not None:
        from peft import PeftModel

        adapter_path = Path(adapter).expanduser()
        _check_adapter(adapter_path, folder, family)
        try:
            model = PeftModel.from_pretrained(model, adapter_path, is_trainable=False)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(
                f"{adapter_path}: adapter does not fit the base model {folder} ({first})"
            ) from None
        (model if placed else model.to(device)).eval()
        if merge:
            model = model.merge_and_unload()
    return LoadedVLM(
        model=model,
        processor=processor,
        family=family,
        source=str(folder),
        adapter=str(adapter_path) if adapter_path else None,
        merged=bool(adapter_path and merge),
        info=info,
    )


# ------------------------------------------------------------------------------------------ adapter sweeps
class AdapterSwitcher:
    """One base model, many LoRA checkpoints: the base weights are read once and peft adapters hot-swapped.

    ``load(adapter)`` gives the :class:`LoadedVLM` of the base (``adapter=None``) or of base + adapter, with the
    same outputs as ``load_vlm(path, adapter=adapter)``. The first adapter wraps the base with
    ``PeftModel.from_pretrained``; each later one is ``load_adapter``-ed under a new name, made active with
    ``set_adapter`` and the previous one ``delete_adapter``-ed, so one adapter is resident at a time. Modules
    that an earlier adapter targeted and the current one does not keep an empty LoRA wrapper, which returns
    its base layer's output unchanged. The base alone is the wrapper ``unload()``-ed (the original modules are
    put back; the base weights are never modified). A LoadedVLM is valid until the next ``load``.

    Falls back to :func:`load_vlm` per call (the base read again each time) when ``swap`` is False (the
    TransformerBridge backend, which rewires the modules it wraps) or ``merge`` is True (merging writes the
    adapter into the base weights). ``base_loads`` counts the reads of the base weights.
    """

    def __init__(
        self,
        path: str | Path,
        dtype: str | torch.dtype | None = None,
        device: str = "cpu",
        merge: bool = False,
        swap: bool = True,
        attn_implementation: str | None = None,
    ):
        self.path = path
        self.dtype = dtype
        self.device = device
        self.merge = merge
        self.swapping = swap and not merge
        self.attn_implementation = attn_implementation
        self.base_loads = 0
        self._base: LoadedVLM | None = None
        self._peft: Any = None  # the PeftModel wrapping self._base.model, when an adapter is attached
        self._active: str | None = None  # its adapter name
        self._count = 0

    def __enter__(self) -> AdapterSwitcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the model (frees its memory)."""
        self._base = self._peft = self._active = None

    def load(self, adapter: str | Path | None = None) -> LoadedVLM:
        """The model with ``adapter`` attached (None: the base), loading the base weights only once."""
        if not self.swapping:
            self.close()  # free the previous model before reading the next
            self.base_loads += 1
            return load_vlm(
                self.path,
                adapter=adapter,
                merge=self.merge,
                dtype=self.dtype,
                device=self.device,
                attn_implementation=self.attn_implementation,
            )
        base = self._load_base()
        if adapter is None:
            if self._peft is not None:
                self._peft.unload()  # original modules back in place, base weights untouched
                self._peft = self._active = None
            return base
        adapter_path = Path(adapter).expanduser()
        _check_adapter(adapter_path, Path(base.source), base.family)
        try:
            self._attach(adapter_path)
        except Exception as e:
            self.close()  # a half-loaded adapter may sit in the modules: read the base again next time
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(
                f"{adapter_path}: adapter does not fit the base model {base.source} ({first})"
            ) from None
        return LoadedVLM(
            model=self._peft,
            processor=base.processor,
            family=base.family,
            source=base.source,
            adapter=str(adapter_path),
            merged=False,
            info=dict(base.info),
        )

    def _load_base(self) -> LoadedVLM:
        if self._base is None:
            self._base = load_vlm(
                self.path, dtype=self.dtype, device=self.device, attn_implementation=self.attn_implementation
            )
            self.base_loads += 1
        return self._base

    def _attach(self, adapter: Path) -> None:
        from peft import PeftModel

        self._count += 1
        name = f"sweep_{self._count}"
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(
                self._base.model, adapter, adapter_name=name, is_trainable=False
            )
        else:
            self._peft.load_adapter(adapter, adapter_name=name, is_trainable=False)
            self._peft.set_adapter(name, inference_mode=True)
            self._peft.delete_adapter(self._active)
        self._active = name
        self._peft.to(self.device).eval()
