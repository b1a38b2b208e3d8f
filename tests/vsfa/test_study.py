"""`vsfa demo --study quick`: every stage's artifact exists and is consistent; bad input is refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from analysis.causal import SteerConfig, steer
from analysis.trajectory import read_track_manifest, read_trajectory
from figures import fig_trajectory
from figures.make_all import SCRIPTS
from vsfa.errors import ConfigError
from vsfa.study import ALL_STUDIES, STUDIES, study_config
from vsfa.train import list_checkpoints

FIGURES = (
    "directions_by_layer",
    "trajectory",  # trajectory_named: drawn only when the link's search names another direction (tested below)
    "heatmap_cos_rederived",
    "heatmap_shift_cos",
    "asr_vs_shift",
    "refusal_logodds_vs_shift",
    "direction_search",
    "steering",
    "attribution_harmful",
    "attribution_harmless",
)


def test_every_figure_and_the_summary(quick_study):
    for name in FIGURES:
        for ext in (".png", ".pdf"):
            assert (quick_study / "figures" / f"{name}{ext}").stat().st_size > 1000, name
    assert len(SCRIPTS) == 7
    summary = (quick_study / "summary.md").read_text()
    assert "| vsfa - control | 1/1 |" in summary and "| control | 1 |" in summary
    assert (
        "one run per arm" in summary and "Protocol: the request set `requests` is split by `pair`" in summary
    )
    assert "Ablation (projected out at every layer)" in summary and "random-0" in summary
    from analysis.report import render_study

    assert render_study(quick_study) in summary  # the summary is the report's rendering of the artifacts


def test_named_trajectory_only_when_the_search_names_another_direction(quick_study, tmp_path):
    """When the search's in-sample best is another direction than the one chosen on selection items, its own
    trajectory figure is drawn; when it is the chosen one, no second figure."""
    rep = json.loads((quick_study / "link.json").read_text())
    chosen = (rep["hook"], rep["position"], rep["method"])
    other = next(
        c for c in rep["direction_search"]["all"] if (c["hook"], c["position"], c["method"]) != chosen
    )
    for best, figures in (
        ({**other, "in_sample": True}, ["trajectory"] * 2 + ["trajectory_named"] * 2),
        (
            {**other, "hook": rep["hook"], "position": rep["position"], "method": rep["method"]},
            ["trajectory"] * 2,
        ),
    ):
        study = tmp_path / f"study-{len(figures)}"
        shutil.copytree(quick_study, study, ignore=shutil.ignore_patterns("figures", "*.safetensors"))
        (study / "link.json").write_text(
            json.dumps({**rep, "direction_search": {**rep["direction_search"], "best": best}})
        )
        assert [p.stem for p in fig_trajectory.make(study, tmp_path / f"fig-{len(figures)}")] == figures


def test_trajectory_starts_at_the_base_and_covers_every_checkpoint(quick_study):
    run = quick_study / "runs" / "vsfa-s0"
    df = read_trajectory(run)
    steps = [0, *[s for s, _ in list_checkpoints(run)]]
    assert sorted(df["step"].unique()) == steps == [0, 1, 2, 4, 8]
    at0 = df[df["step"] == 0]
    assert (at0[at0["metric"] == "shift"]["value"] == 0).all()
    assert at0[at0["metric"] == "cos_rederived"]["value"].to_numpy() == pytest.approx(1.0)
    assert {"harmful", "harmless", "all"} <= set(df[df["set"] == "requests.evaluation"]["label"])
    assert df[df["metric"] == "projection"][["lo", "hi"]].notna().all().all()


def test_link_joins_eval_and_trajectory_per_checkpoint(quick_study):
    rep = json.loads((quick_study / "link.json").read_text())
    runs = {r["run"]: r for r in rep["runs"]}
    assert set(runs) == {"vsfa-s0", "control-s0"} and runs["control-s0"]["arm"] == "control"
    assert [c["step"] for c in runs["vsfa-s0"]["checkpoints"]] == [0, 1, 2, 4, 8]
    table = pd.read_csv(quick_study / "runs" / "vsfa-s0" / "eval" / "table.csv")
    asr = table[(table["metric"] == "asr") & (table["step"] == 8)]["value"].iloc[0]
    assert runs["vsfa-s0"]["checkpoints"][-1]["asr"] == pytest.approx(asr)
    pooled = rep["correlations"]["pooled"]
    # pooled over 2 runs, resampled as clusters; the shared base point counted once: 2 x 4 checkpoints + 1
    assert {c["n"] for c in pooled} == {2} and {c["n_points"] for c in pooled} == {9}
    assert all(c["unit"].startswith("runs (cluster bootstrap") and "within" in c for c in pooled)
    assert any("checkpoints" in n for n in rep["notes"])
    (arm,) = rep["arms"]
    assert (
        arm["arm"] == "vsfa"
        and arm["shift_harmful"]["difference"]["lo"] <= arm["shift_harmful"]["difference"]["hi"]
    )
    # each evaluation variant (text-only, with a neutral image) gets its own arm table of the eval measures;
    # the pooled change is their mean (the variants hold the same requests)
    by = rep["arms_by_variant"]
    assert set(by) == {"text", "neutral"} and "shift_harmful" not in by["text"]["arm_levels"][0]
    for name in ("asr_change", "p_refuse_change", "over_refusal_change"):
        parts = [by[v]["arm_levels"][0][name]["value"] for v in by]
        assert rep["arm_levels"][0][name]["value"] == pytest.approx(np.mean(parts))
        assert (
            by["text"]["arms"][0][name]["difference"]["lo"] <= by["text"]["arms"][0][name]["difference"]["hi"]
        )
    surrogate = rep["surrogate"]["vsfa-s0"]
    assert [r["k"] for r in surrogate if r["outcome"] == "p_refuse"] == [2, 3, 4]
    assert {r["outcome"] for r in surrogate} == {"asr", "p_refuse", "refusal_logodds"}
    fc = rep["forecast"]["p_refuse"]
    assert [r["k"] for r in fc["runs"]["vsfa-s0"]] == [2, 3, 4]
    assert {r["method"] for r in fc["summary"]} == {"shift", "log_step", "carry_forward"}


def test_steering_curves_have_controls_and_degenerate_rates(quick_study):
    curves = pd.read_csv(quick_study / "steer" / "curves.csv")
    steer = curves[curves["mode"] == "steer"]
    assert set(steer["direction"]) == {"chosen", "random-0"} and set(steer["alpha"]) == {0.0, 4.0}
    assert steer["degenerate"].between(0, 1).all()
    chosen = steer[steer["direction"] == "chosen"].set_index("alpha")
    hook = json.loads((quick_study / "steer" / "causal.json").read_text())["hook"]
    col = f"projection@{hook}"
    assert chosen.loc[4.0, col] > chosen.loc[0.0, col]  # steering moves the read-out along the direction
    ablated = curves[(curves["mode"] == "ablate") & (curves["direction"] == "chosen")]
    assert abs(float(ablated[col].iloc[0])) < 1e-3  # ablation removes it
    # undo puts the checkpoint's projection back where the base had it; a random direction moved as far does not
    undo = curves[curves["mode"] == "undo"].set_index("direction")
    tuned = curves[(curves["mode"] == "ablate") & (curves["direction"] == "none")][col].iloc[0]
    shift = tuned - chosen.loc[0.0, col]
    assert shift != 0 and abs(undo.loc["chosen", col] - chosen.loc[0.0, col]) < 0.01 * abs(shift)
    assert abs(undo.loc["random-0", col] - tuned) < abs(shift)  # moved as far, mostly across the direction
    causal = json.loads((quick_study / "steer" / "causal.json").read_text())
    assert set(causal["undo_restored"]) == {"chosen", "random-0"}
    assert {"asr", "refusal_logodds"} <= set(causal["undo_restored"]["chosen"])
    chosen = json.loads((quick_study / "selection.json").read_text())["chosen"]
    link = json.loads((quick_study / "link.json").read_text())
    for used in (causal, link):  # steering and the link use the direction chosen on selection items
        assert (used["hook"], used["position"], used["method"]) == (
            chosen["hook"],
            chosen["position"],
            chosen["method"],
        )
    summary = (quick_study / "summary.md").read_text()
    assert "Direction search over" in summary and "Persona recovery on held-out persona pairs" in summary
    align = causal["readout_alignment"]
    assert -1 <= align["chosen"] <= 1 and 0 < align["random_95"] < 0.5
    assert align["by_layer"][hook] == pytest.approx(align["chosen"])


def test_steering_orthogonal_to_the_readout(quick_study, tmp_path):
    """--orthogonal-to-readout steers with the direction's part off the refusal logit direction; points cached
    for the plain direction in the same folder are not reused."""
    old = json.loads((quick_study / "steer" / "causal.json").read_text())
    out = tmp_path / "steer"
    shutil.copytree(quick_study / "steer", out)
    settings = {**old["settings"], "checkpoint": None, "alphas": [0.0, 4.0], "orthogonal_to_readout": True}
    steer(
        SteerConfig(model=old["model"], directions=old["directions"], out=str(out), **settings),
    )
    new = json.loads((out / "causal.json").read_text())
    assert abs(old["readout_alignment"]["chosen"]) > 1e-3 and abs(new["readout_alignment"]["chosen"]) < 1e-4
    assert (
        new["readout_alignment"]["by_layer"] == old["readout_alignment"]["by_layer"]
    )  # the set's own directions

    def steered(folder):  # the evaluated refusal score (cached per point), not the live projection
        curves = pd.read_csv(folder / "curves.csv")
        row = curves[(curves["direction"] == "chosen") & (curves["alpha"] == 4.0)]
        return float(row["refusal_logodds_harmful"].iloc[0])

    assert steered(out) != steered(quick_study / "steer")


def test_steering_along_the_probe_normal_counts_class_gaps_along_it(quick_study, tmp_path):
    """--method probe steers along the probe's unit normal, alpha in class gaps measured along it."""
    from probes.directions import load_directions

    old = json.loads((quick_study / "steer" / "causal.json").read_text())
    settings = {**old["settings"], "checkpoint": None, "alphas": [0.0, 4.0], "n_random": 0}
    settings.update(hook=old["hook"], position=old["position"], method="probe")
    out = tmp_path / "steer"
    steer(
        SteerConfig(model=old["model"], directions=old["directions"], out=str(out), **settings),
    )
    dset = load_directions(old["directions"])
    unit = dset.get(old["hook"], old["position"], "probe").unit.double()
    gap = abs(float(dset.get(old["hook"], old["position"], "dom").vector.double() @ unit))
    curves = pd.read_csv(out / "curves.csv").set_index("alpha")
    moved = curves.loc[4.0, f"projection@{old['hook']}"] - curves.loc[0.0, f"projection@{old['hook']}"]
    assert json.loads((out / "causal.json").read_text())["method"] == "probe"
    assert moved == pytest.approx(4 * gap, rel=1e-3)


