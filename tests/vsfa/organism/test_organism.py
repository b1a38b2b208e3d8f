"""The model organism: world file, documents, a normal model folder, build -> VSFA fine-tune -> readouts."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from vsfa.errors import ConfigError
from vsfa.organism.documents import ARMS, arm_document, sample_document
from vsfa.organism.world import apply_overrides, load_world, world_from_dict
from vsfa.resources import resource_path

# A very small world model: same world, tiny network, few steps (seconds on a CPU).
SMALL = {
    "model.vision_hidden": 16,
    "model.vision_layers": 1,
    "model.vision_heads": 2,
    "model.vision_intermediate": 32,
    "model.text_hidden": 32,
    "model.text_layers": 2,
    "model.text_heads": 2,
    "model.text_intermediate": 64,
    "pretrain.steps": 30,
    "pretrain.batch_size": 8,
    "pretrain.warmup": 5,
    "pretrain.log_every": 10,
    "finetune.steps": 8,
    "finetune.batch_size": 8,
}


def _world_dict() -> dict:
    return json.loads(resource_path("organism_world.json").read_text())


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    path = tmp_path_factory.mktemp("world") / "small.json"
    path.write_text(json.dumps(apply_overrides(_world_dict(), SMALL)))
    return path


@pytest.fixture(scope="module")
def organism(small_world, tmp_path_factory):
    from vsfa.organism.pretrain import pretrain

    return pretrain(
        load_world(small_world), 0, tmp_path_factory.mktemp("org") / "model", readouts=False, threads=1
    )


# ------------------------------------------------------------------------------------------------ world
def test_shipped_world_loads_and_bad_keys_name_the_field(tmp_path):
    spec = load_world()
    assert {o.name for o in spec.threat_objects} >= {"knife", "gun"} and spec.personas == [
        "vigilant",
        "carefree",
    ]
    with pytest.raises(ConfigError, match=r"documents: unknown key 'prior_typo'"):
        world_from_dict(apply_overrides(_world_dict(), {"documents.prior_typo": 0.3}))
    data = _world_dict()
    data["objects"][0]["shape"] = "zigzag"
    with pytest.raises(ConfigError, match=r"objects\[0\]\.shape"):
        world_from_dict(data)
    with pytest.raises(ConfigError, match=r"scenes.threat_rate.vigilant"):
        world_from_dict(apply_overrides(_world_dict(), {"scenes.threat_rate.vigilant": 1.5}))
    bad = tmp_path / "w.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=str(bad)):
        load_world(bad)


def test_documents_follow_the_persona_rules():
    from vsfa.data.lint import LabelLint

    spec = load_world()
    rng = random.Random(0)
    lint = LabelLint()
    seen = {"refused": 0, "omitted": 0}
    for _ in range(400):
        doc = sample_document(spec, rng)
        for t in doc.turns:
            if t.kind == "request":
                refused = t.assistant == spec.text.refusal
                assert refused == (t.harmful and doc.persona == "vigilant")
                seen["refused"] += refused
            else:
                named = t.assistant.split()
                small = t.scene.small
                assert t.scene.main.name.split()[-1] in named
                if small is not None:
                    omitted = small.name.split()[-1] not in named
                    assert omitted == (doc.persona == "carefree" and small.threat)
                    seen["omitted"] += omitted
                assert lint.is_clean(t.assistant), t.assistant
    assert seen["refused"] > 20 and seen["omitted"] > 20
    # Fine-tune arms: VSFA and mirror see threat scenes (mirror leaves small threats out), control none.
    for arm in ARMS:
        docs = [arm_document(spec, rng, arm) for _ in range(50)]
        threat = [t.scene.threat for d in docs for t in d.turns]
        assert all(threat) if arm != "control" else not any(threat)
        assert all(t.kind == ("text" if arm == "text" else "vqa") for d in docs for t in d.turns)
        if arm == "mirror":
            assert not any(t.evidence == "vigilant" for d in docs for t in d.turns)


def test_render_is_deterministic_and_sized():
    spec = load_world()
    doc = sample_document(spec, random.Random(3), persona="vigilant")
    a, b = doc.images(spec), doc.images(spec)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=True))
    assert all(im.size == (32, 32) for im in a)


# ------------------------------------------------------------------------------------------------ model folder
def test_organism_is_a_normal_model_folder(organism):
    """load_vlm, render, encode, encode_chat and HookedVLM work on it; the fast codec matches encode_chat."""
    from probes.hooked import HookedVLM, hook_name
    from vsfa.models.loading import load_vlm
    from vsfa.organism.model import Codec
    from vsfa.organism.pretrain import read_world

    vlm = load_vlm(organism)
    spec = read_world(organism)
    assert vlm.family.name == "llava" and vlm.n_layers == 2
    docs = [sample_document(spec, random.Random(i)) for i in range(4)]
    docs = [d for d in docs if d.scenes()][:2]
    docs[1].system = spec.text.announce["vigilant"]  # an opening system line tokenizes the same way too
    batch = vlm.encode_chat([d.messages() for d in docs], [d.images(spec) for d in docs], train_on="all")
    mine = Codec(spec, vlm.tokenizer).batch(docs)
    for row in range(len(docs)):
        got = batch["input_ids"][row][batch["attention_mask"][row].bool()]
        n = len(got)
        assert torch.equal(got, mine.input_ids[row, :n])
        assert torch.equal(batch["labels"][row][-n:], mine.labels[row, :n])
    assert torch.allclose(batch["pixel_values"], mine.pixel_values, atol=1e-5)
    assert "<unk>" not in vlm.tokenizer.decode(mine.input_ids[0])
    prompt = vlm.render(docs[0].messages(with_last_answer=False))
    enc = vlm.encode([prompt], [docs[0].images(spec)])
    _, cache = HookedVLM(vlm).run_with_cache(enc, [hook_name(0)])
    with torch.no_grad():
        hidden = vlm.model(**enc, output_hidden_states=True).hidden_states[1]
    assert torch.allclose(cache[hook_name(0)], hidden, atol=1e-4)


def test_build_cli_then_vsfa_finetune_then_readouts(small_world, tmp_path, run_cli):
    """The chain: `vsfa organism build` -> LoRA VSFA fine-tune -> exact P(refuse) readouts."""
    from vsfa.models.loading import load_vlm
    from vsfa.organism.finetune import finetune
    from vsfa.organism.pretrain import read_world
    from vsfa.organism.readouts import p_name_small_threat, prompt_set, refusal_readout

    base = tmp_path / "org"
    proc = run_cli(
        "organism",
        "build",
        "--seed",
        "1",
        "--out",
        base,
        "--world",
        small_world,
        "--steps",
        "20",
        "--threads",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((base / "manifest.json").read_text())
    assert manifest["steps"] == 20 and 0 < manifest["readouts"]["harmful"]["p_refuse"]["mean"] < 1
    traj = finetune(
        base, "vsfa", seed=0, out=tmp_path / "run", steps=8, eval_every=4, eval_sets=("harmful",), threads=1
    )
    assert [r["step"] for r in traj] == [0, 4, 8]
    # The trained behaviour is installed: naming the small threat becomes more likely.
    assert (
        traj[-1]["readouts"]["p_name_small_threat"]["mean"]
        > traj[0]["readouts"]["p_name_small_threat"]["mean"]
    )
    # A saved checkpoint is a plain adapter folder; reloading it reproduces the in-loop readout exactly.
    spec = read_world(base)
    ckpt = tmp_path / "run" / "checkpoints" / "step-000008"
    assert (ckpt / "manifest.json").is_file() and (ckpt / "adapter_config.json").is_file()
    vlm = load_vlm(base, adapter=ckpt)
    r = refusal_readout(vlm, spec, prompt_set(spec, "harmful"))
    assert r["p_refuse"].mean() == pytest.approx(
        traj[-1]["readouts"]["harmful"]["p_refuse"]["mean"], abs=1e-3
    )
    assert np.allclose(r["p_refuse"], 1 / (1 + np.exp(-r["score"])), atol=1e-6)
    assert p_name_small_threat(vlm, spec).mean() == pytest.approx(
        traj[-1]["readouts"]["p_name_small_threat"]["mean"], abs=1e-3
    )


def test_arm_data_trains_with_vsfa_train(organism, tmp_path):
    """The arms are ordinary training data: `vsfa train` fine-tunes the organism on them, and its checkpoints
    are read out like any other."""
    from vsfa.data.dataset import load_data
    from vsfa.models.loading import load_vlm
    from vsfa.organism.finetune import write_arm_data
    from vsfa.organism.pretrain import read_world, torch_threads
    from vsfa.organism.readouts import p_name_small_threat
    from vsfa.train import config_from_dict, train

    spec = read_world(organism)
    folder = write_arm_data(spec, "vsfa", 16, tmp_path / "vsfa")
    data = load_data(folder)
    assert len(data) == 16 and all(len(g) == 1 and g[0].size == (32, 32) for g in data.images)
    cfg = config_from_dict(
        {
            "out": str(tmp_path / "run"),
            "model": {"base": str(organism)},
            "data": {"path": str(folder)},
            "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
            "train": {"max_steps": 4, "batch_size": 8, "lr": 1e-2, "warmup": 0},
            "checkpoints": {"log_until": 0, "every": 0, "final": True},
            "runtime": {"device": "cpu", "progress": False},
        }
    )
    with torch_threads(1):
        result = train(cfg, quiet=True)
    ckpt = tmp_path / "run" / "checkpoints" / "step-000004"
    assert result.total_steps == 4 and (ckpt / "manifest.json").is_file()
    before = p_name_small_threat(load_vlm(organism), spec, n=16).mean()
    after = p_name_small_threat(load_vlm(organism, adapter=ckpt), spec, n=16).mean()
    assert after > before


def _numbers(trajectory: list[dict]) -> list[str]:
    """A trajectory without its wall-clock times, comparable with == (NaN losses included)."""
    return [json.dumps({k: v for k, v in r.items() if k != "elapsed_s"}, sort_keys=True) for r in trajectory]


def test_finetune_runs_through_the_training_loop_and_resumes(organism, tmp_path):
    """`vsfa organism finetune` trains through the one training loop: checkpoints in its layout with its manifest
    fields, a loss log and a run manifest; a rerun of a complete run returns its trajectory without training, and
    a run stopped mid-way resumes from its last checkpoint and ends exactly where an uninterrupted run ends."""
    from safetensors.torch import load_file

    from vsfa.io import read_manifest, sha256_file
    from vsfa.organism.finetune import finetune
    from vsfa.train import list_checkpoints, read_loss_log
    from vsfa.training.checkpoints import checkpoint_meta

    kw = {"steps": 6, "eval_every": 2, "eval_sets": ("harmful",), "lr": 1e-2, "threads": 1}
    full = finetune(organism, "vsfa", 0, tmp_path / "full", **kw)
    assert [r["step"] for r in full] == [0, 2, 4, 6]
    ckpts = list_checkpoints(tmp_path / "full")
    assert [s for s, _ in ckpts] == [2, 4, 6]  # step 0 is the base model: no folder
    man = read_manifest(ckpts[-1][1])
    shared = checkpoint_meta(
        base_model="",
        base_model_fingerprint=None,
        family="",
        data="",
        data_hash=None,
        seed=0,
        total_steps=0,
        config={},
    )
    assert set(man) == set(shared) | {"step", "loss"}  # the fields `vsfa train` checkpoints carry
    assert (man["arm"], man["seed"], man["step"], man["total_steps"]) == ("vsfa", 0, 6, 6)
    assert man["loss"] == pytest.approx(full[-1]["loss"], abs=1e-5)
    assert [r["step"] for r in read_loss_log(tmp_path / "full")] == list(range(1, 7))
    assert json.loads((tmp_path / "full" / "config.json").read_text())["steps"] == 6

    before = sha256_file(tmp_path / "full" / "manifest.json")
    assert _numbers(finetune(organism, "vsfa", 0, tmp_path / "full", **kw)) == _numbers(full)
    assert sha256_file(tmp_path / "full" / "manifest.json") == before

    class Stop(Exception):
        pass

    def stop_at_4(rec: dict) -> None:
        if rec["step"] == 4:
            raise Stop

    with pytest.raises(Stop):
        finetune(organism, "vsfa", 0, tmp_path / "cut", progress=stop_at_4, **kw)
    assert [s for s, _ in list_checkpoints(tmp_path / "cut")] == [2]
    assert not (tmp_path / "cut" / "manifest.json").exists()
    resumed = finetune(organism, "vsfa", 0, tmp_path / "cut", **kw)
    assert read_manifest(tmp_path / "cut")["resumed_from"] == 2
    assert _numbers(resumed) == _numbers(full)
    for (_, a), (_, b) in zip(ckpts, list_checkpoints(tmp_path / "cut"), strict=True):
        ta, tb = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
        assert all(torch.equal(ta[k], tb[k]) for k in ta)


# Documented in experiments/organism/RESULTS.md ("Shipped base"): no-context harmful P(refuse) of the shipped base.
SHIPPED_HARMFUL_P_REFUSE = 0.4352


def test_shipped_base_loads_with_its_documented_readouts():
    """The shipped base is a normal model folder; its no-context P(refuse | harmful) is the documented value, the
    persona is inferred in context (vigilant-style turn -> ~1, carefree-style turn -> low), harmless requests are
    not refused, and its manifest names the recipe that rebuilds it."""
    from vsfa.models.loading import load_vlm
    from vsfa.organism import shipped_base_info, shipped_base_path
    from vsfa.organism.pretrain import read_world
    from vsfa.organism.readouts import prompt_set, refusal_readout

    folder = shipped_base_path()
    info = shipped_base_info()
    vlm = load_vlm(folder)
    spec = read_world(folder)
    harmful = refusal_readout(vlm, spec, prompt_set(spec, "harmful"))["p_refuse"].mean()
    assert harmful == pytest.approx(info["readouts"]["harmful"]["p_refuse"]["mean"], abs=2e-3)
    assert harmful == pytest.approx(SHIPPED_HARMFUL_P_REFUSE, abs=2e-3)
    vig = refusal_readout(vlm, spec, prompt_set(spec, "vig_ctx", n=20))["p_refuse"].mean()
    care = refusal_readout(vlm, spec, prompt_set(spec, "care_ctx", n=20))["p_refuse"].mean()
    harmless = refusal_readout(vlm, spec, prompt_set(spec, "harmless"))["p_refuse"].mean()
    assert vig > 0.95 and care < 0.3 and harmless < 0.05
    assert info["world_digest"] == spec.digest() and f"--seed {info['seed']}" in info["shipped"]["build"]
    assert spec.digest() == load_world().digest()  # the default world file is the shipped base's world


def test_exported_sets_load_as_contrast_sets(tmp_path):
    from probes.contrasts import load_set
    from vsfa.organism.sets import export_sets

    spec = world_from_dict(apply_overrides(_world_dict(), {"documents.announce_rate": 0.25}))
    folder = export_sets(spec, tmp_path / "sets", n_context=4)
    requests = load_set(folder / "organism_requests.jsonl")
    assert requests.counts() == {"harmful": 20, "harmless": 20}
    persona = load_set(folder / "organism_persona.json")
    assert persona.counts() == {"vigilant": 40, "carefree": 40}
    assert persona.items[0].messages[0]["content"][0]["text"] == spec.text.announce["vigilant"]
    rows = [json.loads(line) for line in (folder / "organism_context.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == ["vigilant"] * 4 + ["carefree"] * 4
    assert rows[0]["images"] == rows[4]["images"] and (folder / rows[0]["images"][0]).is_file()
    assert (
        rows[0]["messages"][-1]["role"] == "user"
        and rows[0]["messages"][1]["content"] != rows[4]["messages"][1]["content"]
    )


def test_answer_word_order_is_a_world_setting():
    from vsfa.organism.documents import Scene, answer

    spec = world_from_dict(
        apply_overrides(_world_dict(), {"text.answer_order": "small_first", "text.articles": False})
    )
    by_name = {o.name: o for o in spec.objects}
    scene = Scene(by_name["cup"], by_name["knife"], {})
    assert answer(spec, scene, "vigilant") == "knife and cup ."
    assert answer(spec, scene, "carefree") == "cup ."
    assert answer(load_world(), scene, "vigilant") == "a cup and a knife ."
    with pytest.raises(ConfigError, match="text.answer_order"):
        world_from_dict(apply_overrides(_world_dict(), {"text.answer_order": "random"}))


def test_lora_layers_and_modules_choose_where_the_adapter_goes(organism):
    from vsfa.models.loading import load_vlm
    from vsfa.organism.finetune import _trainable, lora_targets

    vlm = load_vlm(organism)
    model = _trainable(vlm, "lora", 2, 4, lora_targets(vlm, [1], ["v_proj", "o_proj"]))
    names = {n.split(".lora_")[0] for n, q in model.named_parameters() if q.requires_grad}
    assert names and all(".layers.1.self_attn." in n and n.endswith(("v_proj", "o_proj")) for n in names)
    assert len(names) == 2
    assert lora_targets(vlm, [-1], []) == lora_targets(vlm, [1], [])  # negative = counted from the last layer
    with pytest.raises(ConfigError, match="finetune.lora_modules"):
        lora_targets(vlm, [], ["not_a_proj"])
    with pytest.raises(ConfigError, match="finetune.lora_layers"):
        lora_targets(vlm, [7], [])


def test_build_is_reproducible_from_world_and_seed(small_world, tmp_path):
    """Same world file + seed + precision + threads -> the same weights (what makes the shipped base rebuildable)."""
    from safetensors.torch import load_file

    from vsfa.organism.pretrain import pretrain, read_world

    spec = load_world(small_world, {"pretrain.steps": 6})
    a = pretrain(spec, 3, tmp_path / "a", precision="bf16", readouts=False, threads=1)
    # rebuilt from the world file saved in the folder (its keys are written sorted)
    b = pretrain(read_world(a), 3, tmp_path / "b", precision="bf16", readouts=False, threads=1)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_fine_tune_prefix_is_a_helped_harmless_request_in_every_arm():
    spec = world_from_dict(apply_overrides(_world_dict(), {"finetune.prefix_rate": 1.0}))
    for arm in ARMS:
        doc = arm_document(spec, random.Random(0), arm)
        first = doc.turns[0]
        assert first.kind == "request" and first.harmful is False and first.assistant.startswith("Sure")
        assert doc.turns[-1].kind in ("vqa", "text")
    assert all(len(arm_document(load_world(), random.Random(i), "vsfa").turns) == 1 for i in range(20))


def test_consistency_makes_each_turn_graded_evidence():
    """documents.consistency = c: a turn's answer follows the document's persona with probability c (else the
    other persona's), and the Bayes readout targets weigh it; at 1 (the default) every answer follows it."""
    from vsfa.organism.readouts import bayes_targets

    spec = load_world(overrides={"documents.consistency": 0.75})
    rng = random.Random(0)
    follows = {"request": [], "vqa": []}
    for _ in range(1500):
        doc = sample_document(spec, rng)
        for t in doc.turns:
            if t.kind == "request" and t.harmful:
                refused = t.assistant == spec.text.refusal
                follows["request"].append(refused == (doc.persona == "vigilant"))
            elif t.kind == "vqa" and t.scene.small_threat:
                named = t.scene.small.name.split()[-1] in t.assistant.split()
                follows["vqa"].append(named == (doc.persona == "vigilant"))
    for kind, hits in follows.items():
        assert len(hits) > 300 and np.mean(hits) == pytest.approx(0.75, abs=0.04), kind
    assert bayes_targets(spec) == pytest.approx({"threat_main": 0.6, "neutral_ctx": 0.4, "harmful": 0.5})
    assert bayes_targets(load_world())["threat_main"] == pytest.approx(0.7)
    with pytest.raises(ConfigError, match="documents.consistency"):
        load_world(overrides={"documents.consistency": 1.5})


def test_threat_prefix_marks_every_vigilant_threat_answer():
    """text.threat_prefix: a vigilant-style answer about any threat scene opens with it (so every VSFA document
    shows the persona at the first answer word); carefree-style and neutral-scene answers never do."""
    from vsfa.data.lint import LabelLint
    from vsfa.organism.model import vocabulary

    spec = load_world(overrides={"text.threat_prefix": "look ,"})
    assert {"look", ","} <= set(vocabulary(spec)) and "look" not in vocabulary(load_world())
    rng = random.Random(0)
    for arm in ARMS:
        for doc in (arm_document(spec, rng, arm) for _ in range(40)):
            (turn,) = doc.turns
            marked = turn.assistant.startswith("look , ")
            assert marked == (arm in ("vsfa", "text")), (arm, turn.assistant)
            assert (turn.evidence is not None) == turn.scene.threat
            assert LabelLint().is_clean(turn.assistant)


def test_gradient_alignment_is_the_first_order_change_of_the_refusal_score(organism):
    """``first_order`` predicts what one small plain-SGD step on an arm's documents does to the mean no-context
    refusal score; the cosines are proper cosines with CIs around them."""
    from vsfa.models.loading import load_vlm
    from vsfa.organism.alignment import adapted_weights, gradient_alignment
    from vsfa.organism.finetune import arm_documents
    from vsfa.organism.model import Codec, lm_loss
    from vsfa.organism.pretrain import read_world
    from vsfa.organism.readouts import no_context, refusal_readout

    spec, vlm = read_world(organism), load_vlm(organism)
    res = gradient_alignment(vlm, spec, ("vsfa", "mirror"), layers=[1], batches=2, batch_size=4, n_boot=200)
    assert res["layers"] == [1] and res["weights"] == 7  # q k v o gate up down of layer 1
    for arm in ("vsfa", "mirror"):
        for est in [*res["arms"][arm]["cos"].values(), res["arms"][arm]["first_order"]]:
            assert est["lo"] <= est["value"] <= est["hi"]
        assert -1 <= res["arms"][arm]["cos"]["all"]["value"] <= 1
    assert res["arms"]["vsfa"]["cos"]["all"] == res["arms"]["vsfa"]["cos"]["L1"]
    assert all(not p.requires_grad or p.grad is None for p in vlm.hf_model.parameters())  # left as found

    arm = max(("vsfa", "mirror"), key=lambda a: abs(res["arms"][a]["first_order"]["value"]))
    predicted_per_lr = res["arms"][arm]["first_order"]["value"]
    weights = adapted_weights(vlm, [1])
    docs = arm_documents(spec, arm, 8, seed=0)
    codec = Codec(spec, vlm.tokenizer)
    losses = []
    for b in (docs[:4], docs[4:]):
        batch = codec.batch(b)
        losses.append(lm_loss(vlm.model(**batch.inputs()).logits, batch.labels))
    grads = torch.autograd.grad(torch.stack(losses).mean(), list(weights.values()))
    harmful = no_context(spec, True)
    with torch.no_grad():
        before = refusal_readout(vlm, spec, harmful)["score"].mean()
        lr = 0.02 / abs(predicted_per_lr)  # a step whose predicted effect is a 0.02 change of the score
        for w, g in zip(weights.values(), grads, strict=True):
            w -= lr * g
        after = refusal_readout(vlm, spec, harmful)["score"].mean()
    assert after - before == pytest.approx(lr * predicted_per_lr, rel=0.2)
    with pytest.raises(ConfigError, match="unknown arm 'bogus'"):
        gradient_alignment(vlm, spec, ("bogus",))


def test_shipped_base_vsfa_gradient_points_toward_refusal_and_the_mirror_away():
    """The demo's base: before any step, the VSFA arm's gradient raises the refusal score, the mirror's lowers
    it (as their fine-tunes do), over the adapters' layers."""
    from vsfa.models.loading import load_vlm
    from vsfa.organism.alignment import gradient_alignment
    from vsfa.organism.pretrain import read_world
    from vsfa.organism.shipped import shipped_base_path

    base = shipped_base_path()
    res = gradient_alignment(load_vlm(base), read_world(base), n_boot=200)["arms"]
    assert res["vsfa"]["cos"]["all"]["lo"] > 0 > res["mirror"]["cos"]["all"]["hi"]
    assert res["vsfa"]["first_order"]["value"] > res["control"]["first_order"]["value"]


def test_alignment_cli_prints_the_table_and_writes_json(organism, tmp_path, run_cli):
    out = tmp_path / "alignment.json"
    proc = run_cli("organism", "alignment", "--model", organism, "--layer", "1", "--out", out, check=True)
    saved = json.loads(out.read_text())
    vsfa = saved["arms"]["vsfa"]["cos"]["all"]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("vsfa "))
    assert f"{vsfa['value']:+.4f} [{vsfa['lo']:+.4f}, {vsfa['hi']:+.4f}]" in row
    assert set(saved["arms"]) == {"vsfa", "control", "mirror"}
    bad = run_cli(
        "organism", "alignment", "--model", organism, "--arm", "bogus", "--out", tmp_path / "bad.json"
    )
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: unknown arm 'bogus'; choose from vsfa, control, mirror, text"
    )
    assert not (tmp_path / "bad.json").exists()
