"""The generated `vsfa` CLI: flags, --config and --set give the same run; every command's help; the adapter's rules."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.vsfa.eval.test_runner import _cli
from vsfa.cli import TABLE, command
from vsfa.clikit import Command, build, field_docs, fields_of


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_flags_config_and_set_give_identical_outputs(tmp_path, capsys):
    """One command three ways: field flags, a TOML --config, --set items; the output folders are byte-identical."""
    settings = {"kind": "threat", "n": 2, "size": 32, "seed": 3, "style": "icon", "text_prob": 0.5}
    flags = [
        "--kind",
        "threat",
        "--n",
        "2",
        "--size",
        "32",
        "--seed",
        "3",
        "--style",
        "icon",
        "--text-prob",
        "0.5",
    ]
    code, err = _cli(capsys, "data", "images", *flags, "--out", tmp_path / "flags")
    assert code == 0, err
    toml = tmp_path / "images.toml"
    toml.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    code, err = _cli(capsys, "data", "images", "--config", toml, "--out", tmp_path / "config")
    assert code == 0, err
    sets = [x for k, v in settings.items() for x in ("--set", f"{k}={json.dumps(v)}")]
    code, err = _cli(capsys, "data", "images", *sets, "--set", f"out='{tmp_path / 'set'}'")
    assert code == 0, err
    first = _files(tmp_path / "flags")
    assert len(first) == 5 and first == _files(tmp_path / "config") == _files(tmp_path / "set")


def test_precedence_defaults_config_set_flags(tmp_path, capsys):
    """defaults < --config < --set < flags (the manifest records the seed the run used)."""
    toml = tmp_path / "c.toml"
    toml.write_text('kind = "neutral"\nn = 1\nsize = 32\nseed = 1\n')

    def seed(out: Path, *extra: str) -> int:
        code, err = _cli(capsys, "data", "images", "--config", toml, "--out", out, *extra)
        assert code == 0, err
        return json.loads((out / "manifest.json").read_text())["inputs"]["seed"]

    assert seed(tmp_path / "a") == 1
    assert seed(tmp_path / "b", "--set", "seed=2") == 2
    assert seed(tmp_path / "c", "--set", "seed=2", "--seed", "3") == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "colour=2"], r"command line: unknown key 'colour'"),
        (["--set", "seed"], r"--set 'seed': expected KEY=VALUE"),
        (["--set", "size='big'"], r"size: expected int, got str"),
        (["--config", "{bad}"], r"bad.toml: unknown key 'colour'"),
        (["--config", "{nope}"], r"nope.toml: config file not found"),
        ([], r"Missing option '--out'"),
    ],
)
def test_bad_settings_are_one_line_exit_2(argv, message, tmp_path, capsys):
    import re

    (tmp_path / "bad.toml").write_text("colour = 2\n")
    argv = [a.format(bad=tmp_path / "bad.toml", nope=tmp_path / "nope.toml") for a in argv]
    out = [] if "Missing" in message else ["--out", tmp_path / "o"]
    code, err = _cli(capsys, "data", "images", "--kind", "threat", "--n", "1", *out, *argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert re.search(message, err), err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", list(TABLE))
def test_every_command_has_help_with_its_field_docs(name):
    text = _help_text(name)
    assert "--config" in text and "--set KEY=VALUE" in text
    cmd = command(name)
    for fld in fields_of(cmd.config):
        assert fld.help, f"{cmd.config.__name__}.{fld.key} has no attribute docstring"
        assert " ".join(fld.help.split()) in text, (name, fld.key)
        if fld.key not in cmd.args:
            assert f"--{fld.flag}" in text, (name, fld.flag)


def _help_text(name: str) -> str:
    from vsfa.cli import app

    result = CliRunner().invoke(app(), [*name.split(), "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


@dataclass
class Inner:
    """A nested section."""

    rate: float = 0.5
    """The rate."""


@dataclass
class Toy:
    """A toy config."""

    out: Path
    """Where to write."""
    names: list[str] = field(default_factory=lambda: ["a"])
    """Names."""
    layers: list[int] | None = field(default=None, metadata={"none": "all"})
    """Layers ('all': every one)."""
    opts: dict[str, Any] = field(default_factory=dict)
    """Options KEY=VALUE."""
    flag: bool = True
    """A switch."""
    kind: str = field(default="x", metadata={"flag": "toy-kind"})
    """Renamed flag."""
    inner: Inner = field(default_factory=Inner)


def _toy(*argv: str) -> tuple[int, Any]:
    seen: list[Toy] = []
    cmd = build(Command("toy", Toy, seen.append), "toy")
    result = CliRunner().invoke(cmd, list(argv), standalone_mode=False)
    if result.exception is not None and not hasattr(result.exception, "exit_code"):
        return 2, result.exception
    return result.exit_code, (seen[0] if seen else result.exception)


def test_adapter_rules_on_a_toy_config():
    code, cfg = _toy("--out", "o", "--names", "b,c", "--names", "d", "--layers", "1,2", "--no-flag")
    assert code == 0 and cfg.out == Path("o") and cfg.names == ["b", "c", "d"] and cfg.layers == [1, 2]
    assert cfg.flag is False and cfg.inner.rate == 0.5
    code, cfg = _toy(
        "--out", "o", "--layers", "all", "--opts", "a.b=1", "--opts", "c=x,y", "--inner.rate", "2"
    )
    assert cfg.layers is None and cfg.opts == {"a": {"b": 1}, "c": "x,y"} and cfg.inner.rate == 2.0
    code, cfg = _toy("--out", "o", "--toy-kind", "y", "--set", "inner.rate=3", "--set", "names=['z']")
    assert cfg.kind == "y" and cfg.inner.rate == 3.0 and cfg.names == ["z"]
    code, err = _toy("--out", "o", "--layers", "1,x")
    assert "--layers must be 'all' or comma-separated integers, not '1,x'" in str(err)
    code, err = _toy("--set", "inner.bogus=1", "--out", "o")
    assert "unknown key 'bogus'" in str(err)
    code, err = _toy("--names", "a")
    assert "Missing option '--out'" in err.format_message()
    assert _toy("--set", "out='p'")[1].out == Path("p")  # a required field may come from --set or --config


def test_field_docs_are_attribute_docstrings():
    assert field_docs(Toy)["out"] == "Where to write." and "inner" not in field_docs(Toy)
    assert [f.key for f in fields_of(Toy)][-1] == "inner.rate" and fields_of(Toy)[0].required


def test_docs_page_is_current():
    """docs/cli.md is rendered from the configs; regenerate it with `python -m vsfa.cli --docs > docs/cli.md`."""
    from vsfa.cli import docs

    page = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
    assert page.read_text(encoding="utf-8") == docs(), (
        "docs/cli.md is stale: python -m vsfa.cli --docs > docs/cli.md"
    )
