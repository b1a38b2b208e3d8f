"""The public Python API: the README's example runs as printed; importing the packages has no side effects."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import lora_checkpoint

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    """The README's Python example: its first ```python block."""
    match = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README.md has no ```python block"
    return match.group(1)


def test_readme_example_runs(tiny_model, tmp_path, monkeypatch, capsys):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 15
    ckpt = re.search(r'ckpt = "([^"]+)"', code).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VSFA_CACHE", str(tmp_path / "cache"))
    (tmp_path / ckpt).parent.mkdir(parents=True)
    lora_checkpoint(tiny_model("llava"), tmp_path / ckpt, step=100)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    out = capsys.readouterr().out
    assert "selected: blocks." in out
    base, tuned, persona, capture = scope["base"], scope["tuned"], scope["persona"], scope["capture"]
    table = scope["shift_table"](scope["dirs"], capture(base, persona), capture(tuned, persona))  # cache hits
    assert list(table.index) == list(range(base.n_layers))
    assert table["selected"].sum() == 1
    assert (table["ci_lo"] <= table["shift"]).all() and (table["shift"] <= table["ci_hi"]).all()
    steered = re.search(r"steered: (.*)", out).group(1)
    plain = re.search(r"plain: +(.*)", out).group(1)
    assert steered != plain  # the with block changed the answer, and leaving it restored the model
    assert str(base.chat(scope["ask"])) == plain


def test_public_names_resolve():
    import analysis
    import probes
    import vsfa

    for package in (vsfa, probes, analysis):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"


def test_import_changes_no_environment_and_no_logging_level():
    check = (
        "import logging, os; env = dict(os.environ); levels = {n: logging.getLogger(n).level for n in "
        "('', 'transformers', 'vsfa')}; import vsfa, probes, analysis; "
        "assert dict(os.environ) == env, set(os.environ.items()) ^ set(env.items()); "
        "assert {n: logging.getLogger(n).level for n in levels} == levels; "
        "assert 'transformers' not in __import__('sys').modules"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.endswith("_OFFLINE")}
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
