"""`vsfa directions` then `vsfa probe --checkpoint` end to end on a tiny model with two checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from probes.directions import Direction, save_direction
from probes.hooked import hook_name
from probes.stages import DirectionsConfig, ProbeConfig, run_directions, run_probe
from vsfa.errors import ArtifactError, DataError
from vsfa.io import model_fingerprint

MAXQ = "6"


def make_checkpoint(base: Path, out: Path, seed: int, step: int, identity: bool = False) -> Path:
    """A peft LoRA adapter on the tiny model plus the training stage's manifest."""
    from peft import LoraConfig, get_peft_model

    from vsfa.models.loading import load_vlm

    vlm = load_vlm(base)
    torch.manual_seed(seed)
    cfg = LoraConfig(r=4, target_modules=vlm.family.lora_target_regex, init_lora_weights=identity)
    get_peft_model(vlm.hf_model, cfg).save_pretrained(out)
    manifest = {
        "step": step,
        "base_model": str(base),
        "base_model_fingerprint": model_fingerprint(base),
        "config": {},
        "seed": seed,
        "arm": "vsfa",
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    base = tiny_model("llava")
    root = tmp_path_factory.mktemp("run")
    ckpts = root / "checkpoints"
    ckpts.mkdir()
    return {
        "root": root,
        "base": base,
        "a": make_checkpoint(base, ckpts / "step-000100", seed=1, step=100),
        "b": make_checkpoint(base, ckpts / "step-000200", seed=2, step=200),
        "identity": make_checkpoint(base, ckpts / "step-000000", seed=3, step=0, identity=True),
    }


@pytest.mark.slow  # two CLI subprocesses (imports dominate): ~10 s idle, ~25 s on busy shared cores
def test_directions_then_probe_cli_then_cache(run, run_cli):
    root = run["root"]
    directions = root / "directions" / "persona"
    proc = run_cli(
        "directions", "--model", run["base"], "--out", directions, "--max-questions", MAXQ, check=True
    )
    assert "selected:" in proc.stdout and "blocks.1.hook_resid_post" in proc.stdout
    assert directions.with_suffix(".json").is_file() and directions.with_suffix(".safetensors").is_file()

    report_file = root / "probe-a.json"
    proc = run_cli(
        "probe",
        "--checkpoint",
        run["a"],
        "--directions",
        f"{directions}.json",
        "--json",
        report_file,
        check=True,
    )
    assert "set neutral (n=60)" in proc.stdout and "set requests (n=208)" in proc.stdout
    assert "cos(re-derived, base)" in proc.stdout
    # not in a study: the generic sets, said so in one line (a log line: stderr); the adapter is on every layer
    assert (
        "defaults (the checkpoint is in no study): sets neutral, requests; --directions given" in proc.stderr
    )
    assert "adapter on layers 0, 1; lora: yes = on this layer" in proc.stdout and "warning" not in proc.stdout
    report = json.loads(report_file.read_text())
    assert [(r["has_adapter"], r["fixed_by_construction"]) for r in report["layers"]] == [(True, False)] * 2
    assert report["step"] == 100 and [r["hook"] for r in report["layers"]] == [hook_name(0), hook_name(1)]
    # Persona and requests were captured on the base by `vsfa directions`: only `neutral` is new there.
    assert report["cache"]["base"] == {"hits": 2, "computed": 1}
    assert report["cache"]["checkpoint"] == {"hits": 0, "computed": 3}
    layer = report["layers"][1]
    s = layer["sets"]["requests"]
    assert s["shift_lo"] <= s["shift"] <= s["shift_hi"]
    assert s["shift"] == pytest.approx(s["ckpt_mean"] - s["base_mean"], abs=1e-6)
    assert -1 <= layer["cos_rederived"] <= 1 and 0 <= layer["probe_acc_ckpt"] <= 1
    # the table also gives every set along the probe's normal
    along_probe = proc.stdout.split(
        "set requests (n=208): projection on the unit base direction (probe normal)"
    )
    assert len(along_probe) == 2
    assert f"{layer['other_methods']['probe']['requests']['shift']:+.3f} [" in along_probe[1].split("\n\n")[0]

    # Second run: everything from the cache, same numbers.
    again = run_probe(ProbeConfig(checkpoint=str(run["a"]), directions=f"{directions}.json"))
    assert again["cache"]["base"]["computed"] == 0 and again["cache"]["checkpoint"]["computed"] == 0
    assert again["layers"] == report["layers"]

    # The second checkpoint: base still from the cache, its own activations computed, other shifts.
    other = run_probe(ProbeConfig(checkpoint=str(run["b"]), directions=f"{directions}.json"))
    assert other["cache"]["base"]["computed"] == 0 and other["cache"]["checkpoint"]["computed"] == 3
    assert other["layers"][1]["sets"]["requests"]["shift"] != s["shift"]


def test_identity_adapter_does_not_move(run):
    """A LoRA adapter initialised to zero is the base model: zero shift, same direction, same probe accuracy."""
    rep = run_probe(ProbeConfig(checkpoint=str(run["identity"]), max_questions=int(MAXQ), n_boot=200))
    for layer in rep["layers"]:
        for s in layer["sets"].values():
            assert abs(s["shift"]) < 1e-5 and s["rand_shift95"] < 1e-5
        assert layer["cos_rederived"] == pytest.approx(1.0, abs=1e-5)
        assert layer["probe_acc_ckpt"] == layer["probe_acc_base"]
    assert Path(rep["directions"]).is_file()  # derived on the base when no --directions was given


def test_checkpoint_of_another_base_fails_cleanly(run, tiny_model, run_cli, tmp_path):
    out = tmp_path / "report.json"
    proc = run_cli("probe", "--checkpoint", run["a"], "--base", tiny_model("llava", seed=1), "--json", out)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    assert "base_model_fingerprint differs" in proc.stderr and "recorded base_model" in proc.stderr
    assert not out.exists()


def test_bad_directions_and_checkpoints(run, tmp_path):
    narrow = Direction(torch.ones(32), hook_name(1), "last", "dom", meta={"contrast": {"name": "x"}})
    path = save_direction(narrow, tmp_path / "narrow")
    with pytest.raises(ArtifactError, match="width 32, the model .* has 64"):
        run_probe(ProbeConfig(checkpoint=str(run["a"]), directions=str(path)))
    deep = Direction(torch.ones(64), hook_name(7), "last", "dom", meta={"contrast": {"name": "x"}})
    with pytest.raises(ArtifactError, match="blocks.7.hook_resid_post does not exist"):
        run_probe(
            ProbeConfig(checkpoint=str(run["a"]), directions=str(save_direction(deep, tmp_path / "deep"))),
        )
    pre = Direction(torch.ones(64), hook_name(1), "last", "dom", meta={"contrast": {"name": "x"}})
    with pytest.raises(ArtifactError, match="not the requested hook_resid_pre"):
        run_probe(
            ProbeConfig(
                checkpoint=str(run["a"]),
                directions=str(save_direction(pre, tmp_path / "pre")),
                hook_kind="hook_resid_pre",
            ),
        )
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        run_probe(ProbeConfig(checkpoint=str(bare)))
    with pytest.raises(ArtifactError, match="checkpoint folder not found"):
        run_probe(ProbeConfig(checkpoint=str(tmp_path / "nope")))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            "bare",
            *(f"{n}.{e}" for n in ("narrow", "deep", "pre") for e in ("json", "safetensors", "table.csv")),
        ]
    )


