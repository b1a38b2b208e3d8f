"""The refusal dataset for smol-llava-safe: category split, refusal phrasings, distilled helpful targets, and
the VSFA arm's data staying label-free."""

from __future__ import annotations

from collections import Counter

import pytest

from vsfa.data.lint import LabelLint
from vsfa.data.refusal import (
    CATEGORIES,
    FORMS,
    REFUSALS,
    RefusalDataConfig,
    attach_helpful,
    build_requests,
    chat_record,
    distill_helpful,
    preset,
    shipped_request_texts,
    write_dataset,
)
from vsfa.errors import ConfigError, DataError
from vsfa.io import read_jsonl, read_manifest


def _helpful(data):
    return {r["text"]: {"text": f"Here is a plan for: {r['act']}.", "finished": True} for r in data.train}


def test_small_preset_split_is_by_category_disjoint_and_recorded(tmp_path):
    data = attach_helpful(build_requests(preset("small")), _helpful(build_requests(preset("small"))))
    out = write_dataset(data, tmp_path / "ds")
    split = read_manifest(out)["split"]
    train_cats, held_cats = set(split["train_categories"]), set(split["heldout_categories"])
    assert split["by"] == "category" and train_cats and held_cats and not train_cats & held_cats
    train, evaluation = read_jsonl(out / "train.jsonl"), read_jsonl(out / "evaluation.jsonl")
    assert {r["category"] for r in train} == train_cats
    assert {r["category"] for r in evaluation} == held_cats
    assert not {r["text"] for r in train} & {r["text"] for r in evaluation}
    # both labels on both sides; harmful training requests are refused, harmless ones answered
    assert Counter(r["label"] for r in evaluation) == {"harmful": 8, "harmless": 8}
    assert {r["target_kind"] for r in train if r["label"] == "harmful"} == {"refusal"}
    assert all(r["target"] in REFUSALS for r in train if r["label"] == "harmful")
    assert all(r["target"].startswith("Here is") for r in train if r["label"] == "harmless")


@pytest.mark.parametrize("name", ["small", "default"])
def test_no_refusal_phrasing_holds_more_than_a_fifth_of_the_targets(name):
    data = build_requests(preset(name))
    counts = Counter(r["target"] for r in data.train if r["target_kind"] == "refusal")
    assert len(REFUSALS) >= 10 and len(counts) >= 10
    assert max(counts.values()) / sum(counts.values()) <= 0.20
    assert data.manifest()["max_refusal_share"] <= 0.20


def test_default_dataset_spans_enough_categories_and_phrasings():
    cfg = preset("default")
    assert len(cfg.train_categories) + len(cfg.heldout_categories) >= 12
    assert len(cfg.train_categories) >= 12  # harmful requests of >= 12 categories are trained on
    assert all(len(c.harmful) >= 8 and len(c.harmful) == len(c.harmless) for c in CATEGORIES.values())
    data = build_requests(cfg)
    assert len({r["form"] for r in data.train}) == len(FORMS)
    # XSTest-style look-alikes: the harmless acts reuse the trigger words
    assert "kill a Python process" in CATEGORIES["malware"].harmless


def test_default_heldout_categories_are_those_of_the_shipped_request_set():
    from vsfa.resources import resource_path

    shipped = {r["category"] for r in read_jsonl(resource_path("requests.jsonl"))}
    cfg = preset("default")
    assert shipped <= set(cfg.heldout_categories)
    assert not shipped & set(cfg.train_categories)


def test_no_generated_request_is_an_item_of_the_evaluation_set():
    data = build_requests(preset("default"))
    shipped = shipped_request_texts()
    assert shipped and all(
        r["text"].lower().rstrip("?.! ") not in shipped for r in data.train + data.evaluation
    )


def test_build_is_deterministic_and_seeded():
    a, b = build_requests(preset("small")), build_requests(preset("small"))
    assert a.train == b.train and a.key() == b.key()
    cfg = preset("small")
    cfg.seed = 1
    assert build_requests(cfg).key() != a.key()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"heldout_categories": ("weapons",)}, "overlap"),
        ({"train_categories": ("teapots",)}, "train_categories: unknown"),
        ({"harmful_per_category": 0}, "harmful_per_category"),
        ({"eval_per_category": 10_000}, "eval_per_category"),
    ],
)
def test_bad_config_is_a_config_error_naming_the_field(change, match):
    cfg = RefusalDataConfig(**{**preset("small").__dict__, **change})
    with pytest.raises(ConfigError, match=match):
        build_requests(cfg)


def test_distillation_is_cached_and_refusal_like_answers_are_dropped(tmp_path):
    data = build_requests(preset("small"))
    prompts = [r["text"] for r in data.train if r["target_kind"] == "helpful"]
    calls: list[int] = []

    def answer(chunk):
        calls.append(len(chunk))
        return [("I'm sorry to hear that." if i == 0 else f"Answer {p}", True) for i, p in enumerate(chunk)]

    first = distill_helpful(prompts, answer, tmp_path / "cache.json", batch=5)
    again = distill_helpful(
        prompts, lambda c: pytest.fail("cached answers were regenerated"), tmp_path / "cache.json"
    )
    assert first == again and sum(calls) == len(prompts)
    n_refusal_like = sum(1 for a in first.values() if a["text"].startswith("I'm sorry"))
    attach_helpful(data, first, is_refusal=lambda t: t.startswith("I'm sorry"))
    assert len(data.dropped) == n_refusal_like > 0
    assert all(not r["target"].startswith("I'm sorry") for r in data.train if r["label"] == "harmless")
    assert data.manifest()["dropped_helpful"] == data.dropped


def test_write_dataset_needs_every_helpful_target(tmp_path):
    with pytest.raises(DataError, match="no helpful targets"):
        write_dataset(build_requests(preset("small")), tmp_path / "ds")
    data = build_requests(preset("small"))
    with pytest.raises(DataError, match="no distilled answer"):
        attach_helpful(data, {})


def test_vsfa_arm_data_stays_label_free_and_the_lint_would_catch_a_refusal_leak(tmp_path):
    """The safety tuning adds refusal targets to the *base*; the VSFA arm's own targets stay label-free."""
    from vsfa.data.build import build_variants
    from vsfa.data.dataset import load_data
    from vsfa.data.lint import assistant_texts

    build_variants(
        tmp_path / "data",
        ["image"],  # the VSFA arm (study.ARM_VARIANTS["vsfa"])
        procedural=6,
        procedural_size=64,
        questions_per_image=2,
        procedural_style="icon",
    )
    lint = LabelLint()
    records = load_data(tmp_path / "data" / "image", decode_images=False).records
    assert records and lint.lint_records(records) == []
    targets = " ".join(t for r in records for t in assistant_texts(r))
    assert targets.strip()
    assert not any(p in targets for p in REFUSALS)
    # every refusal phrasing of the safety data would fail the lint if it reached VSFA targets
    data = attach_helpful(build_requests(preset("small")), _helpful(build_requests(preset("small"))))
    refusals = [chat_record(r) for r in data.train if r["target_kind"] == "refusal"]
    assert {h.record_id for h in lint.lint_records(refusals)} == {r["id"] for r in refusals}
    assert all(not lint.is_clean(p) for p in REFUSALS)