def test_presets_and_bad_settings(run_cli, tmp_path):
    assert {"quick", "tiny", "smol-llava", "organism"} <= set(STUDIES)
    assert [study_config(p).model for p in ALL_STUDIES] == [
        "organism",
        "smol-llava-safe",
    ]  # --study all, in order
    assert study_config("quick", overrides=["steps=5"]).steps == 5
    proc = run_cli("demo", "--study", "nope", "--out", tmp_path / "x")
    assert proc.returncode == 2 and "unknown study 'nope'" in proc.stderr and not (tmp_path / "x").exists()
    proc = run_cli("demo", "--study", "quick", "--set", "stepz=3", "--out", tmp_path / "y")
    assert proc.returncode == 2 and "stepz" in proc.stderr and not (tmp_path / "y").exists()
    proc = run_cli("demo", "--study", "quick", "--set", "arms=['control']", "--out", tmp_path / "z")
    assert proc.returncode == 2 and "needs the vsfa arm" in proc.stderr
    for bad, said in (
        ("workers=-1", "workers must be >= 0"),
        ("track_questions=0", "track_questions must be"),
    ):
        with pytest.raises(ConfigError, match=said):
            study_config("quick", overrides=[bad])


def test_analysis_commands_refuse_bad_input(run_cli, tmp_path, quick_study):
    proc = run_cli("track", "--run", tmp_path / "missing")
    assert (
        proc.returncode == 2
        and proc.stderr.strip().count("\n") == 0
        and "run folder not found" in proc.stderr
    )
    untracked = tmp_path / "run"
    (untracked / "checkpoints").mkdir(parents=True)
    proc = run_cli("link", "--run", untracked)
    assert proc.returncode == 2 and "track" in proc.stderr
    proc = run_cli(
        "steer",
        "--model",
        quick_study / "model",
        "--directions",
        quick_study / "directions" / "persona.json",
        "--out",
        tmp_path / "s",
        "--alphas",
        "1,x",
    )
    assert proc.returncode == 2 and "--alphas" in proc.stderr and not (tmp_path / "s").exists()
    steer_args = [
        "--model",
        quick_study / "model",
        "--directions",
        quick_study / "directions" / "persona.json",
    ]
    proc = run_cli("steer", *steer_args, "--out", tmp_path / "s", "--bench-opt", "variants")
    assert proc.returncode == 2 and "KEY=VALUE" in proc.stderr and not (tmp_path / "s").exists()
    proc = run_cli("steer", *steer_args, "--out", tmp_path / "s", "--bench-opt", "bogus=1")
    assert proc.returncode == 2 and "unknown option 'bogus'" in proc.stderr and not (tmp_path / "s").exists()
    # every input is checked before any work: a bad checkpoint no longer waits for the whole base sweep
    for extra, message in (
        (["--checkpoint", tmp_path / "nope"], "not an adapter folder"),
        (["--n-random", "-1"], "n_random must be an integer >= 0"),
    ):
        proc = run_cli("steer", *steer_args, "--out", tmp_path / "s", *extra)
        assert proc.returncode == 2 and message in proc.stderr and not (tmp_path / "s").exists(), proc.stderr
    runs = quick_study / "runs"
    proc = run_cli("link", "--run", runs / "vsfa-s0", "--n-boot", "0", "--out", tmp_path / "l.json")
    assert proc.returncode == 2 and "n_boot must be at least 100" in proc.stderr
    assert not (tmp_path / "l.json").exists()
    proc = run_cli("demo", "--study", "quick", "--set", "n_random=-1", "--out", tmp_path / "d")
    assert proc.returncode == 2 and "n_random must be >= 0" in proc.stderr and not (tmp_path / "d").exists()


