"""The `vsfa models` commands and the CLI's error contract (one line, exit 2, nothing written)."""

from __future__ import annotations


def test_models_tiny_and_check(run_cli, tmp_path):
    out = tmp_path / "tiny"
    proc = run_cli("models", "tiny", "--family", "idefics3", "--out", out, check=True)
    assert (out / "config.json").is_file() and "wrote" in proc.stdout
    proc = run_cli("models", "check", out, check=True)
    assert "ok: max relative error" in proc.stdout
    assert "blocks" not in proc.stderr


def test_bad_family_is_one_line_exit_2_nothing_written(run_cli, tmp_path):
    out = tmp_path / "nope"
    proc = run_cli("models", "tiny", "--family", "gpt2", "--out", out)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "gpt2" in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_missing_model_folder(run_cli, tmp_path):
    proc = run_cli("models", "check", tmp_path / "absent")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "absent" in proc.stderr and "Traceback" not in proc.stderr


def test_models_list(run_cli):
    proc = run_cli("models", "list", check=True)
    for name in ("llava", "qwen2_5_vl", "qwen3_vl", "gemma3", "idefics3", "llava_next", "qwen2_vl"):
        assert name in proc.stdout
