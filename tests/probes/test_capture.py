"""Activation capture: positions from the template, batched == one-by-one, streamed store, cache, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from probes.capture import Capturer, CaptureSpec, ModelSpec, capture_set, plan_for
from probes.contrasts import (
    ContrastSet,
    PromptItem,
    persona_set,
    system_message,
    user_message,
    visual_threat_set,
)
from probes.hooked import HookedVLM, hook_name
from probes.store import open_store
from vsfa.errors import ArtifactError, DataError
from vsfa.models.loading import load_vlm

# What each tiny family's chat template writes after the user's instruction (the code derives it by rendering).
SUFFIX = {
    "llava": " ASSISTANT:",
    "qwen2_vl": "<|im_end|>\n<|im_start|>assistant\n",
    "gemma3": "<end_of_turn>\n<start_of_turn>model\n",
    "idefics3": "<end_of_utterance>\nAssistant:",
}


@pytest.fixture(scope="module")
def llava(tiny_model):
    return HookedVLM(load_vlm(tiny_model("llava")), backend="torch")


def small_persona(n_questions: int = 3) -> ContrastSet:
    return persona_set(max_questions=n_questions)


@pytest.mark.parametrize("family", list(SUFFIX))
def test_post_instruction_tokens_are_the_template_suffix(family, tiny_model):
    vlm = load_vlm(tiny_model(family))
    cset = small_persona(2)
    texts = [vlm.render(list(it.messages)) for it in cset.items]
    plan = plan_for(vlm, cset, ["eoi"], texts)
    batch = vlm.encode(texts[:3])
    w = plan.weights(batch["attention_mask"], batch["input_ids"])
    picked = [int(batch["input_ids"][0][w[0, p].argmax()]) for p in range(len(plan.names))]
    assert plan.names[-1] == "eoi-1"
    assert vlm.tokenizer.decode(picked) == SUFFIX[family]


def test_batched_equals_one_by_one_text(llava, tmp_path):
    cset = small_persona(3)
    spec = CaptureSpec(positions=("last", "eoi_mean", "prompt_mean"))
    batched = capture_set(llava, cset, tmp_path / "b", spec, batch_size=5, progress=False)
    single = capture_set(llava, cset, tmp_path / "s", spec, batch_size=1, progress=False)
    assert batched.positions == ["last", "eoi_mean", "prompt_mean"]
    for h in batched.hooks:
        for p in batched.positions:
            assert torch.allclose(batched.load(h, p), single.load(h, p), atol=1e-5, rtol=1e-4), (h, p)
    # 'last' is exactly the hooked model's activation at the last token of the unpadded prompt.
    it = cset.items[4]
    batch = llava.vlm.encode([llava.vlm.render(list(it.messages))])
    _, cache = llava.run_with_cache(batch, [hook_name(1)])
    assert torch.allclose(batched.load(hook_name(1), "last")[4], cache[hook_name(1)][0, -1], atol=1e-6)


def test_batched_equals_one_by_one_with_images(tiny_model, tmp_path):
    hooked = HookedVLM(load_vlm(tiny_model("qwen2_vl")), backend="torch")
    cset = visual_threat_set(n_images=2, max_questions=2, size=32)
    spec = CaptureSpec(positions=("last", "image_mean"))
    batched = capture_set(hooked, cset, tmp_path / "b", spec, batch_size=3, progress=False)
    single = capture_set(hooked, cset, tmp_path / "s", spec, batch_size=1, progress=False)
    for h in batched.hooks:
        for p in batched.positions:
            assert torch.allclose(batched.load(h, p), single.load(h, p), atol=1e-5, rtol=1e-4), (h, p)


def test_store_is_sharded_indexed_and_cached(tiny_model, tmp_path):
    cset = small_persona(3)
    spec = CaptureSpec(positions=("last",), layers=(1,))
    cap = Capturer(
        ModelSpec(str(tiny_model("llava"))), tmp_path / "acts", batch_size=4, shard_items=7, progress=False
    )
    store = cap.capture(cset, spec)
    assert (cap.hits, cap.misses) == (0, 1)
    assert len(store.manifest["shards"]) == math.ceil(len(cset) / 7)
    assert store.hooks == [hook_name(1)] and store.n == len(cset)
    assert store.column("id") == [it.id for it in cset.items]
    assert set(store.index[0]) >= {"id", "label", "group", "set"}
    x = store.load(hook_name(1), "last")
    assert x.shape == (len(cset), 64)
    shards = list(store.iter_shards())
    assert torch.equal(torch.cat([t[hook_name(1)][:, 0] for _, t in shards]), x)

    again = Capturer(ModelSpec(str(tiny_model("llava"))), tmp_path / "acts", progress=False)
    assert again.capture(cset, spec).folder == store.folder
    assert (again.hits, again.misses) == (1, 0) and again._hooked is None  # model never loaded
    other = again.capture(cset, CaptureSpec(positions=("prompt_mean",), layers=(1,)))
    assert other.folder != store.folder and again.misses == 1
    seeded = Capturer(ModelSpec(str(tiny_model("llava", seed=1))), tmp_path / "acts", progress=False)
    assert seeded.locate(cset, spec)[1] != cap.locate(cset, spec)[1]


def test_response_mean_is_mean_over_teacher_forced_response(llava, tmp_path):
    items = [
        PromptItem(
            id=f"r{i}",
            label="a" if i % 2 else "b",
            group=str(i),
            messages=(system_message("You are a cautious assistant."), user_message(q)),
            instruction=q,
            response=r,
        )
        for i, (q, r) in enumerate(
            [("What is in the image?", "a red cup"), ("How do I bake bread?", "Sure!")]
        )
    ]
    cset = ContrastSet("resp", "a", "b", items)
    store = capture_set(
        llava, cset, tmp_path / "r", CaptureSpec(positions=("response_mean", "last")), progress=False
    )
    conv = [
        *items[0].messages,
        {"role": "assistant", "content": [{"type": "text", "text": items[0].response}]},
    ]
    batch = llava.vlm.encode_chat([conv])
    mask = batch.pop("response_mask")[0]
    batch.pop("labels")
    _, cache = llava.run_with_cache(batch, [hook_name(0)])
    full = cache[hook_name(0)][0]
    assert torch.allclose(store.load(hook_name(0), "response_mean")[0], full[mask].mean(0), atol=1e-5)
    first = int(mask.nonzero()[0, 0])
    assert torch.allclose(store.load(hook_name(0), "last")[0], full[first - 1], atol=1e-6)
    with pytest.raises(DataError, match="has no response"):
        capture_set(llava, small_persona(1), tmp_path / "x", CaptureSpec(positions=("response_mean",)))
    assert not (tmp_path / "x").exists()


def test_early_stop_leaves_the_model_clean(llava, tmp_path):
    cset = small_persona(1)
    capture_set(llava, cset, tmp_path / "a", CaptureSpec(layers=(0,)), progress=False)
    for layer in llava.vlm.layers:
        assert not layer._forward_hooks and not layer._forward_pre_hooks
    batch = llava.vlm.encode(["USER: hello ASSISTANT:"])
    with torch.no_grad():
        assert torch.equal(llava.forward(batch), llava.vlm.model(**batch).logits)


def test_bad_input_nothing_half_written(tiny_model, tmp_path):
    vlm = load_vlm(tiny_model("llava"))
    hooked = HookedVLM(vlm, backend="torch")
    cset = small_persona(1)
    with pytest.raises(DataError, match="'image_mean': item .* has no image tokens"):
        capture_set(hooked, cset, tmp_path / "img", CaptureSpec(positions=("image_mean",)), progress=False)
    with pytest.raises(DataError, match="unknown position 'middle'"):
        capture_set(hooked, cset, tmp_path / "pos", CaptureSpec(positions=("middle",)), progress=False)
    with pytest.raises(DataError, match="layer 5 out of range"):
        capture_set(hooked, cset, tmp_path / "lay", CaptureSpec(layers=(5,)), progress=False)
    empty = ContrastSet("empty", "a", "b", [], source="test")
    with pytest.raises(DataError, match="has no items"):
        capture_set(hooked, empty, tmp_path / "empty")
    with torch.no_grad():
        vlm.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    with pytest.raises(DataError, match=r"non-finite activations at blocks\.1\.hook_resid_post"):
        capture_set(hooked, cset, tmp_path / "nan", CaptureSpec(), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no folder, no temp leftovers


def test_store_without_manifest_is_rejected(llava, tmp_path):
    store = capture_set(llava, small_persona(1), tmp_path / "s", CaptureSpec(), progress=False)
    (store.folder / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        open_store(store.folder)


def test_bridge_backend_gives_the_same_store(llava, tiny_model, tmp_path):
    """The early stop (an exception from the last hook) also works through TransformerBridge hooks."""
    bridge = HookedVLM(load_vlm(tiny_model("llava")), backend="bridge")
    cset = small_persona(1)
    spec = CaptureSpec(positions=("last", "prompt_mean"), layers=(0,))
    a = capture_set(bridge, cset, tmp_path / "bridge", spec, progress=False)
    b = capture_set(llava, cset, tmp_path / "torch", spec, progress=False)
    for p in a.positions:
        assert torch.allclose(a.load(hook_name(0), p), b.load(hook_name(0), p), atol=1e-5)
    batch = bridge.vlm.encode(["USER: hello ASSISTANT:"])
    _, cache = bridge.run_with_cache(batch, [hook_name(1)])  # hooks work again after the stopped forward
    assert cache[hook_name(1)].shape[-1] == 64
