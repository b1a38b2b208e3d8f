"""Regression tests of the hardening issue (#20): stale results, overwrite policy, content keys, recorded paths,
incomplete runs. Bad inputs that only need an error line are in test_bad_inputs.py; locks in test_locks.py."""

from __future__ import annotations

import json
import logging
import os
import socket

import pytest

from tests.vsfa.eval.test_loaders import make_figstep, make_mmsafety
from tests.vsfa.eval.test_runner import _cli, _make_run
from vsfa.errors import ArtifactError
from vsfa.io import model_fingerprint, read_jsonl, recorded_path, write_manifest

SMALL = [
    "--bench-opt",
    "builtin.limit_pairs=1",
    "--bench-opt",
    "builtin.variants=text",
    "--max-new-tokens",
    "4",
    "--quiet",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------- 2. stale results
def test_interrupted_rerun_leaves_no_stale_metrics(tmp_path, tiny_model, capsys):
    ev = tmp_path / "ev"
    args = ["eval", "--model", tiny_model("llava"), "--out", ev, "--bench", "builtin", *SMALL]
    code, err = _cli(capsys, *args)
    assert code == 0, err
    folder = ev / "base" / "builtin"
    assert (folder / "metrics.json").is_file() and (folder / "manifest.json").is_file()
    # a rerun with other settings dies after generating (its judge endpoint is down)
    down = ["--judge", "llm", "--judge-url", f"http://127.0.0.1:{_free_port()}/v1", "--judge-model", "m"]
    code, err = _cli(capsys, *args[:-3], "--max-new-tokens", "5", "--quiet", *down)
    assert code == 2 and "unreachable" in err
    assert not (folder / "manifest.json").exists() and not (folder / "metrics.json").exists()
    code, err = _cli(capsys, "eval", "table", ev)
    assert code == 2 and "no complete <checkpoint>/<benchmark>/ results" in err


# ------------------------------------------------------------------------------------ 5. overwrite policy
def test_eval_of_another_model_needs_overwrite(tmp_path, tiny_model, capsys):
    ev = tmp_path / "ev"
    first, other = tiny_model("llava"), tiny_model("llava", seed=1)
    code, err = _cli(capsys, "eval", "--model", first, "--out", ev, "--bench", "builtin", *SMALL)
    assert code == 0, err
    manifest = ev / "base" / "builtin" / "manifest.json"
    before = manifest.read_bytes()
    code, err = _cli(capsys, "eval", "--model", other, "--out", ev, "--bench", "builtin", *SMALL)
    assert code == 2 and "holds complete results of another model (model_fingerprint" in err
    assert "--overwrite" in err and manifest.read_bytes() == before
    code, err = _cli(
        capsys, "eval", "--model", other, "--out", ev, "--bench", "builtin", *SMALL, "--overwrite"
    )
    assert code == 0, err
    assert json.loads(manifest.read_text())["model_fingerprint"] == model_fingerprint(other)


def test_images_same_inputs_reused_other_inputs_replaced_with_overwrite(tmp_path):
    from vsfa.data.images import write_procedural_set

    out = write_procedural_set("neutral", 2, tmp_path / "set", seed=0, size=32)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert write_procedural_set("neutral", 2, out, seed=0, size=32) == out
    assert (out / "manifest.json").stat().st_mtime_ns == stamp  # reused, not re-rendered
    with pytest.raises(ArtifactError, match=r"holds other results \(n: 3 here vs 2"):
        write_procedural_set("neutral", 3, out, seed=0, size=32)
    write_procedural_set("neutral", 3, out, seed=0, size=32, overwrite=True)
    assert len(read_jsonl(out / "images.jsonl")) == 3


def test_directions_same_inputs_reused_other_inputs_refused(tmp_path, tiny_model, caplog):
    from probes.stages import DirectionsConfig, run_directions

    def cfg(**over) -> DirectionsConfig:
        base = {
            "model": str(tiny_model("llava")),
            "out": str(tmp_path / "dirs" / "persona"),
            "acts": str(tmp_path / "acts"),
            "separation": None,
            "max_questions": 6,
        }
        return DirectionsConfig(**{**base, **over})

    _, path, _ = run_directions(cfg())
    stamp = path.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="probes.stages"):
        _, again, _ = run_directions(cfg())
    assert again == path and path.stat().st_mtime_ns == stamp
    assert "same inputs, reused" in caplog.records[-1].getMessage()
    with pytest.raises(ArtifactError, match=r"persona: holds other results \(seed: 1 here vs 0"):
        run_directions(cfg(seed=1))
    _, replaced, _ = run_directions(cfg(seed=1, overwrite=True))
    assert json.loads(replaced.read_text())["inputs"]["seed"] == 1


