"""AdapterSwitcher: a checkpoint sweep reads the base once and gives exactly what per-checkpoint loading gives."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

from probes.fidelity import check_batch
from vsfa.errors import ModelLoadError
from vsfa.io import model_fingerprint
from vsfa.models.loading import AdapterSwitcher, load_vlm
from vsfa.models.registry import get_family


def save_adapters(base, out, family: str = "llava"):
    """Three LoRA checkpoints of ``base`` that differ in targets (the second also adapts the vision tower),
    rank, layers and scale, as a sweep's may."""
    regex = get_family(family).lora_target_regex
    configs = [
        LoraConfig(r=4, lora_alpha=8, target_modules=regex, init_lora_weights=False),
        LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        LoraConfig(
            r=8,
            lora_alpha=4,
            target_modules=["o_proj", "down_proj"],
            layers_to_transform=[1],
            layers_pattern="layers",
            init_lora_weights=False,
        ),
    ]
    paths = []
    for i, cfg in enumerate(configs):
        torch.manual_seed(10 + i)
        model = get_peft_model(load_vlm(base).hf_model, cfg)
        paths.append(out / f"step-{i + 1:06d}")
        model.save_pretrained(paths[-1])
    return paths


def count_base_reads(monkeypatch, family: str = "llava") -> list:
    """Counts ``from_pretrained`` calls of the family's model class (reads of the base weights) from now on."""
    cls = get_family(family).model_class()
    original = cls.from_pretrained.__func__
    calls: list = []

    def counting(klass, *args, **kwargs):
        calls.append(args[0] if args else kwargs.get("pretrained_model_name_or_path"))
        return original(klass, *args, **kwargs)

    monkeypatch.setattr(cls, "from_pretrained", classmethod(counting))
    return calls


def make_sweep_run(tmp_path, base):
    """A finished training run of ``base`` with the three checkpoints of :func:`save_adapters`."""
    run = tmp_path / "run"
    ck = run / "checkpoints"
    ck.mkdir(parents=True)
    manifest = {"base_model": str(base), "base_model_fingerprint": model_fingerprint(base), "seed": 0}
    for step, path in enumerate(save_adapters(base, ck), 1):
        (path / "manifest.json").write_text(json.dumps({**manifest, "step": step}))
    (run / "manifest.json").write_text(json.dumps({**manifest, "kind": "vsfa-run"}))
    return run


def _outputs(vlm, batch):
    """Every hidden state and the greedy answer tokens of one batch."""
    with torch.no_grad():
        hidden = vlm.model(**batch, output_hidden_states=True, use_cache=False).hidden_states
        tok = vlm.tokenizer
        answer = vlm.model.generate(
            **batch, do_sample=False, max_new_tokens=6, pad_token_id=tok.pad_token_id or tok.eos_token_id
        )
    return [h.clone() for h in hidden], answer


def test_sweep_equals_per_checkpoint_loading_and_reads_base_once(tiny_model, tmp_path, monkeypatch):
    base = tiny_model("llava")
    adapters = save_adapters(base, tmp_path)
    batch = check_batch(load_vlm(base))
    order = [None, *adapters, None, adapters[1]]  # back to the base (unload), then wrap again
    expected = [_outputs(load_vlm(base, adapter=a), batch) for a in order]
    reads = count_base_reads(monkeypatch)

    with AdapterSwitcher(base) as switcher:
        got = []
        for a in order:
            vlm = switcher.load(a)
            assert vlm.adapter == (str(a) if a else None) and not vlm.merged
            got.append(_outputs(vlm, batch))
        assert switcher.base_loads == 1
    assert len(reads) == 1
    for a, (hid_e, ans_e), (hid_g, ans_g) in zip(order, expected, got, strict=True):
        assert all(torch.equal(e, g) for e, g in zip(hid_e, hid_g, strict=True)), a
        assert torch.equal(ans_e, ans_g), a
    assert not torch.equal(expected[1][0][-1], expected[0][0][-1])  # the adapters really change the model


def test_a_bad_adapter_is_refused_and_the_sweep_goes_on(tiny_model, tmp_path):
    base = tiny_model("llava")
    good = save_adapters(base, tmp_path)[0]
    other = save_adapters(tiny_model("gemma3"), tmp_path / "gemma3", "gemma3")[0]
    batch = check_batch(load_vlm(base))
    with AdapterSwitcher(base) as switcher:
        switcher.load(good)
        with pytest.raises(ModelLoadError, match="trained on a Gemma3"):
            switcher.load(other)
        hidden, answer = _outputs(switcher.load(good), batch)
    want_hidden, want_answer = _outputs(load_vlm(base, adapter=good), batch)
    assert all(torch.equal(e, g) for e, g in zip(want_hidden, hidden, strict=True))
    assert torch.equal(want_answer, answer)


@pytest.mark.parametrize("merge,swap", [(True, True), (False, False)])
def test_merge_and_no_swap_fall_back_to_one_load_per_checkpoint(tiny_model, tmp_path, merge, swap):
    base = tiny_model("llava")
    adapters = save_adapters(base, tmp_path)[:2]
    batch = check_batch(load_vlm(base))
    with AdapterSwitcher(base, merge=merge, swap=swap) as switcher:
        assert not switcher.swapping
        for a in adapters:
            vlm = switcher.load(a)
            assert vlm.merged == merge
            hidden, _ = _outputs(vlm, batch)
            want, _ = _outputs(load_vlm(base, adapter=a, merge=merge), batch)
            assert all(torch.equal(e, g) for e, g in zip(want, hidden, strict=True))
        assert switcher.base_loads == 2


def test_sweep_loader_reloads_for_the_bridge_backend(tiny_model, tmp_path):
    """The TransformerBridge rewires the modules it wraps: a sweep on it loads base + adapter afresh."""
    from probes.capture import Capturer, CaptureSpec, ModelSpec, SweepLoader
    from probes.contrasts import load_set

    base = tiny_model("llava")
    adapter = save_adapters(base, tmp_path)[0]
    cset = load_set("persona", max_questions=1)
    loader = SweepLoader()
    for backend, loads in (("torch", 1), ("bridge", 2)):
        for a in (None, adapter):
            spec = ModelSpec(str(base), str(a) if a else None, backend=backend)
            swept = Capturer(spec, tmp_path / backend, loader=loader).capture(cset, CaptureSpec())
            fresh = Capturer(spec, tmp_path / f"{backend}-fresh").capture(cset, CaptureSpec())
            assert all(torch.equal(swept.load(h, "last"), fresh.load(h, "last")) for h in swept.hooks)
        assert loader._switcher.swapping == (backend == "torch")
        assert loader._switcher.base_loads == loads
    loader.close()
    assert loader.base_loads == 3
