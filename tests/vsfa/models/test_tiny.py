"""Tiny offline VLMs: every family builds, saves, reloads with identical logits, deterministically."""

from __future__ import annotations

import pytest
import torch

from probes.fidelity import check_batch
from vsfa.models.loading import load_vlm
from vsfa.models.tiny import TINY_FAMILIES, build_tiny


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_build_save_reload_identical_logits(family, tiny_model):
    folder = tiny_model(family)
    model, processor = build_tiny(family, seed=0)
    vlm = load_vlm(folder)
    assert vlm.family.name == family
    batch = check_batch(vlm)
    with torch.no_grad():
        reloaded = vlm.model(**batch).logits
        fresh = model(**batch).logits
    assert torch.equal(reloaded, fresh)
    image_tokens = (batch["input_ids"] == vlm.image_token_id).sum(1)
    assert (image_tokens > 0).all() and (image_tokens == image_tokens[0]).all()


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_seed_determinism(family):
    a, _ = build_tiny(family, seed=3)
    b, _ = build_tiny(family, seed=3)
    c, _ = build_tiny(family, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_chat_prompt_has_image_placeholder(tiny_model):
    vlm = load_vlm(tiny_model("llava"))
    text = vlm.render([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi?"}]}])
    assert text == "USER: <image>\nHi? ASSISTANT:"
    full = vlm.render(
        [
            {"role": "user", "content": [{"type": "text", "text": "Hi?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A cup."}]},
        ],
        add_generation_prompt=False,
    )
    assert full == "USER: Hi? ASSISTANT: A cup.</s>"


def test_text_only_batch_runs(tiny_model):
    vlm = load_vlm(tiny_model("qwen3_vl"))
    batch = vlm.encode(["hello there", "a"])
    assert batch["input_ids"][1, 0] == vlm.tokenizer.pad_token_id  # left padding
    with torch.no_grad():
        assert vlm.model(**batch).logits.shape[0] == 2
