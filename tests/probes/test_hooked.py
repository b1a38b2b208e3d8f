"""HookedVLM: hook names match HF hidden states on every family and backend; hooks intervene."""

from __future__ import annotations

import pytest
import torch

from probes.fidelity import check_batch, run_fidelity_check
from probes.hooked import HookedVLM, hook_name, parse_hook_name
from vsfa.errors import VsfaError
from vsfa.models.loading import load_vlm
from vsfa.models.registry import FAMILIES
from vsfa.models.tiny import TINY_FAMILIES

BOUND = 1e-4


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_fidelity_every_layer(family, backend, tiny_model):
    report = run_fidelity_check(tiny_model(family), backend=backend)
    expected = "bridge" if backend == "auto" and FAMILIES[family].tl_adapter else "torch"
    assert report.backend == expected
    assert len(report.rel_err) == 2
    assert report.max_rel_err <= BOUND, report.table()


def test_off_by_one_layer_would_be_caught(tiny_model):
    """The comparison is sensitive: layer l against hidden_states[l] (the wrong index) is far off."""
    vlm = load_vlm(tiny_model("llava"), attn_implementation="eager")
    hooked = HookedVLM(vlm)
    batch = check_batch(vlm)
    with torch.no_grad():
        hidden = vlm.model(**batch, output_hidden_states=True).hidden_states
    _, cache = hooked.run_with_cache(batch, [hook_name(0)])
    mask = batch["attention_mask"].bool()
    right = (cache[hook_name(0)][mask] - hidden[1][mask]).abs().max()
    wrong = (cache[hook_name(0)][mask] - hidden[0][mask]).abs().max() / hidden[0][mask].abs().max()
    assert right <= BOUND and wrong > 100 * BOUND


@pytest.mark.parametrize("family", ["llava", "gemma3", "qwen3_vl"])
def test_backends_agree_on_all_hook_kinds(family, tiny_model):
    vlm = load_vlm(tiny_model(family), attn_implementation="eager")
    names = [hook_name(1, k) for k in ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out")]
    torch_hooked = HookedVLM(vlm, backend="torch")
    _, ref = torch_hooked.run_with_cache(check_batch(vlm), names)
    vlm2 = load_vlm(tiny_model(family), attn_implementation="eager")
    _, got = HookedVLM(vlm2, backend="bridge").run_with_cache(check_batch(vlm2), names)
    for n in names:
        assert torch.allclose(ref[n], got[n], atol=1e-6), n


def test_resid_pre_of_next_layer_equals_resid_post(tiny_model):
    vlm = load_vlm(tiny_model("llava"))
    _, cache = HookedVLM(vlm).run_with_cache(check_batch(vlm), [hook_name(0), hook_name(1, "hook_resid_pre")])
    assert torch.equal(cache[hook_name(0)], cache[hook_name(1, "hook_resid_pre")])


@pytest.mark.parametrize("backend", ["bridge", "torch"])
def test_positions_gather_and_steering(backend, tiny_model):
    vlm = load_vlm(tiny_model("llava"))
    hooked = HookedVLM(vlm, backend=backend)
    batch = check_batch(vlm)
    _, full = hooked.run_with_cache(batch, [hook_name(1)])
    last = torch.full((3, 1), batch["input_ids"].shape[1] - 1)
    _, picked = hooked.run_with_cache(batch, [hook_name(1)], positions=last)
    assert torch.equal(picked[hook_name(1)][:, 0], full[hook_name(1)][:, -1])

    direction = torch.randn(hooked.d_model)

    def add(act, name):
        return act + 5.0 * direction

    _, steered = hooked.run_with_cache(batch, [hook_name(1)], fwd_hooks=[(hook_name(0), add)])
    delta = (steered[hook_name(1)] - full[hook_name(1)])[:, -1]
    cos = torch.nn.functional.cosine_similarity(delta, direction.expand_as(delta), dim=-1)
    assert (cos > 0.5).all()  # the added direction survives one block
    # hooks are removed after the context: a clean run is unchanged
    _, again = hooked.run_with_cache(batch, [hook_name(1)])
    assert torch.equal(again[hook_name(1)], full[hook_name(1)])


def test_generate_with_hooks(tiny_model):
    vlm = load_vlm(tiny_model("llava"))
    hooked = HookedVLM(vlm)
    batch = check_batch(vlm)
    plain = hooked.generate(batch, max_new_tokens=4)
    seen = []
    pushed = hooked.generate(
        batch, max_new_tokens=4, fwd_hooks=[(hook_name(1), lambda a, n: seen.append(n) or a * 0 + 50.0)]
    )
    assert plain.shape == (3, 4) and seen
    assert not torch.equal(plain, pushed)


def test_bad_hook_names(tiny_model):
    hooked = HookedVLM(load_vlm(tiny_model("llava")))
    with pytest.raises(VsfaError, match="unsupported hook name"):
        parse_hook_name("blocks.0.attn.hook_z")
    with pytest.raises(VsfaError, match="has 2 layers"), hooked.hooks([(hook_name(5), lambda a, n: None)]):
        pass


def test_bridge_generation_equals_plain_hf(tiny_model):
    """Bridge-wrapped generation must give the same tokens as the plain HF model (KV-cache pitfall)."""
    batch_vlm = load_vlm(tiny_model("llava"))
    ref = HookedVLM(batch_vlm, backend="torch").generate(check_batch(batch_vlm), max_new_tokens=8)
    vlm = load_vlm(tiny_model("llava"))
    got = HookedVLM(vlm, backend="bridge").generate(check_batch(vlm), max_new_tokens=8)
    assert torch.equal(ref, got)