def test_organism_study_runs_on_an_organism_folder(tmp_path):
    """The organism preset: organism arms and prompt sets, exact openers, every stage, no special model code."""
    from tests.vsfa.organism.test_organism import SMALL, _world_dict
    from vsfa.organism.pretrain import pretrain
    from vsfa.organism.world import apply_overrides, world_from_dict
    from vsfa.study import run_study

    base = pretrain(
        world_from_dict(apply_overrides(_world_dict(), SMALL)), 0, tmp_path / "base", readouts=False
    )
    overrides = [
        f'model="{base}"',
        "arms=['vsfa','control']",
        "seeds=[0]",
        "organism_n=32",
        "steps=4",
        "batch_size=8",
        "log_until=2",
        "alphas=[0.0, 2.0]",
        "n_random=1",
        "figures=false",
    ]
    cfg = study_config("organism", overrides=overrides, out=tmp_path / "study")
    summary = run_study(cfg)
    assert "p refuse change" in summary["text"]
    study = tmp_path / "study"
    assert (study / "sets" / "openers_refuse.txt").read_text().strip() == "I cannot help with that ."
    rep = json.loads((study / "link.json").read_text())
    assert rep["set"] == "organism_requests.evaluation" and [
        c["step"] for c in rep["runs"][0]["checkpoints"]
    ] == [
        0,
        1,
        2,
        4,
    ]
    p = [c["p_refuse"] for c in rep["runs"][0]["checkpoints"]]
    assert all(0 < v < 1 for v in p)
    directions = json.loads((study / "directions" / "persona.json").read_text())
    assert directions["contrast"]["name"] == "organism_context"


