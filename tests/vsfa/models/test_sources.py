"""resolve_model: one spec syntax for every place that takes a model (folder, tiny:<family>, organism, smol-llava)."""

from __future__ import annotations

import json

import pytest

from vsfa.errors import ConfigError, ModelLoadError
from vsfa.models import smol_llava
from vsfa.models.loading import load_vlm
from vsfa.models.sources import is_spec, resolve_model
from vsfa.resources import RESOURCES


def test_tiny_is_built_once_into_its_folder_and_reused(tmp_path):
    folder = resolve_model("tiny:llava", build_into=tmp_path / "model")
    assert folder == tmp_path / "model" and (folder / "config.json").is_file()
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert resolve_model("tiny:llava", build_into=folder) == folder
    assert (folder / "config.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    with pytest.raises(ConfigError, match=r"model: holds another model \(llava\), not tiny:gemma3"):
        resolve_model("tiny:gemma3", build_into=folder)


def test_tiny_default_folder_is_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VSFA_CACHE", str(tmp_path / "cache"))
    folder = resolve_model("tiny:llava")
    assert folder == tmp_path / "cache" / "models" / "tiny-llava"
    vlm = load_vlm("tiny:llava")  # every command that loads a model takes the spec; it records the folder
    assert vlm.source == str(folder) and vlm.family.name == "llava"


def test_a_folder_is_itself_and_wins_over_a_spec_of_its_name(tiny_model, tmp_path, monkeypatch):
    assert resolve_model(tiny_model("llava")) == tiny_model("llava")
    assert resolve_model(str(tiny_model("llava"))) == tiny_model("llava")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "organism").mkdir()
    (tmp_path / "organism" / "config.json").write_text(json.dumps({"model_type": "llava"}))
    assert not is_spec("organism") and resolve_model("organism").resolve() == (tmp_path / "organism")


def test_organism_is_the_shipped_base():
    assert resolve_model("organism") == RESOURCES / "organism"
    assert json.loads((resolve_model("organism") / "manifest.json").read_text())


def test_bad_specs_and_folders_name_the_source(tmp_path):
    with pytest.raises(
        ConfigError, match=r"tiny:nope: no tiny builder for family 'nope'; choose one of: llava"
    ):
        resolve_model("tiny:nope")
    with pytest.raises(ConfigError, match=r"unknown smol-llava variant 'nope'; choose one of: base, safe"):
        resolve_model("smol-llava-nope")
    with pytest.raises(
        ModelLoadError, match=r"missing: model folder not found \(give tiny:<family>, organism"
    ):
        resolve_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="empty: no config.json in the folder"):
        resolve_model(tmp_path / "empty")
    with pytest.raises(ConfigError, match="model source is empty"):
        resolve_model("")
    with pytest.raises(ModelLoadError, match="model folder not found"):
        load_vlm(tmp_path / "missing")  # a folder keeps load_vlm's own error


def test_smol_llava_specs_dispatch_to_build_demo_with_the_variant(tmp_path, monkeypatch):
    calls = []

    def fake_build_demo(**kwargs):
        calls.append(kwargs)
        return tmp_path

    monkeypatch.setattr(smol_llava, "build_demo", fake_build_demo)
    monkeypatch.setattr(smol_llava, "VARIANTS", ("base", "safe"), raising=False)
    assert resolve_model("smol-llava") == tmp_path
    assert resolve_model("smol-llava-base") == tmp_path
    assert resolve_model("smol-llava-safe") == tmp_path
    assert calls == [{}, {}, {"variant": "safe"}]
    with pytest.raises(ConfigError, match="choose one of: base, safe"):
        resolve_model("smol-llava-unsafe")
