"""load_vlm: adapters (attached / merged), the registry LoRA regex, and bad input."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from peft import LoraConfig, get_peft_model

from probes.fidelity import check_batch, run_fidelity_check
from vsfa.errors import ModelLoadError
from vsfa.io import model_fingerprint
from vsfa.models.loading import load_vlm
from vsfa.models.registry import FAMILIES, get_family
from vsfa.models.tiny import TINY_FAMILIES, build_tiny


def _lora(model, family: str, seed: int = 0):
    torch.manual_seed(seed)
    cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules=get_family(family).lora_target_regex, init_lora_weights=False
    )
    return get_peft_model(model, cfg)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_lora_regex_touches_language_model_only(family):
    model, _ = build_tiny(family)
    spec = get_family(family)
    peft_model = _lora(model, family)
    lora_modules = [
        n for n, m in peft_model.named_modules() if hasattr(m, "lora_A") and "lora_A" not in n.split(".")[-1]
    ]
    lora_modules = [n for n in lora_modules if not n.endswith(("lora_A", "lora_B"))]
    assert lora_modules
    assert all(f"{spec.layers_path}." in n for n in lora_modules)
    banned = re.compile(r"vision|visual|multi_modal_projector|connector|merger")
    assert not [n for n in lora_modules if banned.search(n)]
    n_layers = len(model.get_submodule(spec.layers_path))
    per_layer = {int(n.split(f"{spec.layers_path}.")[1].split(".")[0]) for n in lora_modules}
    assert per_layer == set(range(n_layers))
    # and every projection name of the language model is hit
    assert len(lora_modules) == n_layers * 7


def _save_adapter(tiny_dir, tmp_path, family="llava", seed=0):
    vlm = load_vlm(tiny_dir)
    peft_model = _lora(vlm.model, family, seed)
    out = tmp_path / f"adapter-{seed}"
    peft_model.save_pretrained(out)
    return out, peft_model


def test_adapter_attached_and_merged_agree(tiny_model, tmp_path):
    base = tiny_model("llava")
    adapter, trained = _save_adapter(base, tmp_path)
    attached = load_vlm(base, adapter=adapter)
    merged = load_vlm(base, adapter=adapter, merge=True)
    plain = load_vlm(base)
    batch = check_batch(plain)
    with torch.no_grad():
        la, lm, lp, lt = (m.model(**batch).logits for m in (attached, merged, plain, trained))
    assert torch.allclose(la, lt, atol=1e-6)
    assert torch.allclose(la, lm, atol=1e-5)
    assert not torch.allclose(la, lp, atol=1e-3)
    assert attached.adapter and not attached.merged and merged.merged
    report = run_fidelity_check(base, adapter=adapter)  # a merged checkpoint through the same path
    assert report.max_rel_err <= 1e-4


def test_device_map_and_quantized_loading(tiny_model, tmp_path):
    """``device="auto"`` loads through accelerate's device map (here all on the CPU) with the same outputs;
    8/4-bit weights need CUDA and bitsandbytes, say so in one line, and key the capture cache apart."""
    from probes.capture import ModelSpec

    base = tiny_model("llava")
    adapter, _ = _save_adapter(base, tmp_path)
    plain, mapped = load_vlm(base, adapter=adapter), load_vlm(base, adapter=adapter, device="auto")
    assert mapped.info["device"] == "auto" and mapped.device.type == "cpu"
    batch = check_batch(plain)
    with torch.no_grad():
        assert torch.equal(plain.model(**batch).logits, mapped.model(**batch).logits)
    if not torch.cuda.is_available():
        for dtype in ("int8", "nf4"):
            with pytest.raises(ModelLoadError, match=f"dtype '{dtype}': 8/4-bit weights .* need a CUDA GPU"):
                load_vlm(base, dtype=dtype)
    with pytest.raises(ModelLoadError, match="cannot be merged into nf4 weights"):
        load_vlm(base, adapter=adapter, merge=True, dtype="nf4")
    keys = {d: ModelSpec(str(base), dtype=d).key() for d in ("bfloat16", "int8", "nf4")}
    assert len(set(keys.values())) == 3


def test_adapter_for_another_base_is_refused(tiny_model, tmp_path):
    base = tiny_model("llava")
    adapter, _ = _save_adapter(base, tmp_path)
    other = tiny_model("llava", seed=1)
    (adapter / "manifest.json").write_text(
        json.dumps({"base_model": str(base), "base_model_fingerprint": model_fingerprint(base)})
    )
    load_vlm(base, adapter=adapter)  # the right base is accepted
    with pytest.raises(
        ModelLoadError, match=r"base_model_fingerprint differs .*recorded base_model .*given "
    ):
        load_vlm(other, adapter=adapter)


def test_changed_base_folder_says_what_differs(tiny_model, tmp_path):
    """Same folder, changed content: the message names the fingerprint, not 'another model (X), not X'."""
    import shutil

    base = shutil.copytree(tiny_model("llava"), tmp_path / "base")
    adapter, _ = _save_adapter(base, tmp_path)
    (adapter / "manifest.json").write_text(
        json.dumps({"base_model": str(base), "base_model_fingerprint": model_fingerprint(base)})
    )
    cfg = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**cfg, "note": "edited"}))
    with pytest.raises(ModelLoadError) as err:
        load_vlm(base, adapter=adapter)
    msg = str(err.value)
    assert "base_model_fingerprint differs" in msg and "is the recorded folder" in msg
    assert "not " + str(base) not in msg


def test_adapter_of_another_family_is_refused(tiny_model, tmp_path):
    adapter, _ = _save_adapter(tiny_model("llava"), tmp_path)
    with pytest.raises(ModelLoadError, match="trained on a LlavaForConditionalGeneration, not a Gemma3"):
        load_vlm(tiny_model("gemma3"), adapter=adapter)


def test_adapter_of_other_shapes_is_refused(tiny_model, tmp_path):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    adapter, _ = _save_adapter(tiny_model("llava"), tmp_path)
    narrow = LlavaForConditionalGeneration.from_pretrained(tiny_model("llava")).config
    narrow.text_config.hidden_size = narrow.text_config.intermediate_size = 32
    other = tmp_path / "narrow"
    LlavaForConditionalGeneration(narrow).save_pretrained(other)
    AutoProcessor.from_pretrained(tiny_model("llava")).save_pretrained(other)
    with pytest.raises(ModelLoadError, match="does not fit the base model"):
        load_vlm(other, adapter=adapter)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing", "model folder not found"),
        (lambda d: d, "no config.json"),
    ],
)
def test_bad_model_folder(tmp_path, make, message):
    with pytest.raises(ModelLoadError, match=message):
        load_vlm(make(tmp_path))


def test_unknown_architecture(tmp_path):
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=64
    )
    cfg.architectures = ["LlamaForCausalLM"]
    cfg.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=r"unsupported architecture.*supported architectures: .*Llava"):
        load_vlm(tmp_path)


def test_processor_not_buildable_offline(tiny_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model("llava"), folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(ModelLoadError, match="cannot build the tokenizer/processor offline"):
        load_vlm(folder)


def test_every_registry_family_names_real_classes():
    import transformers

    for fam in FAMILIES.values():
        assert hasattr(transformers, fam.hf_class), fam.name
        if fam.tl_adapter:
            from transformer_lens.model_bridge import supported_architectures as sa

            assert hasattr(sa, fam.tl_adapter), fam.tl_adapter


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_registry_projector_path_exists(family):
    model, _ = build_tiny(family)
    projector = model.get_submodule(get_family(family).projector_path)
    assert sum(p.numel() for p in projector.parameters()) > 0
