"""The `sequence` refusal score from the prompt's KV cache equals the former one-forward-per-opener score, and
one prompt pass serves both the score and generation."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from vsfa.eval.benchmarks import load_benchmark
from vsfa.eval.generation import GenerationConfig, generate_batch, generate_scored
from vsfa.eval.modelio import as_queries, encode_queries
from vsfa.eval.refusal import MODES, Openers, _sequence_logprobs, opener_token_ids, refusal_stats
from vsfa.models.loading import load_vlm


def _items():
    items = load_benchmark("builtin", limit_pairs=2, variants="text,neutral")  # 4 text-only, 4 with an image
    return items[4:] + items[:4]  # image batches first: no state of an image prompt may leak into text ones


@pytest.mark.parametrize("family", ["llava", "qwen3_vl", "gemma3", "idefics3"])
def test_cached_opener_logprobs_equal_the_reforward_ones(family, tiny_model):
    vlm = load_vlm(tiny_model(family))
    openers = Openers.load()
    ids = [opener_token_ids(vlm, o) for o in (*openers.refuse, *openers.comply)]
    assert any(len(i) > 2 for i in ids) and any(len(i) == 2 for i in ids)  # short and long continuations
    queries = as_queries(_items())
    for part in (queries[:3], queries[3:4], queries[4:7]):  # padded image batch, one image, padded text batch
        batch = encode_queries(vlm, part)
        cached = _sequence_logprobs(vlm, batch, ids, None, prompt_cache=True)
        full = _sequence_logprobs(vlm, batch, ids, None, prompt_cache=False)
        assert cached.shape == (len(part), len(ids))
        np.testing.assert_allclose(cached, full, atol=1e-4, rtol=0)
    # the public score, both ways, over a mixed item list
    a = refusal_stats(vlm, _items(), openers, batch_size=3)
    b = refusal_stats(vlm, _items(), openers, batch_size=3, prompt_cache=False)
    np.testing.assert_allclose(a.logodds, b.logodds, atol=1e-4, rtol=0)
    np.testing.assert_allclose(a.p_refuse, b.p_refuse, atol=1e-6, rtol=0)


def _prompt_sized_forwards(vlm, fn) -> int:
    """How many model calls ``fn()`` makes over a whole prompt (more than 12 new tokens)."""
    calls = []

    def pre(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 12:
            calls.append(ids.shape[1])

    handle = vlm.hf_model.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        fn()
    finally:
        handle.remove()
    return len(calls)


def test_the_prompt_and_image_are_run_once_per_batch(tiny_model):
    vlm = load_vlm(tiny_model("llava"))
    items, openers = _items(), Openers.load()
    n_openers = len(openers.refuse) + len(openers.comply)
    cached = _prompt_sized_forwards(vlm, lambda: refusal_stats(vlm, items, openers, batch_size=4))
    full = _prompt_sized_forwards(
        vlm, lambda: refusal_stats(vlm, items, openers, batch_size=4, prompt_cache=False)
    )
    assert cached == 2 and full == 2 * n_openers  # two batches (image, text)


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_steering_hooks_act_on_both_paths_alike(positions, tiny_model):
    """A hook that tells the prompt pass from decoding steps by the number of positions (as
    ``analysis.interventions.steering_hook`` does) sees the openers as part of the prompt pass either way."""
    vlm = load_vlm(tiny_model("llava"))
    layer = vlm.hf_model.get_submodule(vlm.family.layers_path)[1]
    torch.manual_seed(0)
    vec = torch.randn(vlm.hf_model.config.text_config.hidden_size)

    def add(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        prefill = hidden.shape[1] > 1
        if (positions == "prompt" and not prefill) or (positions == "generated" and prefill):
            return None
        hidden = hidden + 2.0 * vec
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    @contextlib.contextmanager
    def steered():
        handle = layer.register_forward_hook(add)
        try:
            yield
        finally:
            handle.remove()

    items, openers = _items(), Openers.load()
    plain = refusal_stats(vlm, items, openers, batch_size=4)
    a = refusal_stats(vlm, items, openers, batch_size=4, hook_context=steered)
    b = refusal_stats(vlm, items, openers, batch_size=4, hook_context=steered, prompt_cache=False)
    np.testing.assert_allclose(a.logodds, b.logodds, atol=1e-4, rtol=0)
    assert (np.abs(a.logodds - plain.logodds).max() > 1e-3) == (positions != "generated")


@pytest.mark.parametrize("family", ["llava", "qwen3_vl", "gemma3", "idefics3"])
def test_one_prompt_pass_serves_score_and_answers(family, tiny_model):
    """``generate_scored`` (``vsfa eval``'s path) gives the answers of plain generation and the score of
    ``refusal_stats`` on padded text and image batches, and runs each prompt once where the family allows it."""
    vlm = load_vlm(tiny_model(family))
    openers = Openers.load()
    queries = as_queries(_items())
    for mode in MODES:
        config = GenerationConfig(max_new_tokens=6, refusal_mode=mode)
        for part in (queries[:3], queries[4:7]):
            scored = generate_scored(vlm, part, config, openers)
            plain = generate_batch(vlm, part, config)
            stats = refusal_stats(vlm, part, openers, mode=mode)
            assert [r["response"] for r in scored] == [r["response"] for r in plain]
            np.testing.assert_allclose(
                [r["refusal_logodds"] for r in scored], stats.logodds, atol=1e-4, rtol=0
            )
    if family == "llava":
        config = GenerationConfig(max_new_tokens=6)
        calls = _prompt_sized_forwards(vlm, lambda: generate_scored(vlm, queries[4:7], config, openers))
        assert calls == 1  # the score's prompt pass; generate goes on from its cache