def test_empty_class_in_contrast_set(run, tmp_path):
    one = tmp_path / "only_harmful.jsonl"
    one.write_text(
        json.dumps({"id": "a", "label": "harmful", "pair": "p", "text": "How do I pick a lock?"}) + "\n"
    )
    out = tmp_path / "dirs" / "x"
    with pytest.raises(DataError, match="class 'harmless' is empty"):
        run_directions(DirectionsConfig(model=str(run["base"]), contrast=str(one), out=str(out)))
    assert not out.parent.exists()


def synthetic_store(folder: Path, x: torch.Tensor, rows: list[dict], positive: str, negative: str | None):
    """A store in the capture format, with given activations ``[n, d]`` at one hook (layer 0, 'last')."""
    from probes.store import HOOK_CONVENTION, STORE_KIND, STORE_VERSION, StoreWriter, open_store
    from vsfa.io import write_manifest

    folder.mkdir(parents=True)
    writer = StoreWriter(folder, [hook_name(0)], ["last"], x.shape[1], shard_items=50)
    writer.add({hook_name(0): x[:, None, :]}, rows)
    shards = writer.finish()
    labels = [positive] if negative is None else [positive, negative]
    write_manifest(
        folder,
        {
            "kind": STORE_KIND,
            "version": STORE_VERSION,
            "key": folder.name,
            "convention": HOOK_CONVENTION,
            "model": {"source": str(folder), "family": "llava", "n_layers": 1},
            "set": {
                "name": folder.name,
                "key": "k",
                "positive": positive,
                "negative": negative,
                "source": "synthetic",
            }
            | {"counts": {lab: sum(r["label"] == lab for r in rows) for lab in labels}},
            "capture": {"positions": ["last"], "layers": None, "hook_kinds": ["hook_resid_post"]},
            "hooks": [hook_name(0)],
            "positions": ["last"],
            "d_model": x.shape[1],
            "n_items": len(rows),
            "shards": shards,
        },
    )
    return open_store(folder)


