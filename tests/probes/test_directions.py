"""Directions on captured activations: per-layer table, selection, the Direction artifact and its checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from probes.capture import Capturer, CaptureSpec, ModelSpec
from probes.contrasts import persona_set, requests_set
from probes.directions import (
    Direction,
    derive,
    load_direction,
    load_directions,
    project,
    save_direction,
    shift_vector,
)
from probes.hooked import hook_name
from probes.store import HOOK_CONVENTION
from vsfa.errors import ArtifactError, DataError
from vsfa.io import model_fingerprint


@pytest.fixture(scope="module")
def stores(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("acts")
    cap = Capturer(ModelSpec(str(tiny_model("llava"))), root, batch_size=32, progress=False)
    spec = CaptureSpec(positions=("last", "eoi_mean"))
    return cap.capture(persona_set(max_questions=6), spec), cap.capture(requests_set(), spec)


@pytest.fixture(scope="module")
def saved(stores, tmp_path_factory):
    dset = derive(*stores, n_random=8)
    return dset, dset.save(tmp_path_factory.mktemp("dirs") / "persona")


def test_table_covers_every_layer_and_position(stores, saved):
    contrast, _ = stores
    dset, path = saved
    assert len(dset.table) == 2 * 2  # 2 layers x 2 positions
    row = dset.table[0]
    for key in (
        "acc_q",
        "acc_pair",
        "auroc_pair",
        "d",
        "cos_probe_dom",
        "sep_auroc",
        "rand_d95",
        "rand_sep95",
    ):
        assert key in row
    assert row["n_pos"] == row["n_neg"] == contrast.mask(split="extract").sum() // 2
    assert sum(r["selected"] for r in dset.table) == 1
    csv_lines = path.with_name("persona.table.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(dset.table) and csv_lines[0].startswith("hook,position")
    # The DoM row's stored vector is exactly the class-mean difference over the extract split.
    x = contrast.load(hook_name(1), "last").double().numpy()
    keep = contrast.mask(split="extract")
    y = contrast.y()[keep]
    expected = x[keep][y == 1].mean(0) - x[keep][y == 0].mean(0)
    got = dset.get(hook_name(1), "last", "dom").vector.double().numpy()
    assert np.allclose(got, expected, atol=1e-6)


def test_batched_cv_gives_the_same_table(stores, saved):
    """``batched_cv`` (all layers x positions in one torch L-BFGS) reproduces the per-row scikit-learn CV."""
    dset, _ = saved
    fast = derive(*stores, n_random=8, batched_cv=True)
    assert [r["hook"] for r in fast.table] == [r["hook"] for r in dset.table]
    for a, b in zip(fast.table, dset.table, strict=True):
        for key in ("auroc_q", "auroc_pair"):
            assert a[key] == pytest.approx(b[key], abs=0.005)
        assert a["dom_auroc_pair"] == pytest.approx(b["dom_auroc_pair"], abs=1e-6)
    assert [r["selected"] for r in fast.table] == [r["selected"] for r in dset.table]


def test_artifact_round_trip_with_provenance(tiny_model, saved):
    dset, path = saved
    loaded = load_directions(path)
    meta = loaded.meta
    assert meta["convention"] == HOOK_CONVENTION
    assert meta["d_model"] == 64 and meta["checkpoint"] is None
    assert meta["model"]["fingerprint"] == model_fingerprint(tiny_model("llava"))
    assert meta["contrast"]["name"] == "persona" and set(meta["contrast"]["n_per_class"]) == {
        "vigilant",
        "carefree",
    }
    assert meta["separation"]["name"] == "requests"
    d = load_direction(path)
    assert (d.hook, d.position) == (dset.selected["hook"], dset.selected["position"])
    assert torch.equal(d.vector, dset.get().vector)
    assert d.meta["convention"] == HOOK_CONVENTION
    probe = loaded.get(d.hook, d.position, "probe")
    assert probe.bias is not None and probe.vector.shape == (64,)
    acts = torch.randn(5, 64)
    assert np.allclose(project(acts, d), acts.double().numpy() @ d.unit.double().numpy())


def test_artifact_checks(saved, tmp_path):
    _, path = saved
    loaded = load_directions(path)
    with pytest.raises(ArtifactError, match="width 64, the model has 32"):
        loaded.check_fits(32, 2)
    with pytest.raises(ArtifactError, match="does not exist in a 1-layer model"):
        loaded.check_fits(64, 1)
    with pytest.raises(ArtifactError, match="not the requested hook_resid_pre"):
        loaded.check_fits(64, 2, "hook_resid_pre")
    loaded.check_fits(64, 2, "hook_resid_post")

    # Tampered tensors, another convention, a missing sidecar: each a one-line ArtifactError.
    work = tmp_path / "d"
    d = load_direction(path)
    out = save_direction(d, work)
    tensors = load_file(str(work.with_suffix(".safetensors")))
    key = next(iter(tensors))
    save_file({key: tensors[key] * 2}, str(work.with_suffix(".safetensors")))
    with pytest.raises(ArtifactError, match="do not match the sidecar"):
        load_directions(out)
    save_direction(d, work)
    meta = json.loads(out.read_text())
    meta["convention"] = "HF hidden_states[l]"
    out.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="hook convention"):
        load_directions(out)
    with pytest.raises(ArtifactError, match="sidecar not found"):
        load_directions(tmp_path / "nothing.json")


def test_no_separation_means_no_selection(stores):
    dset = derive(stores[0], None, n_random=4)
    assert dset.selected is None and "no separation" in dset.meta["selection_note"]
    with pytest.raises(ArtifactError, match="no layer was selected"):
        dset.get()


def test_empty_class_and_non_finite_store(stores, tmp_path):
    contrast, requests = stores
    with pytest.raises(DataError, match="empty class"):
        derive(contrast, _one_class_copy(requests, tmp_path))
    # A NaN in a shard (a corrupted or hand-made store) is refused when loaded.
    shard = contrast.folder / contrast.manifest["shards"][0]["file"]
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in contrast.folder.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    tensors = load_file(str(shard))
    tensors[hook_name(0)][0, 0, 0] = float("inf")
    save_file(tensors, str(broken / shard.name))
    from probes.store import open_store

    with pytest.raises(ArtifactError, match="non-finite activations"):
        derive(open_store(broken), requests)


def _one_class_copy(store, tmp_path):
    """The same store with every label set to the positive class."""
    from probes.store import open_store

    dst = tmp_path / "oneclass"
    dst.mkdir()
    for f in store.folder.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    rows = [
        json.loads(line) | {"label": store.positive}
        for line in (dst / "index.jsonl").read_text().splitlines()
    ]
    (dst / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return open_store(dst)


def test_shift_vector_between_identical_stores_is_zero(stores, tmp_path):
    contrast, _ = stores
    shift = shift_vector(contrast, contrast, hook_name(1), "last")
    assert shift.method == "shift" and float(shift.vector.abs().max()) == 0.0
    d = Direction(torch.ones(64), hook_name(1), "last", "shift", meta={"contrast": {"name": "x"}})
    back = load_direction(save_direction(d, tmp_path / "shift"))
    assert back.method == "shift" and torch.equal(back.vector, d.vector)
