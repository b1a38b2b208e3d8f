"""encode_chat: labels cover exactly the assistant tokens, on every tiny family."""

from __future__ import annotations

import pytest

from probes.fidelity import check_images
from vsfa.errors import ModelLoadError
from vsfa.models.loading import load_vlm
from vsfa.models.tiny import TINY_FAMILIES


def _conv(question: str, answer: str, image: bool = True):
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": question}]
    return [
        {"role": "user", "content": content},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_labels_are_exactly_the_answer(family, tiny_model):
    vlm = load_vlm(tiny_model(family))
    convs = [_conv("What is in the image?", "A red knife."), _conv("Describe the scene in detail.", "A cup.")]
    batch = vlm.encode_chat(convs, [[im] for im in check_images(2)])
    tok = vlm.tokenizer
    for row, answer in enumerate(["A red knife.", "A cup."]):
        labelled = batch["labels"][row][batch["response_mask"][row]]
        text = tok.decode(labelled, skip_special_tokens=True)
        assert text.strip() == answer
        # nothing before the answer is labelled; the image tokens and the question are masked
        first = int(batch["response_mask"][row].nonzero()[0])
        assert (batch["labels"][row, :first] == -100).all()
        assert not (batch["response_mask"][row] & (batch["input_ids"][row] == vlm.image_token_id)).any()
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def test_multi_turn_train_on_all(tiny_model):
    vlm = load_vlm(tiny_model("llava"))
    conv = _conv("What is in the image?", "A cup.") + [
        {"role": "user", "content": [{"type": "text", "text": "And the colour?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Blue."}]},
    ]
    images = [check_images(1)]
    last = vlm.encode_chat([conv], images, train_on="last")
    both = vlm.encode_chat([conv], images, train_on="all")
    decode = vlm.tokenizer.decode
    assert decode(last["labels"][0][last["response_mask"][0]], skip_special_tokens=True).strip() == "Blue."
    spans = decode(both["labels"][0][both["response_mask"][0]], skip_special_tokens=True)
    assert "A cup." in spans and "Blue." in spans and "colour" not in spans


def test_text_only_and_bad_conversations(tiny_model):
    vlm = load_vlm(tiny_model("qwen2_5_vl"))
    batch = vlm.encode_chat([_conv("How do I bake bread?", "Mix flour and water.", image=False)])
    assert batch["response_mask"].sum() > 0 and "mm_token_type_ids" in batch
    with pytest.raises(ModelLoadError, match="end with an assistant message"):
        vlm.encode_chat([[{"role": "user", "content": "hi"}]])
