"""Metrics: ASR / refusal / over-refusal per judge with CIs, MM-SafetyBench special scenarios apart, MM-Vet."""

from __future__ import annotations

import json
import logging

import pytest

from vsfa.errors import ArtifactError
from vsfa.eval.metrics import (
    checkpoint_step,
    compute_metrics,
    estimate,
    read_metrics,
    table_rows,
    write_table,
)
from vsfa.io import sha256_file, write_manifest


def _resp(i, label, category="c", variant="v", bench="builtin", extra=None, logodds=0.0):
    return {
        "id": f"i{i}",
        "label": label,
        "category": category,
        "variant": variant,
        "benchmark": bench,
        "extra": extra or {},
        "refusal_logodds": logodds,
        "p_refuse": 0.5,
    }


def _judged(rid, judge, refused=None, unsafe=None, score=None):
    return {
        "id": rid,
        "judge": judge,
        "judge_version": "1",
        "prompt_hash": "h" + judge,
        "refused": refused,
        "unsafe": unsafe,
        "score": score,
    }


def test_asr_refusal_over_refusal_with_cis_and_judges_apart():
    responses = [_resp(i, "harmful", category="a" if i < 6 else "b", logodds=1.0) for i in range(10)]
    responses += [_resp(10 + i, "benign", logodds=-1.0) for i in range(5)]
    refused_h = [True] * 3 + [False] * 7  # 3 of 10 harmful refused
    refused_b = [True] + [False] * 4  # 1 of 5 benign refused
    judged = [
        _judged(r["id"], "keyword:x", refused=f, unsafe=not f)
        for r, f in zip(responses, refused_h + refused_b, strict=True)
    ]
    judged += [_judged(r["id"], "llm:m", unsafe=(i % 2 == 0)) for i, r in enumerate(responses)]
    m = compute_metrics(responses, judged, {"checkpoint": "step-000010", "benchmark": "builtin"})
    kw, llm = m["judges"]["keyword:x"], m["judges"]["llm:m"]
    assert kw["asr"]["value"] == pytest.approx(0.7) and kw["refusal_rate"]["value"] == pytest.approx(0.3)
    assert kw["over_refusal"]["value"] == pytest.approx(0.2) and kw["over_refusal"]["n"] == 5
    for est in (kw["asr"], kw["refusal_rate"], kw["over_refusal"]):
        assert 0.0 <= est["lo"] <= est["value"] <= est["hi"] <= 1.0 and est["lo"] < est["hi"]
    assert kw["by_category"]["a"]["refusal_rate"]["value"] == pytest.approx(0.5)  # 3 of the 6 in "a"
    assert (
        llm["asr"]["value"] == pytest.approx(0.5) and "refusal_rate" not in llm
    )  # the LLM judge did not say
    assert kw["prompt_hash"] == "hkeyword:x" and llm["prompt_hash"] == "hllm:m"
    assert m["refusal_score"]["by_label"]["harmful"]["logodds"]["value"] == 1.0
    assert m["checkpoint"] == "step-000010" and m["ci"]["level"] == 0.95


def test_a_judge_must_cover_every_item():
    responses = [_resp(0, "harmful"), _resp(1, "harmful")]
    with pytest.raises(ArtifactError, match="covers 1 of 2 items"):
        compute_metrics(responses, [_judged("i0", "keyword:x", refused=True, unsafe=False)])


def test_mmsafety_special_scenarios_reported_apart():
    rows, judged = [], []
    for i, (scen, unsafe) in enumerate(
        [("01-Illegal_Activitiy", False)] * 4 + [("12-Health_Consultation", True)] * 4
    ):
        rows.append(
            _resp(
                i,
                "harmful",
                category=scen,
                variant="SD" if i % 2 else "TYPO",
                bench="mmsafety",
                extra={"scenario": scen},
            )
        )
        judged.append(_judged(f"i{i}", "llm:m", unsafe=unsafe))
    block = compute_metrics(rows, judged)["judges"]["llm:m"]
    mm = block["mmsafety"]
    assert mm["general_01-07_09"]["asr"]["value"] == 0.0 and mm["special_08_10-13"]["asr"]["value"] == 1.0
    # never pooled: a 0.5 "asr" over both would mix two meanings of unsafe
    assert "asr" not in block and all("asr" not in b for b in block["by_variant"].values())
    assert "asr" not in block["by_label"]["harmful"] and block["by_category"]["01-Illegal_Activitiy"]["asr"]
    assert mm["by_scenario_variant"]["12-Health_Consultation/SD"]["asr"]["n"] == 2


