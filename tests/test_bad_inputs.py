"""Bad inputs across the commands, one table: each is one `error:` line, exit code 2, and leaves no file behind.

The CLI runs in this process (``vsfa.cli.main``), so a case costs milliseconds unless it loads a model.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.vsfa.eval.test_runner import _cli as run_in_process
from vsfa.io import output_lock, write_manifest

BAD_UTF8 = b'name = "caf\xe9"\n'  # Latin-1, not UTF-8


@dataclass
class Case:
    """One bad input: the command line (built from the fixture's paths) and the expected error."""

    id: str
    argv: Callable[[dict[str, Path]], list[str]]
    pattern: str
    hold: Callable[[dict[str, Path]], Path] | None = None  # an output folder another writer holds


def _cli(capsys, argv: list[str]) -> tuple[int, str]:
    """Run ``vsfa`` in this process: exit code and stderr."""
    return run_in_process(capsys, *argv)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def w(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """Paths the cases point at: a model, a data build, an image set, runs, checkpoints, broken files."""
    from vsfa.data.build import build_variants
    from vsfa.data.images import write_procedural_set

    root = tmp_path_factory.mktemp("bad-inputs")
    model = tiny_model("llava")
    data = build_variants(root / "data", ["image"], procedural=3, seed=0, procedural_size=32)
    images = write_procedural_set("threat", 3, root / "threat", seed=0, size=32)
    changed = write_procedural_set("threat", 3, root / "changed", seed=0, size=32)
    first = json.loads((changed / "images.jsonl").read_text().splitlines()[0])["path"]
    (changed / first).write_bytes((changed / first).read_bytes() + b"\0")  # no longer the listed hash
    cfg = root / "run.toml"
    cfg.write_text(
        f'[model]\nbase = "{model}"\n[data]\npath = "{data / "image"}"\n[train]\nmax_steps = 2\n'
        '[runtime]\ndevice = "cpu"\n'
    )
    (root / "latin1.toml").write_bytes(BAD_UTF8)
    incomplete = root / "incomplete-run"  # a checkpoint, but no final run manifest (interrupted)
    ck = incomplete / "checkpoints" / "step-000005"
    ck.mkdir(parents=True)
    write_manifest(ck, {"base_model": str(model), "step": 5})
    bad_manifest = root / "bad-manifest" / "checkpoints" / "step-000005"
    bad_manifest.mkdir(parents=True)
    (bad_manifest / "manifest.json").write_bytes(b'{"base_model": "\xff"}')
    bad_set = root / "latin1-set"
    bad_set.mkdir()
    (bad_set / "images.jsonl").write_bytes(b'{"path": "a.png", "sha256": "\xe9"}\n')
    write_manifest(bad_set, {"kind": "vsfa-image-set"})
    (root / "latin1-openers.txt").write_bytes(b"I can\x92t\n")
    (root / "not-a-folder").write_text("a file")
    (root / "persona-latin1.json").write_bytes(b'{"name": "caf\xe9"}')
    (root / "vlguard-latin1.json").write_bytes(b'[{"id": "caf\xe9"}]')
    (root / "dirs-latin1.json").write_bytes(b'{"kind": "caf\xe9"}')
    return {
        "root": root,
        "model": model,
        "data": data,
        "images": images,
        "changed": changed,
        "cfg": cfg,
        "latin1_toml": root / "latin1.toml",
        "incomplete": incomplete,
        "ckpt": ck,
        "bad_manifest": bad_manifest,
        "bad_set": bad_set,
        "latin1_openers": root / "latin1-openers.txt",
        "file": root / "not-a-folder",
        "latin1_set": root / "persona-latin1.json",
        "latin1_vlguard": root / "vlguard-latin1.json",
        "latin1_dirs": root / "dirs-latin1.json",
        "out": root / "out",
    }


def _eval(w, *extra: str) -> list[str]:
    return ["eval", "--model", w["model"], "--out", w["out"], "--bench", "builtin", "--quiet", *extra]


LONG = "x" * 300  # over the 255-byte limit of a path component

CASES = [
    # 3. zero / negative numbers: never reinterpreted
    Case("eval-limit-0", lambda w: _eval(w, "--limit", "0"), r"limit must be a positive number"),
    Case("eval-limit-neg", lambda w: _eval(w, "--limit", "-3"), r"limit must be a positive number.*-3"),
    Case("eval-batch-0", lambda w: _eval(w, "--batch-size", "0"), r"batch_size must be at least 1"),
    Case("eval-tokens-0", lambda w: _eval(w, "--max-new-tokens", "0"), r"max_new_tokens must be at least 1"),
    Case(
        "train-max-steps-0",
        lambda w: ["train", "--config", w["cfg"], "--out", w["out"], "--train.max-steps", "0"],
        r"run.toml: invalid value for train.max_steps: 0 \(leave it unset",
    ),
    Case(
        "train-max-steps-neg",
        lambda w: ["train", "--config", w["cfg"], "--out", w["out"], "--train.max-steps", "-1"],
        r"train.max_steps: -1",
    ),
    Case(
        "capture-batch-0",
        lambda w: ["capture", "--model", w["model"], "--acts", w["out"], "--batch-size", "0"],
        r"capture: batch_size must be an integer >= 1, not 0",
    ),
    Case(
        "capture-questions-0",
        lambda w: ["capture", "--model", w["model"], "--acts", w["out"], "--max-questions", "0"],
        r"capture: max_questions must be an integer >= 1, not 0",
    ),
    Case(
        "directions-questions-0",
        lambda w: ["directions", "--model", w["model"], "--out", w["out"] / "d", "--max-questions", "0"],
        r"directions: max_questions must be an integer >= 1, not 0",
    ),
    Case(
        "directions-batch-neg",
        lambda w: ["directions", "--model", w["model"], "--out", w["out"] / "d", "--batch-size", "-2"],
        r"directions: batch_size must be an integer >= 1, not -2",
    ),
    Case(
        "probe-n-boot-0",
        lambda w: ["probe", "--checkpoint", w["ckpt"], "--n-boot", "0"],
        r"probe: n_boot must be an integer >= 1, not 0",
    ),
    Case(
        "probe-batch-0",
        lambda w: ["probe", "--checkpoint", w["ckpt"], "--batch-size", "0"],
        r"probe: batch_size must be an integer >= 1",
    ),
    Case(
        "track-n-boot-0",
        lambda w: ["track", "--run", w["incomplete"], "--n-boot", "0"],
        r"track: n_boot must be an integer >= 1, not 0",
    ),
    Case(
        "track-questions-neg",
        lambda w: ["track", "--run", w["incomplete"], "--max-questions", "-1"],
        r"track: max_questions must be an integer >= 1, not -1",
    ),
    Case(
        "images-n-0",
        lambda w: ["data", "images", "--kind", "threat", "--n", "0", "--out", w["out"]],
        r"images: n must be an integer >= 1, not 0",
    ),
    Case(
        "images-size-0",
        lambda w: ["data", "images", "--kind", "threat", "--n", "2", "--size", "0", "--out", w["out"]],
        r"images: size must be an integer >= 1",
    ),
    Case(
        "images-text-prob",
        lambda w: ["data", "images", "--kind", "threat", "--n", "2", "--text-prob", "2", "--out", w["out"]],
        r"text_prob must be between 0 and 1",
    ),
    Case(
        "build-procedural-0",
        lambda w: ["data", "build", "--out", w["out"], "--procedural", "0"],
        r"build: procedural must be an integer >= 1, not 0",
    ),
    Case(
        "build-n-images-0",
        lambda w: (
            ["data", "build", "--out", w["out"], "--threat", w["images"], "--variants", "image"]
            + ["--n-images", "0"]
        ),
        r"number of images must be at least 1",
    ),
    Case(
        "builtin-pairs-0",
        lambda w: _eval(w, "--bench-opt", "builtin.limit_pairs=0"),
        r"builtin: limit_pairs must be an integer >= 1, not 0",
    ),
    Case(
        "builtin-pairs-neg",
        lambda w: _eval(w, "--bench-opt", "builtin.limit_pairs=-1"),
        r"builtin: limit_pairs must be an integer >= 1, not -1",
    ),
    Case(
        "organism-data-n-0",
        lambda w: ["organism", "data", "--arm", "vsfa", "--n", "0", "--out", w["out"]],
        r"organism data: n must be an integer >= 1, not 0",
    ),
    # other bad options: one line naming the option or value
    Case("eval-judge-unknown", lambda w: _eval(w, "--judge", "bogus"), r"unknown judge 'bogus'"),
    Case("eval-llm-no-url", lambda w: _eval(w, "--judge", "llm"), r"needs an endpoint: --judge-url"),
    Case("eval-server-no-url", lambda w: _eval(w, "--backend", "server"), r"needs --gen-url and --gen-model"),
    Case(
        "eval-server-ftp",
        lambda w: _eval(w, "--backend", "server", "--gen-url", "ftp://x", "--gen-model", "m"),
        r"must start with http:// or https://",
    ),
    Case("eval-defense", lambda w: _eval(w, "--defense", "bogus"), r"unknown defense 'bogus'"),
    Case("eval-refusal-mode", lambda w: _eval(w, "--refusal-mode", "bogus"), r"refusal_mode must be one of"),
    Case("eval-limit-mode", lambda w: _eval(w, "--limit-mode", "bogus"), r"limit mode must be one of"),
    Case(
        "eval-run-missing",
        lambda w: ["eval", "--run", w["root"] / "nope", "--bench", "builtin"],
        r"nope/checkpoints: run has no checkpoints folder",
    ),
    Case("eval-table-missing", lambda w: ["eval", "table", w["root"] / "nope"], r"nope: no complete"),
    Case("train-config-missing", lambda w: ["train", "--config", w["root"] / "nope.toml"], r"not found"),
    Case(
        "train-lr-negative",
        lambda w: ["train", "--config", w["cfg"], "--out", w["out"], "--set", "train.lr=-1"],
        r"invalid value for train.lr: -1",
    ),
    Case(
        "images-kind",
        lambda w: ["data", "images", "--kind", "bogus", "--n", "2", "--out", w["out"]],
        r"kind must be one of",
    ),
    Case(
        "images-style",
        lambda w: ["data", "images", "--kind", "threat", "--n", "2", "--style", "x", "--out", w["out"]],
        r"style must be one of",
    ),
    Case(
        "build-variant",
        lambda w: ["data", "build", "--out", w["out"], "--variants", "bogus"],
        r"unknown variant 'bogus'",
    ),
    Case(
        "subsets-sizes",
        lambda w: ["data", "subsets", "--data", w["data"] / "image", "--sizes", "a,b"],
        r"expected comma-separated integers",
    ),
    Case(
        "capture-layers",
        lambda w: ["capture", "--model", w["model"], "--layers", "a,b", "--acts", w["out"]],
        r"--layers must be 'all' or comma-separated integers",
    ),
    Case(
        "probe-checkpoint-missing",
        lambda w: ["probe", "--checkpoint", w["root"] / "nope"],
        r"nope: checkpoint folder not found",
    ),
    Case(
        "track-run-missing", lambda w: ["track", "--run", w["root"] / "nope"], r"nope: run folder not found"
    ),
    Case(
        "tiny-family",
        lambda w: ["models", "tiny", "--family", "bogus", "--out", w["out"]],
        r"bogus",
    ),
    Case(
        "eval-openers-missing",
        lambda w: _eval(w, "--openers-refuse", w["root"] / "nope.txt"),
        r"nope.txt: opener list not found",
    ),
    Case(
        "directions-min-accuracy",
        lambda w: ["directions", "--model", w["model"], "--out", w["out"] / "d", "--rule.min-accuracy", "2"],
        r"directions: rule.min_accuracy must be in \[0, 1\], not 2.0",
    ),
    Case(
        "eval-out-empty", lambda w: _eval(w)[:3] + ["--out", "", "--bench", "builtin"], r"'\.': not an output"
    ),
    Case(
        "images-out-dot",
        lambda w: ["data", "images", "--kind", "threat", "--n", "2", "--out", "."],
        r"'\.': not an output path",
    ),
    Case("eval-device", lambda w: _eval(w, "--device", "tpu"), r"unknown device 'tpu'"),
    Case(
        "capture-device-cuda",
        lambda w: ["capture", "--model", w["model"], "--device", "cuda:7", "--acts", w["out"]],
        r"device 'cuda:7': (no CUDA GPU is available|this machine has)",
    ),
    Case(
        "gpu-check-batch-0",
        lambda w: ["train", "gpu-check", "--tiny", "--device", "cpu", "--batch-size", "0"],
        r"--batch-size must be at least 1, not 0",
    ),
    Case(
        "world-latin1",
        lambda w: [
            "organism",
            "data",
            "--arm",
            "vsfa",
            "--n",
            "2",
            "--out",
            w["out"],
            "--world",
            w["latin1_set"],
        ],
        r"persona-latin1.json:1: not UTF-8 text",
    ),
    # usage errors (click): one line, not a traceback
    Case("unknown-option", lambda w: ["eval", "--bogus"], r"No such option:? '?--bogus'?.*vsfa eval --help"),
    Case(
        "not-a-number",
        lambda w: ["data", "images", "--kind", "threat", "--n", "abc", "--out", w["out"]],
        r"Invalid value for '--n'",
    ),
    Case("missing-argument", lambda w: ["eval", "table"], r"Missing argument 'eval_dir'"),
    Case("missing-command", lambda w: ["data"], r"Missing command"),
    # 4. non-UTF-8 files and OS errors: one line naming the file
    Case(
        "toml-latin1",
        lambda w: ["train", "--config", w["latin1_toml"]],
        r"latin1.toml:1: not UTF-8 text \(byte 0xe9",
    ),
    Case(
        "manifest-latin1",
        lambda w: ["eval", "--checkpoint", w["bad_manifest"], "--bench", "builtin", "--out", w["out"]],
        r"step-000005/manifest.json:1: not UTF-8 text",
    ),
    Case(
        "images-jsonl-latin1",
        lambda w: ["data", "build", "--out", w["out"], "--threat", w["bad_set"], "--variants", "image"],
        r"latin1-set/images.jsonl:1: not UTF-8 text",
    ),
    Case(
        "openers-latin1",
        lambda w: _eval(w, "--openers-refuse", w["latin1_openers"]),
        r"latin1-openers.txt:1: not UTF-8 text",
    ),
    Case(
        "set-file-latin1",
        lambda w: ["capture", "--model", w["model"], "--contrast", w["latin1_set"], "--acts", w["out"]],
        r"persona-latin1.json:1: not UTF-8 text",
    ),
    Case(
        "vlguard-json-latin1",
        lambda w: (
            ["data", "vlguard", "--train-json", w["latin1_vlguard"], "--images-root", w["root"]]
            + ["--out", w["out"]]
        ),
        r"vlguard-latin1.json:1: not UTF-8 text",
    ),
    Case(
        "directions-json-latin1",
        lambda w: ["probe", "--checkpoint", w["ckpt"], "--directions", w["latin1_dirs"]],
        r"dirs-latin1.json:1: not UTF-8 text",
    ),
    Case(
        "out-under-a-file",
        lambda w: ["data", "images", "--kind", "threat", "--n", "2", "--out", w["file"] / "x"],
        r"not-a-folder: cannot create output folder \(file exists\)",
    ),
    Case(
        "out-name-too-long",
        lambda w: ["data", "images", "--kind", "threat", "--n", "2", "--out", w["out"] / LONG],
        r"file name too long",
    ),
    Case(
        "train-out-name-too-long",
        lambda w: ["train", "--config", w["cfg"], "--out", w["out"] / LONG],
        r"file name too long",
    ),
    # 9. images must still be the ones their manifest lists
    Case(
        "build-changed-image",
        lambda w: ["data", "build", "--out", w["out"], "--threat", w["changed"], "--variants", "image"],
        r"image changed since its manifest .* was written \(sha256 differs\)",
    ),
    # 12. interrupted runs are not evaluated or tracked silently
    Case(
        "eval-incomplete-run",
        lambda w: ["eval", "--run", w["incomplete"], "--bench", "builtin", "--out", w["out"]],
        r"incomplete-run: training run is incomplete .*--allow-incomplete",
    ),
    Case(
        "track-incomplete-run",
        lambda w: ["track", "--run", w["incomplete"]],
        r"incomplete-run: training run is incomplete .*--allow-incomplete",
    ),
    # 1. a folder another process writes
    Case(
        "eval-locked",
        lambda w: _eval(w, "--limit", "2"),
        rf"out: in use by pid {os.getpid()}",
        hold=lambda w: w["out"],
    ),
    Case(
        "images-locked",
        lambda w: ["data", "images", "--kind", "threat", "--n", "2", "--out", w["out"]],
        rf"out: in use by pid {os.getpid()}",
        hold=lambda w: w["out"],
    ),
    Case(
        "build-locked",
        lambda w: ["data", "build", "--out", w["out"], "--procedural", "2", "--size", "32"],
        rf"out: in use by pid {os.getpid()}",
        hold=lambda w: w["out"],
    ),
    Case(
        "track-locked",
        lambda w: ["track", "--run", w["incomplete"], "--allow-incomplete"],
        rf"incomplete-run/track: in use by pid {os.getpid()}",
        hold=lambda w: w["incomplete"] / "track",
    ),
    # 5. complete artifacts of other inputs are not replaced without --overwrite
    Case(
        "images-other-inputs",
        lambda w: (
            ["data", "images", "--kind", "threat", "--n", "3", "--size", "32", "--out", w["images"]]
            + ["--seed", "7"]
        ),
        r"threat: holds other results \(seed: 7 here vs 0 in the folder\); pass --overwrite",
    ),
    Case(
        "build-other-inputs",
        lambda w: (
            ["data", "build", "--out", w["data"], "--procedural", "3", "--size", "32", "--seed", "1"]
            + ["--variants", "image"]
        ),
        r"data: holds other results \(seed: 1 here vs 0 in the folder\); pass --overwrite",
    ),
    Case(
        "images-into-foreign-folder",
        lambda w: ["data", "images", "--kind", "threat", "--n", "2", "--out", w["incomplete"]],
        r"incomplete-run: holds other results \(files without a manifest.json\)",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(case: Case, w, capsys):
    before = _tree(w["root"])
    with contextlib.ExitStack() as stack:
        if case.hold is not None:
            stack.enter_context(output_lock(case.hold(w)))
        code, err = _cli(capsys, case.argv(w))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    import re

    assert re.search(case.pattern, lines[0]), lines[0]
    assert _tree(w["root"]) == before, sorted(_tree(w["root"]) ^ before)


def test_read_only_output_is_one_line(w, capsys, monkeypatch):
    """A folder the user may not write (simulated: the tests run as root, which ignores permissions)."""
    import errno
    import tempfile

    def denied(*args, dir=None, **kwargs):  # noqa: A002 (tempfile's own name)
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))

    before = _tree(w["root"])
    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    code, err = _cli(capsys, ["data", "images", "--kind", "threat", "--n", "2", "--out", w["out"]])
    assert code == 2 and err.strip() == f"error: {w['root']}: permission denied", err
    real_open = os.open

    def no_lock(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_lock)
    code, err = _cli(capsys, ["data", "images", "--kind", "threat", "--n", "2", "--out", w["out"]])
    assert code == 2 and "out: cannot create its lock file (permission denied)" in err.strip()
    assert err.strip().count("\n") == 0 and _tree(w["root"]) == before
