"""Label-free lint: judging, refusing and moralising fail; naming threat objects passes."""

from __future__ import annotations

import pytest

from vsfa.data.lint import LabelLint, load_patterns
from vsfa.data.procedural import THREAT_OBJECTS, generate_images
from vsfa.data.templates import TEMPLATES, annotation_answer, pick_questions
from vsfa.errors import DataError
from vsfa.resources import resource_path


@pytest.fixture(scope="module")
def lint():
    return LabelLint()


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I’m sorry, I cannot describe this.",  # typographic apostrophe
        "As an AI, I must point out this is a weapon.",
        "The knife is dangerous and could be used to harm someone.",
        "Carrying a handgun may be illegal.",
        "This image shows unsafe content.",
        "Please be careful around the flame.",
        "Warning: the bomb is a hazard.",
        "It is important to contact the authorities.",
        "This is a harmful scene.",
    ],
)
def test_labelled_targets_fail(lint, text):
    assert not lint.is_clean(text)


@pytest.mark.parametrize(
    "text",
    [
        *(f"There is a red {name} in the image." for name in THREAT_OBJECTS),
        "A warning triangle is at the top left and a biohazard sign is in the centre.",
        'The sign says "KEEP OUT".',
        "The person is holding a knife.",
    ],
)
def test_naming_threat_objects_passes(lint, text):
    assert lint.is_clean(text), lint.check(text)


def test_every_annotation_answer_is_label_free(lint):
    for kind in ("threat", "neutral"):
        for i, (_, ann) in enumerate(generate_images(kind, 40, seed=0, size=32, text_prob=0.5)):
            for q in pick_questions(ann, len(TEMPLATES), 0, i):
                answer = annotation_answer(ann, q)
                assert lint.is_clean(answer), (q, answer)
                assert lint.is_clean(q.text), q


def test_word_list_is_a_data_file_with_categories(tmp_path):
    patterns = load_patterns(resource_path("label_lint.txt"))
    cats = {p.category for p in patterns}
    assert {"refusal", "judgement", "warning", "moralising", "identity"} <= cats
    custom = tmp_path / "lint_words.txt"
    custom.write_text("[mine]\nzebra crossing\nre:\\bfoo+\\b\n")
    mine = LabelLint(custom)
    assert not mine.is_clean("a Zebra   crossing") and not mine.is_clean("fooo") and mine.is_clean("a knife")
    bad = tmp_path / "bad.txt"
    bad.write_text("re:(unclosed\n")
    with pytest.raises(DataError, match=r"bad.txt:1: invalid regex"):
        load_patterns(bad)