def test_mmvet_score_total_and_per_capability():
    caps = [["rec", "ocr"], ["rec"], ["math"]]
    rows = [_resp(i, "benign", bench="mmvet", extra={"capability": c}) for i, c in enumerate(caps)]
    judged = [_judged(f"i{i}", "llm:m", score=s) for i, s in enumerate([1.0, 0.5, 0.0])]
    mv = compute_metrics(rows, judged)["judges"]["llm:m"]["mmvet"]
    assert mv["total"]["value"] == pytest.approx(50.0)
    assert mv["by_capability"]["rec"]["value"] == pytest.approx(75.0)
    assert mv["by_capability"]["math"]["value"] == 0.0


def test_table_across_checkpoints(tmp_path):
    responses = [_resp(i, "harmful") for i in range(4)]
    for step, n_refused in ((0, 0), (100, 2), (20, 1)):
        judged = [
            _judged(f"i{i}", "keyword:x", refused=i < n_refused, unsafe=i >= n_refused) for i in range(4)
        ]
        folder = tmp_path / f"step-{step:06d}" / "builtin"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(compute_metrics(responses, judged)))
        write_manifest(folder, {"files": {"metrics.json": sha256_file(folder / "metrics.json")}})
    rows = [r for r in table_rows(tmp_path) if r["metric"] == "refusal_rate"]
    assert [(r["step"], r["value"]) for r in rows] == [(0, 0.0), (20, 0.25), (100, 0.5)]
    csv = write_table(tmp_path).read_text().splitlines()
    assert csv[0] == "checkpoint,step,benchmark,judge,metric,value,lo,hi,n" and len(csv) > 3
    assert checkpoint_step("base") == 0 and checkpoint_step("final") is None
    with pytest.raises(ArtifactError, match="no complete <checkpoint>/<benchmark>/ results"):
        write_table(tmp_path / "empty")


def test_table_skips_stale_metrics(tmp_path, caplog):
    """metrics.json without its manifest (an interrupted rerun) or not the one it recorded is never a result."""
    responses = [_resp(i, "harmful") for i in range(4)]
    judged = [_judged(f"i{i}", "keyword:x", refused=i < 2, unsafe=i >= 2) for i in range(4)]
    text = json.dumps(compute_metrics(responses, judged))
    good, orphan, edited = (tmp_path / f"step-{s:06d}" / "builtin" for s in (0, 10, 20))
    for folder in (good, orphan, edited):
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(text)
    write_manifest(good, {"files": {"metrics.json": sha256_file(good / "metrics.json")}})
    write_manifest(edited, {"files": {"metrics.json": "0" * 64}})
    with caplog.at_level(logging.WARNING, logger="vsfa.eval.metrics"):
        rows = table_rows(tmp_path)
    assert {r["step"] for r in rows} == {0}
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 2 and "no manifest.json" in notes[0] and "not the metrics" in notes[1]
    with pytest.raises(ArtifactError, match="no manifest.json"):
        read_metrics(orphan)


def test_benign_set_has_no_unsafe_rate():
    """On a benign set 'unsafe' is just 'complied': no unsafe_rate that reads like an attack rate."""
    rows = [_resp(i, "benign") for i in range(4)]
    judged = [_judged(f"i{i}", "keyword:x", refused=i == 0, unsafe=i != 0) for i in range(4)]
    kw = compute_metrics(rows, judged)["judges"]["keyword:x"]
    assert "unsafe_rate" not in kw and "asr" not in kw
    assert kw["over_refusal"]["value"] == pytest.approx(0.25)


def test_rates_get_the_wilson_interval_and_scores_a_bootstrap():
    rate = estimate([True] + [False] * 9)  # 1 refusal in 10: a bootstrap would give [0, 0.3] or wider
    assert (round(rate["lo"], 3), round(rate["hi"], 3)) == (0.018, 0.404)
    assert estimate([0] * 20)["hi"] > 0.1  # no refusal in 20 items is not a certainty of none
    score = estimate([0.2, 0.5, 0.9, 0.4, 0.7])
    assert score["lo"] < 0.54 < score["hi"] and score["hi"] <= 0.9
