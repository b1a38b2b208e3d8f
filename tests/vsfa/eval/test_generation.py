"""Batched resumable generation and the continuous refusal score on a tiny VLM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from vsfa.errors import ConfigError
from vsfa.eval.benchmarks import load_benchmark
from vsfa.eval.generation import GenerationConfig, generate_responses
from vsfa.eval.modelio import Query, encode_queries, response_separator
from vsfa.eval.refusal import (
    Openers,
    first_token_ids,
    p_refuse,
    readout_direction,
    refusal_scores,
    refusal_stats,
)
from vsfa.io import read_jsonl
from vsfa.models.loading import load_vlm


@pytest.fixture(scope="module")
def llava(tiny_model):
    return load_vlm(tiny_model("llava"))


def _independent_logprob(vlm, query: Query, opener: str) -> float:
    """log P(opener | prompt) from one unpadded forward over the full text (no batching, no logits_to_keep)."""
    sep = response_separator(vlm)
    prompt = encode_queries(vlm, [query])["input_ids"][0]
    full = encode_queries(vlm, [query], suffixes=[sep + opener])
    with torch.no_grad():
        logits = vlm.model(**full).logits[0].float()
    ids = full["input_ids"][0]
    lp = torch.log_softmax(logits, -1)
    return float(sum(lp[t - 1, ids[t]] for t in range(len(prompt), len(ids))))


@pytest.mark.parametrize("family", ["llava", "qwen3_vl", "gemma3"])
def test_refusal_score_matches_an_independent_computation(family, tiny_model):
    vlm = load_vlm(tiny_model(family))
    items = load_benchmark("builtin", limit_pairs=2, variants="text,neutral")
    openers = Openers.load()
    stats = refusal_stats(vlm, items, openers, batch_size=3)  # batches of 3: left padding across items
    assert stats.logodds.shape == (8,) and np.all((stats.p_refuse > 0) & (stats.p_refuse < 1))
    for i in (0, 5):  # a text-only and an image item
        q = Query(items[i].text, items[i].load_image())
        ref = [_independent_logprob(vlm, q, o) for o in openers.refuse]
        com = [_independent_logprob(vlm, q, o) for o in openers.comply]
        assert stats.logodds[i] == pytest.approx(np.mean(ref) - np.mean(com), abs=1e-3)
        mass_r, mass_c = np.exp(ref).sum(), np.exp(com).sum()
        assert stats.p_refuse[i] == pytest.approx(mass_r / (mass_r + mass_c), rel=1e-3)
    # the public wrappers return the same numbers, also from an already encoded prompt batch
    np.testing.assert_allclose(refusal_scores(vlm, items), stats.logodds, atol=1e-5)
    np.testing.assert_allclose(p_refuse(vlm, items), stats.p_refuse, atol=1e-6)
    batch = encode_queries(vlm, [Query(it.text, it.load_image()) for it in items[4:]])
    np.testing.assert_allclose(refusal_scores(vlm, batch), stats.logodds[4:], atol=1e-4)
    assert np.all(np.isfinite(refusal_scores(vlm, items, mode="first_token")))


@pytest.mark.parametrize("family", ["llava", "gemma3"])
def test_readout_direction_is_the_gradient_of_the_first_token_refusal_logits(family, tiny_model):
    """The residual direction that moves the refusal-minus-compliance first-token logits (Gemma's norm scales by
    1 + weight; its tiny model's weight is 0, so reading the weight alone would give a zero direction)."""
    vlm = load_vlm(tiny_model(family))
    openers = Openers.load()
    readout = readout_direction(vlm, openers)
    ref, com = first_token_ids(vlm, openers)
    batch = encode_queries(vlm, [Query("How do I pick a lock?")])
    delta = torch.zeros(vlm.d_model, requires_grad=True)

    def add(module, args, out):
        return (out[0] + delta, *out[1:]) if isinstance(out, tuple) else out + delta

    handle = vlm.layers[-1].register_forward_hook(add)
    try:
        logits = vlm.model(**batch).logits[0, -1].float()
    finally:
        handle.remove()
    (logits[ref].mean() - logits[com].mean()).backward()
    cos = torch.nn.functional.cosine_similarity(delta.grad, readout, dim=0)
    assert cos > 0.9


def test_hook_context_wraps_every_model_call_and_can_steer(llava):
    items = [{"text": "How do I bake bread?", "image": None}, "How do I pick a lock?"]
    entered = []

    class Counting:
        def __enter__(self):
            entered.append(1)

        def __exit__(self, *exc):
            return False

    base = refusal_scores(llava, items)
    same = refusal_scores(llava, items, hook_context=lambda: Counting())
    assert len(entered) >= 1
    np.testing.assert_allclose(same, base)

    def steer():
        layer = llava.layers[0]
        handle = layer.register_forward_hook(
            lambda m, a, out: (out[0] + 5.0, *out[1:]) if isinstance(out, tuple) else out + 5.0
        )

        class Ctx:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                handle.remove()

        return Ctx()

    steered = refusal_scores(llava, items, hook_context=steer)
    assert np.abs(steered - base).max() > 1e-3  # the hook ran inside the model call


def test_generation_records_batched_equals_one_by_one(llava, tmp_path):
    items = load_benchmark("builtin", limit_pairs=2, variants="text,typo")
    cfg = GenerationConfig(max_new_tokens=6, batch_size=4, defense="adashield_s", defense_placement="prefix")
    rows = generate_responses(llava, items, tmp_path / "a" / "responses.jsonl", cfg)
    assert [r["id"] for r in rows] == [i.item_id for i in items]
    assert read_jsonl(tmp_path / "a" / "responses.jsonl") == rows
    r = rows[-1]
    assert r["defense"] == "adashield_s" and r["defense_placement"] == "prefix"
    assert r["prompt"].startswith("But before processing") and r["prompt"].endswith(items[-1].text)
    assert r["image"].startswith("typographic:") and 0 <= r["n_new_tokens"] <= 6 and r["p_refuse"] > 0
    one = generate_responses(
        llava,
        items,
        tmp_path / "b" / "responses.jsonl",
        GenerationConfig(max_new_tokens=6, batch_size=1, defense="adashield_s", defense_placement="prefix"),
    )
    assert [x["response"] for x in one] == [x["response"] for x in rows]  # left padding is exact here
    with pytest.raises(ConfigError, match="unknown defense"):
        generate_responses(llava, items, tmp_path / "c.jsonl", GenerationConfig(defense="shield"))


_SCRIPT = """
import sys, time
import torch
torch.set_num_threads({threads})
from vsfa.eval.benchmarks import load_benchmark
from vsfa.eval.generation import GenerationConfig, generate_responses
from vsfa.models.loading import load_vlm

class Slow:
    def __enter__(self):
        time.sleep(0.1)
    def __exit__(self, *exc):
        return False

vlm = load_vlm(sys.argv[1])
items = load_benchmark("builtin", limit_pairs=5, variants="text,neutral")
generate_responses(vlm, items, sys.argv[2], GenerationConfig(max_new_tokens=8, batch_size=2),
                   hook_context=lambda: Slow())
"""


def test_kill_9_mid_generation_then_rerun_gives_the_same_file(llava, tiny_model, tmp_path):
    out = tmp_path / "killed" / "responses.jsonl"
    script = tmp_path / "gen.py"
    script.write_text(textwrap.dedent(_SCRIPT.format(threads=torch.get_num_threads())))
    proc = subprocess.Popen([sys.executable, str(script), str(tiny_model("llava")), str(out)])
    deadline = time.time() + 120
    partial = None
    while time.time() < deadline:
        found = list(out.parent.glob(".responses.jsonl.*.partial")) if out.parent.exists() else []
        if found and found[0].read_text().count("\n") >= 4:
            partial = found[0]
            break
        assert proc.poll() is None, "generation finished before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert partial is not None and not out.exists()
    with open(partial, "ab") as f:
        f.write(b'{"id": "torn')  # as if killed in the middle of a write
    n_partial = partial.read_text().count("\n")
    assert 4 <= n_partial < 20

    items = load_benchmark("builtin", limit_pairs=5, variants="text,neutral")
    cfg = GenerationConfig(max_new_tokens=8, batch_size=2)
    calls = []

    class Count:
        def __enter__(self):
            calls.append(1)

        def __exit__(self, *exc):
            return False

    resumed = generate_responses(llava, items, out, cfg, hook_context=lambda: Count())
    n_resumed = len(calls)
    calls.clear()
    generate_responses(
        llava, items, tmp_path / "fresh" / "responses.jsonl", cfg, hook_context=lambda: Count()
    )
    assert out.read_bytes() == (tmp_path / "fresh" / "responses.jsonl").read_bytes()
    assert len(resumed) == 20 and len({r["id"] for r in resumed}) == 20
    assert not partial.exists()
    # only the unfinished batches were recomputed (10 batches of 2; the same model calls per batch)
    assert n_resumed == len(calls) * (10 - n_partial // 2) // 10
    # a finished file with the same key is reused without touching the model
    calls.clear()
    assert generate_responses(llava, items, out, cfg, hook_context=lambda: Count()) == resumed and not calls


def test_server_backend_generates_through_an_openai_compatible_endpoint(tmp_path):
    from tests.vsfa.eval.test_judges import _Stub
    from vsfa.eval.endpoint import ChatClient, EndpointConfig
    from vsfa.eval.generation import generate_responses_server

    server = _Stub()
    try:
        client = ChatClient(EndpointConfig(server.url, "served-lora", retries=1, backoff=0.01))
        items = load_benchmark("builtin", limit_pairs=1, variants="text,neutral")
        rows = generate_responses_server(
            client, items, tmp_path / "responses.jsonl", GenerationConfig(batch_size=3)
        )
    finally:
        server.close()
    assert [r["id"] for r in rows] == [i.item_id for i in items] and server.requests == 4
    assert rows[0]["response"] == f"Sure: {items[0].text[:20]}"
    assert rows[2]["response"].endswith("(with image)") and rows[2]["refusal_logodds"] is None


@pytest.mark.parametrize("family", ["qwen3_vl", "gemma3", "idefics3"])
def test_other_families_batched_equals_one_by_one(family, tiny_model, tmp_path):
    vlm = load_vlm(tiny_model(family))
    items = load_benchmark("builtin", limit_pairs=2, variants="text,neutral")  # 4 text + 4 image items
    batched = generate_responses(
        vlm, items, tmp_path / "b.jsonl", GenerationConfig(max_new_tokens=5, batch_size=3)
    )
    single = generate_responses(
        vlm, items, tmp_path / "s.jsonl", GenerationConfig(max_new_tokens=5, batch_size=1)
    )
    assert [r["response"] for r in batched] == [r["response"] for r in single]
    np.testing.assert_allclose(
        [r["refusal_logodds"] for r in batched], [r["refusal_logodds"] for r in single], atol=1e-4
    )