# ---------------------------------------------------------------------------- 7. content keys, not paths
def test_same_model_and_data_through_symlinks_reuse_answers(tmp_path, tiny_model, capsys):
    model = tiny_model("llava")
    figstep = make_figstep(tmp_path / "FigStep")
    (tmp_path / "FigStep-link").symlink_to(figstep)
    (tmp_path / "model-link").symlink_to(model)
    ev = tmp_path / "ev"
    common = ["--out", ev, "--max-new-tokens", "4", "--quiet"]
    code, err = _cli(capsys, "eval", "--model", model, "--bench", f"figstep_tiny={figstep}", *common)
    assert code == 0, err
    folder = ev / "base" / "figstep_tiny"
    key = (folder / ".responses.jsonl.key").read_text()
    answers = (folder / "responses.jsonl").read_bytes()
    moved = ["--model", tmp_path / "model-link", "--bench", f"figstep_tiny={tmp_path / 'FigStep-link'}"]
    code, err = _cli(capsys, "eval", *moved, *common)
    assert code == 0, err
    assert (folder / ".responses.jsonl.key").read_text() == key
    assert (folder / "responses.jsonl").read_bytes() == answers


# ----------------------------------------------------------------------- 6. paths recorded in manifests
def test_relative_base_model_of_an_old_manifest_resolves_from_anywhere(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "models" / "tiny").mkdir(parents=True)
    ck = project / "runs" / "r1" / "checkpoints" / "step-000005"
    ck.mkdir(parents=True)
    write_manifest(ck, {"base_model": "models/tiny", "config": {"out": "runs/r1"}})
    (ck / "adapter_config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)  # not where training ran
    assert recorded_path("models/tiny", ck) == str(project / "models" / "tiny")
    assert recorded_path("/abs/model", ck) == "/abs/model"
    from vsfa.eval.runner import run_checkpoints

    write_manifest(project / "runs" / "r1", {"kind": "vsfa-run"})
    _, base = run_checkpoints(project / "runs" / "r1")
    assert base == str(project / "models" / "tiny")


def test_new_checkpoint_manifests_store_absolute_paths(tmp_path, tiny_model, monkeypatch):
    import shutil

    from vsfa.data.build import build_variants
    from vsfa.train import config_from_dict, train

    shutil.copytree(tiny_model("llava"), tmp_path / "model")
    build_variants(tmp_path / "data", ["image"], procedural=2, seed=0, procedural_size=32)
    monkeypatch.chdir(tmp_path)
    cfg = config_from_dict(
        {
            "out": "run",
            "model": {"base": "model"},
            "data": {"path": "data/image"},
            "train": {"max_steps": 1, "batch_size": 2},
            "checkpoints": {"log_until": 1, "every": 0},
            "runtime": {"device": "cpu"},
        }
    )
    result = train(cfg, quiet=True)
    man = json.loads((result.checkpoints[0][1] / "manifest.json").read_text())
    assert man["base_model"] == str(tmp_path / "model") and os.path.isabs(man["data"])


# ------------------------------------------------------------------------------------ 12. incomplete runs
def test_incomplete_run_evaluated_only_when_allowed_and_recorded(tmp_path, tiny_model, capsys):
    run = _make_run(tmp_path, tiny_model("llava"))
    (run / "manifest.json").unlink()  # interrupted before the end
    args = ["eval", "--run", run, "--bench", "builtin", *SMALL]
    code, err = _cli(capsys, *args)
    assert code == 2 and "training run is incomplete" in err and not (run / "eval").exists()
    code, err = _cli(capsys, *args, "--allow-incomplete")
    assert code == 0, err
    for ck in ("step-000000", "step-000005"):
        folder = run / "eval" / ck / "builtin"
        assert json.loads((folder / "manifest.json").read_text())["run_complete"] is False
        assert json.loads((folder / "metrics.json").read_text())["run_complete"] is False


# ------------------------------------------------------------------------------ 15. endpoint keys by name
def _chat_server(seen: list[str]):
    """A local OpenAI-compatible server: model ``j`` (a judge) says safe, others refuse; records Authorization."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(self.headers.get("Authorization", ""))
            text = "safe" if payload["model"] == "j" else "I cannot help with that."
            body = json.dumps({"choices": [{"message": {"content": text}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_server_backend_sends_the_key_from_a_named_variable_and_stores_none(tmp_path, capsys, monkeypatch):
    seen: list[str] = []
    server = _chat_server(seen)
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    ev = tmp_path / "ev"
    args = ["eval", "--backend", "server", "--gen-url", url, "--gen-model", "m", "--out", ev]
    args += ["--bench", "builtin", *SMALL]
    try:
        monkeypatch.delenv("MY_GEN_KEY", raising=False)
        code, err = _cli(capsys, *args, "--gen-key-env", "MY_GEN_KEY")
        assert code == 2 and "environment variable MY_GEN_KEY (the API key) is not set" in err
        monkeypatch.setenv("MY_GEN_KEY", "s3cret-gen")
        monkeypatch.setenv("VSFA_JUDGE_API_KEY", "s3cret-judge")
        judge = ["--judge", "llm", "--judge-url", url, "--judge-model", "j"]
        code, err = _cli(capsys, *args, "--gen-key-env", "MY_GEN_KEY", *judge)
    finally:
        server.shutdown()
    assert code == 0, err
    assert "Bearer s3cret-gen" in seen and "Bearer s3cret-judge" in seen  # the judge's default variable
    for path in ev.rglob("*"):
        if path.is_file():
            assert b"s3cret" not in path.read_bytes(), path


# ---------------------------------------------------------------------- 14. benchmark paths and options
def test_figstep_accepts_the_question_folder_and_the_csv(tmp_path):
    from vsfa.eval.benchmarks import load_benchmark

    root = make_figstep(tmp_path / "FigStep")
    full = load_benchmark("figstep", root)
    for path in (root / "data", root / "data" / "question", root / "data" / "question" / "safebench.csv"):
        assert [i.image for i in load_benchmark("figstep", path)] == [i.image for i in full], path
    tiny = load_benchmark("figstep", root / "data" / "question" / "SafeBench-Tiny.csv")
    assert len(tiny) == 1 and tiny[0].extra["subset"] == "tiny"
    with pytest.raises(Exception, match=r"safebench.csv: FigStep question file \(full\) not found \(also"):
        load_benchmark("figstep", tmp_path)
    from vsfa.errors import DataError
    from vsfa.eval.benchmarks._schema import first_existing

    with pytest.raises(DataError) as err:
        first_existing([tmp_path / "x"], "thing")
    assert str(err.value) == f"{tmp_path / 'x'}: thing not found"  # no empty "also looked for ()"


def test_vlguard_at_a_clone_root(tmp_path):
    from tests.vsfa.eval.test_loaders import make_vlguard
    from vsfa.eval.benchmarks import load_benchmark

    make_vlguard(tmp_path / "VLGuard" / "data")
    assert len(load_benchmark("vlguard", tmp_path / "VLGuard")) == 3


def test_mmsafety_scenarios_spellings_tiny_list_and_image_root_hint(tmp_path):
    from vsfa.errors import DataError
    from vsfa.eval.benchmarks import load_benchmark

    root = make_mmsafety(tmp_path / "MM-SafetyBench")
    for spec in ("01", "01-Illegal_Activitiy", "Illegal_Activity", "illegal activity", "1"):
        items = load_benchmark("mmsafety", root, variants="text", scenarios=spec)
        assert {i.category for i in items} == {"01-Illegal_Activitiy"}, spec
    with pytest.raises(
        DataError, match=r"no MM-SafetyBench scenario 'Fraud' \(found: 01-Illegal_Activitiy, 13"
    ):
        load_benchmark("mmsafety", root, variants="text", scenarios="01,Fraud")
    (root / "TinyVersion_ID_List.json").write_text(
        json.dumps([{"Scenario": "01-Illegal_Activitiy", "Sampled_ID_List": [1]}])
    )
    tiny = load_benchmark("mmsafety", root, variants="text", tiny="true")
    assert [i.item_id for i in tiny] == ["text/01-Illegal_Activitiy/1"]
    (root / "imgs").rename(tmp_path / "elsewhere")
    with pytest.raises(DataError) as err:
        load_benchmark("mmsafety", root)
    msg = str(err.value)
    assert "--bench-opt mmsafety.image_root=DIR" in msg and "variants=text needs no images" in msg
    assert str(root / "imgs") in msg and str(root / "data/imgs") in msg


def test_limit_is_stratified_by_default(tmp_path):
    from vsfa.eval.items import BenchItem
    from vsfa.eval.runner import BenchSpec, limit_items

    items = [BenchItem("b", f"h{i}", "t", "harmful", "A", "text") for i in range(6)]
    items += [BenchItem("b", f"s{i}", "t", "benign", "B", "text") for i in range(2)]
    assert [it.item_id for it in limit_items(items, 3)] == ["h0", "h1", "s0"]  # both labels, benchmark order
    assert [it.item_id for it in limit_items(items, 3, "first")] == ["h0", "h1", "h2"]
    assert len(limit_items(items, 100)) == 8
    root = make_mmsafety(tmp_path / "MM-SafetyBench")
    smoke = BenchSpec("mmsafety", str(root), {"variants": "SD,text"}).load(limit=2)
    assert {it.category for it in smoke} == {"01-Illegal_Activitiy", "13-Gov_Decision"}


def test_eval_help_is_not_cut_at_80_columns(capsys, monkeypatch):
    import sys

    from vsfa.cli import main

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(sys, "argv", ["vsfa", "eval", "--help"])
    main()  # help is printed, not an error
    out = capsys.readouterr().out
    assert "…" not in out and "mmsafety.variants=SD,TYPO" in out and "--allow-incomplete" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_track_of_an_incomplete_run_is_recorded_as_such(quick_study, tmp_path):
    """`track --allow-incomplete` on a run without its final manifest says so in RUN/track/manifest.json."""
    import shutil

    from analysis.trajectory import TrackConfig, read_track_manifest, track

    source = sorted((quick_study / "runs").iterdir())[0]
    run = tmp_path / source.name
    shutil.copytree(source / "checkpoints", run / "checkpoints")  # no manifest.json: interrupted
    cfg = {
        "run": str(run),
        "directions": str(quick_study / "directions" / "persona"),
        "acts": str(tmp_path / "acts"),
        "sets": [],
        "attribution_set": None,
        "n_boot": 20,
        "n_random": 1,
    }
    with pytest.raises(ArtifactError, match="training run is incomplete"):
        track(TrackConfig(**cfg))
    track(TrackConfig(**cfg, allow_incomplete=True))
    assert read_track_manifest(run)["run_complete"] is False
