"""`vsfa eval` end to end on a tiny model: run folder with checkpoints -> responses, judged rows, metrics, table."""

from __future__ import annotations

import json
import logging

import torch

from tests.vsfa.eval.test_loaders import make_figstep
from vsfa.io import model_fingerprint, read_jsonl


def _cli(capsys, *args) -> tuple[int, str]:
    """Run ``vsfa`` in this process (fast): exit code and stderr."""
    import sys

    from vsfa.cli import main

    argv, sys.argv = sys.argv, ["vsfa", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = argv
    return code, capsys.readouterr().err


def _make_run(tmp_path, base):
    from peft import LoraConfig, get_peft_model

    from vsfa.models.loading import load_vlm

    run = tmp_path / "run"
    ck = run / "checkpoints"
    manifest = {"base_model": str(base), "base_model_fingerprint": model_fingerprint(base)}
    (ck / "step-000000").mkdir(parents=True)
    (ck / "step-000000" / "manifest.json").write_text(json.dumps({**manifest, "step": 0}))
    vlm = load_vlm(base)
    torch.manual_seed(0)
    model = get_peft_model(vlm.hf_model, LoraConfig(r=2, target_modules=vlm.family.lora_target_regex))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(ck / "step-000005")
    (ck / "step-000005" / "manifest.json").write_text(json.dumps({**manifest, "step": 5}))
    (ck / "step-000010").mkdir()  # interrupted: no manifest, must be skipped
    (run / "manifest.json").write_text(json.dumps({**manifest, "kind": "vsfa-run"}))
    return run


def test_eval_run_end_to_end_rerun_and_added_judge(tmp_path, tiny_model, capsys, caplog):
    base = tiny_model("llava")
    run = _make_run(tmp_path, base)
    figstep = make_figstep(tmp_path / "FigStep")
    args = [
        "eval",
        "--run",
        run,
        "--bench",
        "builtin",
        "--bench-opt",
        "builtin.limit_pairs=2",
        "--bench-opt",
        "builtin.variants=text,typo",
        "--bench",
        f"figstep_tiny={figstep}",
        "--judge",
        "keyword",
        "--judge",
        "keyword:gcg",
        "--max-new-tokens",
        "6",
        "--batch-size",
        "4",
        "--quiet",
    ]
    code, err = _cli(capsys, *args)
    assert code == 0, err
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("skipped" in m and "step-000010" in m for m in warned)  # said even with --quiet
    ev = run / "eval"
    for ckpt in ("step-000000", "step-000005"):
        for bench, n in (("builtin", 8), ("figstep_tiny", 1)):
            folder = ev / ckpt / bench
            assert {p.name for p in folder.iterdir() if not p.name.startswith(".")} == {
                "responses.jsonl",
                "judged.jsonl",
                "metrics.json",
                "manifest.json",
            }
            assert len(read_jsonl(folder / "responses.jsonl")) == n
            assert len(read_jsonl(folder / "judged.jsonl")) == 2 * n
    m0 = json.loads((ev / "step-000000/builtin/metrics.json").read_text())
    m5 = json.loads((ev / "step-000005/builtin/metrics.json").read_text())
    assert set(m0["judges"]) == {"keyword:refusal_direction", "keyword:gcg"}
    assert {"value", "lo", "hi", "n"} <= set(m0["judges"]["keyword:gcg"]["asr"])
    assert m0["judges"]["keyword:gcg"]["over_refusal"]["n"] == 4
    lo0 = m0["refusal_score"]["by_label"]["harmful"]["logodds"]["value"]
    lo5 = m5["refusal_score"]["by_label"]["harmful"]["logodds"]["value"]
    assert lo0 != lo5  # the adapter was really applied
    man5 = json.loads((ev / "step-000005/builtin/manifest.json").read_text())
    assert man5["adapter"].endswith("step-000005") and man5["model_fingerprint"] == model_fingerprint(base)
    table = (ev / "table.csv").read_text()
    assert "step-000000,0,builtin,keyword:gcg,asr" in table and "step-000005,5,figstep_tiny" in table

    # rerun with one more judge: answers are reused byte for byte, old judges kept, the new one added
    before = (ev / "step-000005/builtin/responses.jsonl").read_bytes()
    code, err = _cli(capsys, *args, "--judge", "keyword:xstest")
    assert code == 0, err
    assert (ev / "step-000005/builtin/responses.jsonl").read_bytes() == before
    judges = {r["judge"] for r in read_jsonl(ev / "step-000005/builtin/judged.jsonl")}
    assert judges == {"keyword:refusal_direction", "keyword:gcg", "keyword:xstest"}

    # one checkpoint alone: the base model comes from its manifest, the eval folder from the run layout
    one = ["eval", "--checkpoint", run / "checkpoints" / "step-000005", "--bench", "builtin"]
    code, err = _cli(
        capsys, *one, *args[5:9], "--judge", "keyword", "--max-new-tokens", "6", "--batch-size", "4"
    )
    assert code == 0, err
    assert (ev / "step-000005/builtin/responses.jsonl").read_bytes() == before


def test_eval_bad_input_is_one_line_and_nothing_marked_judged(tmp_path, tiny_model, capsys):
    import socket

    code, err = _cli(
        capsys,
        "eval",
        "--model",
        tiny_model("llava"),
        "--out",
        tmp_path / "ev",
        "--bench",
        f"figstep={tmp_path / 'missing'}",
    )
    assert code == 2 and err.strip().count("\n") == 0
    assert err.startswith("error: ") and "missing" in err
    code, err = _cli(
        capsys,
        "eval",
        "--model",
        tiny_model("llava"),
        "--out",
        tmp_path / "ev",
        "--bench",
        "builtin",
        "--bench-opt",
        "builtin.variants=text,bogus",
    )
    assert code == 2 and "unknown built-in variant 'bogus'" in err
    code, err = _cli(capsys, "eval", "--checkpoint", tmp_path / "nope", "--bench", "builtin")
    assert code == 2 and "checkpoint folder not found" in err

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, err = _cli(
        capsys,
        "eval",
        "--model",
        tiny_model("llava"),
        "--out",
        tmp_path / "ev",
        "--bench",
        "builtin",
        "--bench-opt",
        "builtin.limit_pairs=1",
        "--bench-opt",
        "builtin.variants=text",
        "--judge",
        "keyword",
        "--judge",
        "llm",
        "--judge-url",
        f"http://127.0.0.1:{port}/v1",
        "--judge-model",
        "m",
        "--max-new-tokens",
        "4",
        "--quiet",
    )
    assert code == 2 and "unreachable" in err, err
    folder = tmp_path / "ev" / "base" / "builtin"
    assert (folder / "responses.jsonl").is_file()  # the answers are kept for the rerun
    assert not (folder / "judged.jsonl").exists() and not (folder / "manifest.json").exists()
