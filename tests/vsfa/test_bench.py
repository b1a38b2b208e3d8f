"""`vsfa bench`: one table (measure, value, goal, result) and a JSON file; the shapes, not the timings."""

from __future__ import annotations

import json

import pytest

from tests.vsfa.eval.test_runner import _cli
from vsfa.perf import bench


def test_bench_quick_table_and_json(tmp_path, capsys, tiny_model, monkeypatch):
    monkeypatch.setattr(bench, "SWEEP_SCRIPT", tmp_path / "absent.py")  # the slot before 22a's script exists
    out = tmp_path / "bench.json"
    only = "capture,memory,sweep,probes,generate"
    code, err = _cli(capsys, "bench", "--quick", "--only", only, "--model", tiny_model(), "--out", out)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert {"cpu", "usable_cores", "load_avg", "torch", "date"} <= set(result["machine"])
    rows = result["measures"]
    assert [r["measure"] for r in rows][:4] == ["capture", "memory", "sweep", "probes"]
    names = [r["name"] for r in rows]
    assert "generation batch 1 (KV cache)" in names and "generation batch 4 (KV cache)" in names
    scored = next(r for r in rows if r["name"].startswith("generation + refusal score"))
    assert (
        scored["goal"] == 1.5 and scored["numbers"]["same_answers"] == 1.0
    )  # the score leaves answers alone
    for r in rows:
        assert {"name", "value", "goal", "unit", "status", "detail", "numbers"} <= set(r)
        assert r["status"] in ("pass", "FAIL", "info", "not measured")
    by = {r["measure"]: r for r in rows}
    assert by["sweep"]["status"] == "not measured" and by["sweep"]["goal"] == 1.2
    assert by["capture"]["goal"] == 1.10 and by["capture"]["value"] > 0
    assert by["memory"]["numbers"]["10N"]["n"] == 10 * by["memory"]["numbers"]["N"]["n"]
    assert by["probes"]["numbers"]["max_auroc_diff"] <= 0.005  # the toolkit's probes equal plain sklearn


def test_bench_prints_one_table(capsys, tiny_model):
    code = _cli(capsys, "bench", "--quick", "--only", "probes,sweep", "--model", tiny_model())[0]
    assert code == 0
    result = bench.run_bench(bench.BenchConfig(only=["probes"], quick=True))
    table = bench.format_bench(result).splitlines()
    assert table[0].startswith("machine: ")
    assert table[1].split()[:4] == ["measure", "value", "goal", "result"]
    assert table[2].startswith("probes, all layers x positions") and "<= 10 s" in table[2]


@pytest.mark.parametrize("bad", [["--only", "capture,warp"], ["--gen-batch-sizes", "0"]])
def test_bench_bad_options_exit_2(capsys, bad):
    code, err = _cli(capsys, "bench", "--quick", *bad)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.slow
def test_bench_quick_train_and_threads(tmp_path):
    """The measures that start training runs (child processes for the load measure)."""
    result = bench.run_bench(bench.BenchConfig(only=["train", "threads"], quick=True))
    rows = {r["name"]: r for r in result["measures"]}
    assert rows["vsfa train step / peft loop step"]["goal"] == 1.05
    load = [r for r in result["measures"] if r["measure"] == "threads"]
    assert [r["goal"] for r in load] == [2.0, None] and all(r["value"] > 0 for r in load)