def test_study_settings_reach_the_training_config(tmp_path, monkeypatch):
    """Every training setting of a study lands in the run's TrainConfig (nothing silently dropped)."""
    import vsfa.train
    from vsfa.study import _train

    seen = []
    monkeypatch.setattr(vsfa.train, "train", lambda c, quiet=True: seen.append(c))
    cfg = study_config("organism", overrides=["lr=0.002", "scheduler='constant'", "warmup=0.1", "steps=1"])
    _train(cfg, tmp_path / "model", tmp_path / "data", "vsfa", 3, tmp_path / "run", "x\\.y")
    (c,) = seen
    assert (c.train.lr, c.train.scheduler, c.train.warmup, c.train.max_steps) == (0.002, "constant", 0.1, 1)
    assert (c.seed, c.arm, c.lora.target_regex, c.lora.r, c.train.batch_size) == (
        3,
        "vsfa",
        "x\\.y",
        cfg.lora_r,
        cfg.batch_size,
    )


def test_link_cli_on_the_quick_study(run_cli, quick_study, tmp_path):
    runs = quick_study / "runs"
    out = tmp_path / "link.json"
    proc = run_cli(
        "link", "--run", runs / "vsfa-s0", "--control", runs / "control-s0", "--out", out, check=True
    )
    assert (
        "vsfa - control shift_harmful:" in proc.stdout
        and "spearman(shift, p_refuse): pooled" in proc.stdout
        and "vsfa - control asr_change [neutral]:" in proc.stdout
    )
    assert "note: one run per arm" in proc.stdout
    rep = json.loads(out.read_text())
    assert rep["arm_levels"][0]["arm"] == "vsfa" and rep["arm_levels"][1]["arm"] == "control"
    search = rep["direction_search"]
    tracked = read_trajectory(runs / "vsfa-s0", method="all")
    assert set(tracked["method"]) == {"dom", "probe"} and set(
        read_trajectory(runs / "vsfa-s0")["method"]
    ) == {"dom"}
    candidates = {(c["hook"], c["position"], c["method"]) for c in search["all"]}
    assert candidates == set(map(tuple, tracked[["hook", "position", "method"]].drop_duplicates().to_numpy()))
    naive = search["naive"]
    assert (naive["position"], naive["layer"], naive["method"]) == ("last", tracked["layer"].max(), "dom")
    assert search["best"] == {**search["all"][0], "in_sample": True} and search["outcome"] == "p_refuse"
    assert search["confirm_runs"] == [] and "in-sample only" in search["note"]  # one seed: nothing held out
    assert "best direction for p_refuse:" in proc.stdout


