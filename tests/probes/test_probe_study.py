"""`vsfa probe --checkpoint` on a study's checkpoint: the study's directions, selection, sets and cache by
default; explicit options win; layers without an adapter are marked, and a selected one is warned about."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import pytest

from analysis.trajectory import read_trajectory
from probes.directions import load_directions
from probes.hooked import hook_name
from probes.stages import ProbeConfig, find_study, format_report, run_probe, study_defaults
from probes.store import HOOK_CONVENTION_NOTE
from tests.helpers import lora_checkpoint
from vsfa.errors import ArtifactError
from vsfa.models.adapters import adapter_placement
from vsfa.models.registry import get_family


@contextlib.contextmanager
def logged(lines: list[str]):
    """Collect the INFO messages of ``probes.stages`` into ``lines``."""
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("probes.stages")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def probe(log: list[str] | None = None, **kwargs) -> dict:
    with logged([] if log is None else log):
        return run_probe(ProbeConfig(n_boot=200, n_random=4, **kwargs))


@pytest.fixture(scope="module")
def study_ckpt(quick_study) -> Path:
    return quick_study / "runs" / "vsfa-s0" / "checkpoints" / "step-000008"


def test_a_study_checkpoint_is_probed_with_the_studys_directions_and_sets(quick_study, study_ckpt):
    chosen = json.loads((quick_study / "selection.json").read_text())["chosen"]
    run_manifest = json.loads((quick_study / "runs" / "vsfa-s0" / "manifest.json").read_text())
    assert run_manifest["study"] == str(quick_study)  # the study records which runs are its own
    log: list[str] = []
    rep = probe(log, checkpoint=str(study_ckpt))
    assert log[0].startswith(f"defaults from study {quick_study} (recorded in ")
    assert "directions/persona.json" in log[0] and "splits/requests.evaluation.jsonl" in log[0]
    assert rep["study"] == str(quick_study) and rep["defaults"]["directions"] == "study"
    assert rep["directions"] == str(quick_study / "directions" / "persona.json")
    assert rep["sets"] == ["requests.evaluation"] and rep["contrast"]["name"] == "persona"
    assert (rep["selected"]["hook"], rep["position"], rep["method"]) == (
        chosen["hook"],
        chosen["position"],
        chosen["method"],
    )
    assert [r["hook"] for r in rep["layers"] if r["selected"]] == [chosen["hook"]]
    # the study's own cache: its stages captured these very items on the base
    assert rep["cache"]["base"] == {"hits": 2, "computed": 0}
    # the probe's shift is the study's trajectory value at that checkpoint (track captures the checkpoint with
    # its adapter merged, the probe with it attached: equal up to float rounding)
    df = read_trajectory(quick_study / "runs" / "vsfa-s0", method="all")
    want = df[
        (df["step"] == 8)
        & (df["hook"] == chosen["hook"])
        & (df["position"] == chosen["position"])
        & (df["method"] == chosen["method"])
        & (df["set"] == "requests.evaluation")
        & (df["label"] == "all")
        & (df["metric"] == "shift")
    ]["value"]
    (row,) = [r for r in rep["layers"] if r["selected"]]
    assert row["sets"]["requests.evaluation"]["shift"] == pytest.approx(float(want.iloc[0]), abs=1e-5)
    # the quick study's adapter is on every layer: nothing to warn about
    assert all(r["has_adapter"] and not r["fixed_by_construction"] for r in rep["layers"])
    assert rep["warnings"] == [] and rep["hook_convention"] == HOOK_CONVENTION_NOTE
    text = format_report(rep)
    assert "lora: yes = on this layer" in text and "warning" not in text


def test_explicit_options_override_the_study(quick_study, study_ckpt, tmp_path):
    log: list[str] = []
    rep = probe(log, checkpoint=str(study_ckpt), sets=["neutral"], acts=str(tmp_path / "acts"))
    assert rep["sets"] == ["neutral"] and rep["directions"] == str(
        quick_study / "directions" / "persona.json"
    )
    assert rep["stores"]["checkpoint"]["neutral"].startswith(str(tmp_path / "acts"))
    assert log[0].endswith("; --sets given") and "(its evaluation split)" not in log[0]
    # other directions (another selected layer) and the study's split: the given directions and their selection
    study = load_directions(quick_study / "directions" / "persona.json")
    other = next(h for h in study.hooks if h != study.selected["hook"])
    mine = study.with_selected(other, study.selected["position"], "dom", "test").save(tmp_path / "mine")
    log = []
    rep = probe(log, checkpoint=str(study_ckpt), directions=str(mine))
    assert rep["directions"] == str(mine) and rep["defaults"] == {
        "directions": "option",
        "sets": "study",
        "line": log[0],
    }
    assert [r["hook"] for r in rep["layers"] if r["selected"]] == [other] and rep["method"] == "dom"
    assert rep["sets"] == ["requests.evaluation"] and "--directions given" in log[0]


def test_which_study_a_checkpoint_belongs_to(tmp_path):
    study = tmp_path / "study"
    ckpt = study / "runs" / "vsfa-s0" / "checkpoints" / "step-000001"
    ckpt.mkdir(parents=True)
    assert find_study(ckpt) is None  # no study folder above it
    (study / "study.json").write_text("{}")  # a study started, not finished
    assert find_study(ckpt) == (study, "found by its path STUDY/runs/<run>/checkpoints/<step>")
    with pytest.raises(ArtifactError, match="is incomplete .* pass --directions and --sets"):
        study_defaults(*find_study(ckpt))
    (study / "manifest.json").write_text(json.dumps({"kind": "vsfa.study", "selection": {}}))
    with pytest.raises(ArtifactError, match="no chosen hook / position / method"):
        study_defaults(*find_study(ckpt))
    # a run elsewhere that names its study in its manifest
    run = tmp_path / "moved" / "vsfa-s0"
    (run / "checkpoints" / "step-000001").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"study": str(study)}))
    assert find_study(run / "checkpoints" / "step-000001") == (study, f"recorded in {run / 'manifest.json'}")
    assert find_study(tmp_path / "moved") is None


def test_adapter_placement_from_the_adapter_files(tiny_model, tmp_path):
    base = tiny_model("llava")
    llava = get_family("llava")
    top = adapter_placement(lora_checkpoint(base, tmp_path / "top", "1"), llava, 2)
    assert top.layers == {1} and top.upstream == () and top.source == "adapter_model.safetensors"
    assert [top.has_adapter(i) for i in (0, 1)] == [False, True]
    assert [top.fixed(i) for i in (0, 1)] == [True, False] and top.fixed(1, "hook_resid_pre")
    bottom = adapter_placement(lora_checkpoint(base, tmp_path / "bottom", "0"), llava, 2)
    assert [bottom.has_adapter(i) for i in (0, 1)] == [True, False] and not bottom.fixed(1)
    # a trained projector feeds every layer: nothing is fixed
    projector = lora_checkpoint(base, tmp_path / "proj", "1", modules_to_save=["multi_modal_projector"])
    placed = adapter_placement(projector, llava, 2)
    assert placed.layers == {1} and placed.upstream and not placed.fixed(0)
    # without the weights file: layers_to_transform when the config has it, else unknown
    config = json.loads((tmp_path / "top" / "adapter_config.json").read_text())
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "adapter_config.json").write_text(json.dumps({**config, "layers_to_transform": [1]}))
    assert adapter_placement(bare, llava, 2).layers == {1}
    (bare / "adapter_config.json").write_text(json.dumps(config))
    assert adapter_placement(bare, llava, 2) is None
    with pytest.raises(ArtifactError, match="no adapter_config.json"):
        adapter_placement(tmp_path, llava, 2)


def test_a_selected_layer_without_adapter_is_marked_and_warned_about(tiny_model, tmp_path):
    base = tiny_model("llava")
    root = tmp_path / "run"
    ckpt = lora_checkpoint(base, (root / "checkpoints").joinpath("step-000001"), "1")
    quiet: list[str] = []
    rep = probe(quiet, checkpoint=str(ckpt), max_questions=6, sets=["neutral"])
    assert any(line.startswith("defaults (the checkpoint is in no study)") for line in quiet)
    assert rep["adapter"] == {"layers": [1], "upstream": [], "source": "adapter_model.safetensors"}
    rows = {r["hook"]: r for r in rep["layers"]}
    assert rows[hook_name(0)]["has_adapter"] is False and rows[hook_name(0)]["fixed_by_construction"]
    assert rows[hook_name(1)]["has_adapter"] is True and not rows[hook_name(1)]["fixed_by_construction"]
    assert abs(rows[hook_name(0)]["sets"]["neutral"]["shift"]) < 1e-6  # 0 by construction indeed
    assert abs(rows[hook_name(1)]["sets"]["neutral"]["shift"]) > 1e-4
    # select layer 0 and probe again: the warning says its shift is 0 by construction
    dset = load_directions(rep["directions"])
    at0 = dset.with_selected(hook_name(0), rep["position"], "dom", "test").save(tmp_path / "at0")
    rep = probe(checkpoint=str(ckpt), directions=str(at0), sets=["neutral"], json=str(tmp_path / "r.json"))
    (warning,) = rep["warnings"]
    assert warning.startswith(f"the selected layer {hook_name(0)} has no adapter at or below it")
    assert "layers 1 (of 2)" in warning and "0 by construction" in warning
    text = format_report(rep)
    assert text.splitlines()[-1] == f"warning: {warning}"
    lines = text.splitlines()
    assert all(line.split()[1:3] == ["*", "none"] for line in lines if line.startswith(hook_name(0)))
    assert all(line.split()[1] == "yes" for line in lines if line.startswith(hook_name(1)))
    saved = json.loads((tmp_path / "r.json").read_text())
    assert [r["has_adapter"] for r in saved["layers"]] == [False, True] and saved["warnings"] == [warning]
    assert saved["hook_convention"] == HOOK_CONVENTION_NOTE


def test_hook_convention_is_recorded_and_leaves_caches_valid(tiny_model, tmp_path):
    """Stores and direction artifacts state the convention exactly (``hook_convention``); artifacts written
    before the field existed are still read and reused: it is no part of any content key."""
    from probes.capture import Capturer, CaptureSpec, ModelSpec
    from probes.contrasts import load_set
    from probes.stages import DirectionsConfig, run_directions

    base = tiny_model("llava")
    out = tmp_path / "directions" / "persona"
    cfg = DirectionsConfig(model=str(base), out=str(out), separation=None, max_questions=2)
    _, sidecar, capturer = run_directions(cfg)
    (store,) = [p.parent for p in (tmp_path / "acts").glob("*/*/manifest.json")]
    for manifest in (sidecar, store / "manifest.json"):
        meta = json.loads(manifest.read_text())
        assert (
            meta["hook_convention"] == HOOK_CONVENTION_NOTE
            and "before any final norm" in HOOK_CONVENTION_NOTE
        )
        del meta["hook_convention"]  # as written before the field existed
        manifest.write_text(json.dumps(meta))
    with logged([]) as log:
        _, again, _ = run_directions(cfg)
    assert again == sidecar and log == [f"{sidecar}: same inputs, reused"]
    old = load_directions(sidecar)
    assert old.get(hook_name(1), "last").meta["hook_convention"] == HOOK_CONVENTION_NOTE
    cap = Capturer(ModelSpec(str(base)), tmp_path / "acts")
    cap.capture(load_set("persona", max_questions=2), CaptureSpec.from_dict(old.meta["capture"]))
    assert (cap.hits, cap.misses) == (1, 0)
