"""Procedural scenes: deterministic, exactly annotated, matched layouts across kinds, neutral descriptions."""

from __future__ import annotations

import numpy as np
import pytest

from vsfa.data.lint import LabelLint
from vsfa.data.procedural import (
    NEUTRAL_OBJECTS,
    THREAT_OBJECTS,
    describe,
    generate_images,
    render_scene,
)
from vsfa.errors import DataError


def test_deterministic_by_seed_and_distinct_across_seeds():
    a, ann_a = render_scene("threat", 7, size=64)
    b, ann_b = render_scene("threat", 7, size=64)
    c, _ = render_scene("threat", 8, size=64)
    assert a.tobytes() == b.tobytes() and ann_a == ann_b
    assert a.tobytes() != c.tobytes()
    assert a.size == (64, 64) and a.mode == "RGB"


def test_annotations_are_exact():
    for seed in range(40):
        img, ann = render_scene("threat", seed, size=96, text="KEEP OUT" if seed % 3 == 0 else None)
        objs = ann["objects"]
        assert ann["count"] == len(objs) >= 1
        assert objs[0]["threat"] and objs[0]["name"] in THREAT_OBJECTS
        assert len({o["position"] for o in objs}) == len(objs)  # one object per grid cell
        assert len({o["name"] for o in objs}) == len(objs)
        bg = np.asarray(img).astype(int)
        for o in objs:
            x0, y0, x1, y1 = o["bbox"]
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
            assert o["threat"] == (o["name"] in THREAT_OBJECTS)
            # the icon was drawn in its box: its colour is there
            from vsfa.data.procedural import OBJECT_COLOURS

            patch = bg[y0:y1, x0:x1].reshape(-1, 3)
            assert (np.abs(patch - np.array(OBJECT_COLOURS[o["colour"]])).sum(1) == 0).any()
        if seed % 3 == 0:
            assert ann["text"] == "KEEP OUT"
            assert all(o["position"].split()[0] != "bottom" for o in objs)  # the sign has the bottom row


def test_threat_and_neutral_share_layouts():
    threat = generate_images("threat", 12, seed=3, size=48, text_prob=0.5)
    neutral = generate_images("neutral", 12, seed=3, size=48, text_prob=0.5)
    for (_, t), (_, n) in zip(threat, neutral, strict=True):
        assert [o["position"] for o in t["objects"]] == [o["position"] for o in n["objects"]]
        assert [o["colour"] for o in t["objects"]] == [o["colour"] for o in n["objects"]]
        assert t["background"] == n["background"] and (t["text"] is None) == (n["text"] is None)
        assert all(o["name"] in NEUTRAL_OBJECTS for o in n["objects"])
        assert any(o["threat"] for o in t["objects"])


def test_describe_is_neutral_and_complete():
    lint = LabelLint()
    for seed in range(60):
        for kind in ("threat", "neutral"):
            _, ann = render_scene(kind, seed, size=32, text="HIGH VOLTAGE" if seed % 2 else None)
            sentence = describe(ann)
            assert lint.is_clean(sentence), sentence
            for o in ann["objects"]:
                assert o["name"] in sentence and o["colour"] in sentence
            assert sentence.endswith(".")
    assert "the sign" not in describe(render_scene("threat", 1, size=32)[1]).lower()


def test_bad_arguments():
    with pytest.raises(DataError, match="kind"):
        render_scene("weapon", 0)
    with pytest.raises(DataError, match="at least 1"):
        generate_images("threat", 0)
    with pytest.raises(DataError, match="sign text"):
        render_scene("threat", 0, text="  ")


def test_icon_sets_are_form_matched_and_name_one_object(tmp_path):
    from vsfa.data.images import write_procedural_set
    from vsfa.io import read_jsonl

    anns = {}
    for kind in ("threat", "neutral"):
        folder = write_procedural_set(kind, 12, tmp_path / kind, seed=3, size=64, style="icon")
        anns[kind] = read_jsonl(folder / "annotations.jsonl")
    for t, n in zip(anns["threat"], anns["neutral"], strict=True):
        assert t["count"] == n["count"] == 1 and t["background"] == n["background"]
        assert t["objects"][0]["threat"] and not n["objects"][0]["threat"]
        assert t["objects"][0]["bbox"] == n["objects"][0]["bbox"]
    assert len({a["objects"][0]["name"] for a in anns["threat"]}) == 10  # every threat object appears