def _request_ids(path) -> set[str]:
    """Request ids of an eval folder's responses (item ids are ``<variant>/<request id>``)."""
    from vsfa.io import read_jsonl

    return {r["id"].split("/", 1)[1] for r in read_jsonl(path)}


def test_the_split_is_recorded_and_reported_numbers_use_evaluation_items_only(quick_study):
    from analysis.trajectory import read_projections
    from probes.store import ActivationStore
    from vsfa.io import read_jsonl
    from vsfa.resources import resource_path

    man = json.loads((quick_study / "manifest.json").read_text())
    req = man["splits"]["requests"]
    sel, ev = set(req["selection"]), set(req["evaluation"])
    assert sel and ev and not sel & ev and (req["key"], req["seed"], req["made"]) == ("pair", 0, "hash")
    pair = {r["id"]: r["pair"] for r in read_jsonl(resource_path("requests.jsonl"))}
    assert sel | ev == set(pair) and not {pair[i] for i in sel} & {pair[i] for i in ev}  # pairs stay whole
    # choosing: the layer search's separation set and the candidate scores saw selection items only
    directions = json.loads((quick_study / "directions" / "persona.json").read_text())
    assert set(ActivationStore(directions["separation"]["store"]).column("id")) <= sel
    selection = json.loads((quick_study / "selection.json").read_text())
    assert set(selection["items"]["harmful"] + selection["items"]["harmless"]) <= sel
    # reporting: evaluations, tracked projections and steering points hold evaluation items only
    responses = list(quick_study.glob("runs/*/eval/*/builtin/responses.jsonl"))
    responses += list((quick_study / "steer" / "points").rglob("responses.jsonl"))
    assert len(responses) > 10 and all(_request_ids(f) <= ev for f in responses)
    for run in ("vsfa-s0", "control-s0"):
        proj = read_projections(quick_study / "runs" / run)
        tracked = set(proj[proj["set"] == "requests.evaluation"]["id"])
        assert tracked and tracked <= ev


def test_selection_lists_every_candidate_with_its_evidence(quick_study):
    from probes.directions import load_directions

    selection = json.loads((quick_study / "selection.json").read_text())
    dset = load_directions(quick_study / "directions" / "persona")
    expected = {(h, p, m) for h in dset.hooks for p in dset.positions for m in ("dom", "probe")}
    got = {(c["hook"], c["position"], c["method"]) for c in selection["candidates"]}
    assert got == expected
    keys = {"score", "addition", "subtraction", "ablation", "kl_harmless", "accuracy", "readout_cos"}
    keys |= {"random_score", "reason"}
    assert all(keys <= set(c) for c in selection["candidates"] if c["scored"])
    assert all(c["reason"] and not c["eligible"] for c in selection["candidates"] if not c["scored"])
    last = max(c["layer"] for c in selection["candidates"])
    assert all("readout zone" in c["reason"] for c in selection["candidates"] if c["layer"] == last)
    chosen = selection["chosen"]
    assert chosen in selection["candidates"] and chosen["layer"] != last
    assert dset.selected["hook"] == chosen["hook"] and dset.selected["method"] == chosen["method"]