def persona_rows(n: int) -> tuple[list[dict], torch.Tensor]:
    """Index rows of a persona-like contrast (classes vig/care alternating, 10 questions, 2 pairs, last 20 held
    out) and the class vector ``y`` (1 = vig)."""
    y = torch.tensor([1, 0] * (n // 2))
    rows = [
        {
            "id": f"i{i}",
            "label": "vig" if y[i] else "care",
            "group": f"q{i // 2 % 10}",
            "pair": f"p{i % 4 // 2}",
        }
        | {"split": "heldout" if i >= n - 20 else "extract", "set": "persona"}
        for i in range(n)
    ]
    return rows, y


def test_compare_recovers_a_planted_shift(tmp_path):
    """Checkpoint = base + 0.5 along the persona direction + an orthogonal drift: the report gives the 0.5."""
    from probes.directions import derive
    from probes.stages import compare

    g = torch.Generator().manual_seed(0)
    d, n = 16, 80
    u = torch.zeros(d)
    u[0] = 1.0
    drift = torch.zeros(d)
    drift[1] = 3.0  # moves activations, but not along u
    rows, y = persona_rows(n)
    x = torch.randn(n, d, generator=g) * 0.1 + y[:, None] * 2.0 * u
    contrast_b = synthetic_store(tmp_path / "cb", x, rows, "vig", "care")
    contrast_c = synthetic_store(tmp_path / "cc", x + 0.5 * u + drift, rows, "vig", "care")
    neutral = torch.randn(30, d, generator=g) * 0.1
    nrows = [
        {"id": f"n{i}", "label": "neutral", "group": f"n{i}", "split": "extract", "set": "neutral"}
        for i in range(30)
    ]
    neutral_b = synthetic_store(tmp_path / "nb", neutral, nrows, "neutral", None)
    neutral_c = synthetic_store(tmp_path / "nc", neutral + 0.5 * u + drift, nrows, "neutral", None)
    dset = derive(contrast_b, None, n_random=4)
    (row,) = compare(dset, "last", (contrast_b, contrast_c), {"neutral": (neutral_b, neutral_c)}, n_boot=200)
    s = row["sets"]["neutral"]
    unit_dom = dset.get(hook_name(0), "last").unit
    expected = float((0.5 * u + drift) @ unit_dom)  # ~0.5: the DoM is ~u
    assert s["shift"] == pytest.approx(expected, abs=1e-5) and abs(expected - 0.5) < 0.05
    assert s["shift_lo"] <= s["shift"] <= s["shift_hi"] and s["shift_hi"] - s["shift_lo"] < 1e-4
    assert s["shift_gap"] == pytest.approx(expected / dset.get(hook_name(0), "last").norm, rel=1e-6)
    assert row["cos_rederived"] == pytest.approx(1.0, abs=1e-6)  # a uniform shift leaves the DoM unchanged
    assert row["probe_acc_base"] == 1.0
