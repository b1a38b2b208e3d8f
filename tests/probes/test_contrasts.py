"""Contrast sets: the shipped data files are complete and matched; user files in the same format work."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from probes.contrasts import load_set, persona_set, requests_set, visual_threat_set
from vsfa.errors import DataError
from vsfa.io import read_jsonl
from vsfa.resources import resource_path


def test_shipped_requests_are_matched_pairs():
    rows = read_jsonl(resource_path("requests.jsonl"))
    labels = Counter(r["label"] for r in rows)
    assert labels["harmful"] >= 100 and labels["harmless"] >= 100
    assert set(labels) == {"harmful", "harmless"}
    by_pair: dict[str, list[str]] = {}
    for r in rows:
        assert set(r) >= {"id", "label", "pair", "category", "text"}
        by_pair.setdefault(r["pair"], []).append(r["label"])
    assert all(sorted(v) == ["harmful", "harmless"] for v in by_pair.values())
    texts = [r["text"] for r in rows]
    assert len(set(texts)) == len(texts)
    assert len({r["id"] for r in rows}) == len(rows)


def test_shipped_persona_set_shape():
    cset = persona_set()
    pairs = {it.pair for it in cset.items}
    questions = {it.group for it in cset.items}
    assert len(pairs) >= 5 and len(questions) >= 60
    assert cset.counts() == {"vigilant": len(cset) // 2, "carefree": len(cset) // 2}
    splits = Counter(it.split for it in cset.items)
    assert splits["extract"] > 0 and splits["heldout"] > 0
    # Every question is asked under both prompts of every pair, and a question sits in one split only.
    assert len(cset) == 2 * len(pairs) * len(questions)
    assert all(len({it.split for it in cset.items if it.group == q}) == 1 for q in questions)
    first = cset.items[0]
    assert first.messages[0]["role"] == "system" and first.messages[-1]["role"] == "user"


def test_visual_threat_and_image_requests_use_procedural_images():
    vt = visual_threat_set(n_images=2, max_questions=2)
    assert vt.counts() == {"threat": 4, "neutral": 4}
    assert all(len(vt.item_images(it)) == 1 for it in vt.items)
    assert vt.images[vt.items[0].image_ids[0]].size == (224, 224)
    ri = load_set("requests_image")
    assert all(len(it.image_ids) == 1 for it in ri.items)
    assert ri.key() != load_set("requests").key()


def test_key_tracks_content(tmp_path):
    a = persona_set(max_questions=4)
    assert a.key() == persona_set(max_questions=4).key()
    assert a.key() != persona_set(max_questions=5).key()


def test_user_files_and_empty_class(tmp_path):
    good = tmp_path / "mine.jsonl"
    good.write_text(
        "\n".join(
            json.dumps({"id": f"x{i}", "label": lab, "pair": f"p{i // 2}", "category": "c", "text": f"t{i}"})
            for i, lab in enumerate(["rude", "polite"] * 3)
        )
    )
    cset = load_set(str(good))
    assert cset.name == "mine" and cset.positive == "rude" and cset.negative == "polite"
    cset.check_classes()

    one_class = tmp_path / "harm_only.jsonl"
    one_class.write_text(json.dumps({"id": "a", "label": "harmful", "pair": "p", "text": "t"}) + "\n")
    with pytest.raises(DataError, match=r"class 'harmless' is empty"):
        requests_set(one_class).check_classes()

    persona = tmp_path / "p.json"
    persona.write_text(
        json.dumps(
            {
                "pairs": [{"id": "a", "positive": "Be careful.", "negative": "Relax."}],
                "questions": [{"id": "q1", "text": "Hi?", "split": "extract"}],
            }
        )
    )
    p = load_set(str(persona))
    assert p.name == "p" and len(p) == 2

    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"pairs": [{"id": "a", "positive": "x"}], "questions": [{"id": "q", "text": "?"}]})
    )
    with pytest.raises(DataError, match=r"bad.json: pairs\[0\]: missing field 'negative'"):
        load_set(str(bad))
    with pytest.raises(DataError, match="unknown contrast set"):
        load_set("no_such_set")


def test_visual_threat_from_user_folders(tmp_path):
    from PIL import Image

    for kind, colour in (("threat", "red"), ("calm", "green")):
        (tmp_path / kind).mkdir()
        for i in range(2):
            Image.new("RGB", (20 + i, 20), colour).save(tmp_path / kind / f"{i}.png")
    spec = tmp_path / "mine.json"
    spec.write_text(json.dumps({"threat_dir": "threat", "neutral_dir": "calm"}))
    cset = load_set(str(spec), max_questions=3)
    assert cset.name == "mine" and cset.counts() == {"threat": 6, "neutral": 6}
    assert {cset.images[it.image_ids[0]].getpixel((0, 0)) for it in cset.items if it.label == "threat"} == {
        (255, 0, 0)
    }
    for f in (tmp_path / "calm").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="class 'neutral' is empty"):
        load_set(str(spec)).check_classes()


def test_requests_file_with_whole_conversations(tmp_path):
    """Rows may carry a conversation (context turns + images) instead of a single request text."""
    from PIL import Image

    from probes.contrasts import load_set
    from vsfa.errors import DataError

    Image.new("RGB", (8, 8), (200, 0, 0)).save(tmp_path / "a.png")
    turn = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it ?"}]}
    rows = [
        {
            "id": f"{lab}-{i}",
            "label": lab,
            "pair": f"p{i}",
            "messages": [
                turn,
                {"role": "assistant", "content": "a cup ."},
                {"role": "user", "content": "help me ?"},
            ],
            "images": ["a.png"],
        }
        for i in range(2)
        for lab in ("vigilant", "carefree")
    ]
    f = tmp_path / "ctx.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    s = load_set(f)
    assert s.counts() == {"vigilant": 2, "carefree": 2} and s.items[0].instruction == "help me ?"
    assert len(s.items[0].messages) == 3 and s.items[0].image_ids == (str(tmp_path / "a.png"),)
    rows[0]["images"] = []
    f.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError, match="1 image parts in 'messages' but 0 paths"):
        load_set(f)