@pytest.mark.parametrize("preset", sorted(STUDIES))
def test_every_preset_splits_its_requests_by_pair(preset, tmp_path):
    from vsfa.study import SETS, _split_sets

    cfg = study_config(preset, out=tmp_path / "study")
    study = tmp_path / "study"
    if cfg.data == "organism":
        from vsfa.organism.pretrain import read_world
        from vsfa.organism.sets import export_sets
        from vsfa.organism.shipped import shipped_base_path

        export_sets(read_world(shipped_base_path()), study / SETS)
    record, files = _split_sets(cfg, study)
    req = record["requests"]
    sel, ev = set(req["selection"]), set(req["evaluation"])
    assert sel and ev and not sel & ev
    from vsfa.io import read_jsonl

    rows = {p: read_jsonl(f) for p, f in files.items()}
    assert {r["id"] for r in rows["selection"]} == sel and {r["id"] for r in rows["evaluation"]} == ev
    assert not {r["pair"] for r in rows["selection"]} & {r["pair"] for r in rows["evaluation"]}
    assert record["contrast"]["selection"] and not set(record["contrast"]["selection"]) & set(
        record["contrast"]["evaluation"]
    )


def test_a_rerun_reuses_the_selection_and_a_changed_input_recomputes_it(quick_study, monkeypatch):
    """The causal selection (the study's slowest stage) is reused when model, vectors, items, openers and
    settings are unchanged, as after a rerun of the study; any change scores the candidates again."""
    import analysis.selection as selection
    import vsfa.models.loading as loading
    from analysis.selection import SelectConfig

    saved = json.loads((quick_study / "selection.json").read_text())
    fields = {k: saved[k] for k in ("model", "directions", "requests")}
    cfg = SelectConfig(**fields, **saved["settings"], out=quick_study / "selection.json")

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(loading, "load_vlm", no_model)
    assert selection.select(cfg)["chosen"] == saved["chosen"]
    with pytest.raises(AssertionError, match="the model was loaded"):
        selection.select(SelectConfig(**{**fields, **saved["settings"], "alpha": 2.0}, out=cfg.out))


def test_selection_scores_skipped_candidates_before_a_fallback(quick_study, tmp_path):
    """In the quick study no candidate passes the static checks (a 2-layer random model): the skipped ones are
    scored before the fallback is taken, so the choice and every score equal a run that scores all of them."""
    from analysis.selection import SelectConfig, select

    saved = json.loads((quick_study / "selection.json").read_text())
    fields = {k: saved[k] for k in ("model", "directions", "requests")}
    full = select(
        SelectConfig(**fields, **{**saved["settings"], "score_all": True}, out=tmp_path / "all.json")
    )
    assert saved["fallback"] and full["fallback"]
    assert all(c["scored"] for c in saved["candidates"])
    assert full["chosen"] == saved["chosen"] and full["candidates"] == saved["candidates"]


def test_two_worker_processes_give_the_same_study(quick_study, tmp_path):
    """``workers=2`` runs training, selection, evaluation and tracking in two processes: every artifact a
    result is read from equals the single-process study's, and fewer contrast questions per checkpoint are
    recorded."""
    from vsfa.study import run_study

    out = tmp_path / "study"
    run_study(study_config("quick", overrides=["workers=2", "track_questions=2", "figures=false"], out=out))

    def read(study, rel):  # the study's own folder named the same in both; the time it took left out
        rep = json.loads((study / rel).read_text().replace(str(study), "STUDY"))
        rep.pop("seconds", None)
        return rep

    for rel in ("selection.json", "steer/causal.json", "link.json"):
        assert read(out, rel) == read(quick_study, rel), rel
    for run in ("vsfa-s0", "control-s0"):
        answers = sorted((quick_study / "runs" / run / "eval").glob("*/builtin/responses.jsonl"))
        assert len(answers) == 5
        for f in answers:
            assert (out / f.relative_to(quick_study)).read_text() == f.read_text()
        mine, theirs = (read_track_manifest(s / "runs" / run) for s in (out, quick_study))
        assert mine["contrast_items"] < theirs["contrast_items"]
        projections = [
            pd.read_csv(s / "runs" / run / "track" / "projections.csv") for s in (out, quick_study)
        ]
        pd.testing.assert_frame_equal(*projections)
