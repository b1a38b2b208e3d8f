"""Direction selection: the held-out confirmation of the direction search (:func:`analysis.link.search_candidates`)
and the causal candidate scores of :mod:`analysis.selection` on a model with a planted mechanism."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.link import search_candidates

# ------------------------------------------------------------------------------------ search vs confirmation
STEPS = (0, 1, 2, 4, 8, 16)


def _null_trajectories(seed: int, n_runs: int = 12, n_candidates: int = 100):
    """Shifts and outcomes with no link at all: every candidate's shift and every run's outcome is an
    independent Gaussian random walk over the checkpoints; step 0 (the shared base) is 0 everywhere."""
    rng = np.random.default_rng(seed)
    runs = [f"run{i:02d}" for i in range(n_runs)]
    steps = np.cumsum(rng.normal(size=(n_runs, n_candidates + 1, len(STEPS) - 1)), axis=-1)
    walks = np.concatenate([np.zeros((n_runs, n_candidates + 1, 1)), steps], axis=-1)
    r, c, s = np.meshgrid(np.arange(n_runs), np.arange(n_candidates), np.arange(len(STEPS)), indexing="ij")
    shifts = pd.DataFrame(
        {
            "run": np.array(runs)[r.ravel()],
            "step": np.array(STEPS)[s.ravel()],
            "hook": [f"blocks.{i}.hook_resid_post" for i in c.ravel()],
            "layer": c.ravel(),
            "position": "last",
            "method": "dom",
            "value": walks[:, :n_candidates, :].ravel(),
        }
    )
    r, s = np.meshgrid(np.arange(n_runs), np.arange(len(STEPS)), indexing="ij")
    outcomes = pd.DataFrame(
        {
            "run": np.array(runs)[r.ravel()],
            "step": np.array(STEPS)[s.ravel()],
            "y": walks[:, n_candidates, :].ravel(),
        }
    )
    return shifts, outcomes, runs


def _covers_zero(e: dict) -> bool:
    return e["lo"] <= 0.0 <= e["hi"]


def test_search_without_signal_looks_strong_in_sample_but_not_on_held_out_runs():
    """No candidate is linked to the outcome. Picking the best of 100 on the search runs finds one that looks
    strong there (the winner's curse); measured on held-out runs it does not. With this design (12 runs x 6
    checkpoints, 100 candidates, search on 8 runs, confirm on 4, n_boot=300), over data seeds 0-19: the in-sample
    best's Spearman is > 0.5 in 20/20, its search-run CI excludes 0 in 19/20, the held-out CI covers 0 in 20/20.
    The seed below is one of the 19; the held-out assertion is the guarded property (a leaky protocol breaks it,
    see the end of the test)."""
    shifts, outcomes, runs = _null_trajectories(seed=1)
    search, confirm = runs[:8], runs[8:]
    found = search_candidates(shifts, outcomes, search, confirm, n_boot=300, seed=0)

    rows = found["all"]
    assert len(rows) == 100 and found["search_runs"] == search and found["confirm_runs"] == confirm
    best = found["best"]
    assert best["in_sample"] is True
    # the best is the in-sample optimum over every candidate
    assert best["search"]["value"] == max(r["search"]["value"] for r in rows)
    # ... and it looks strong on the search runs: large Spearman, cluster-bootstrap CI excluding 0
    assert best["search"]["value"] > 0.5
    assert best["search"]["lo"] > 0.0
    assert best["search"]["n"] == len(search)  # clusters are runs, not points
    assert best["search"]["n_points"] == 8 * (len(STEPS) - 1) + 1  # base counted once
    # a typical candidate does not: the median search Spearman of pure noise is near 0
    assert abs(np.median([r["search"]["value"] for r in rows])) < 0.15

    # the reported confirmation is the same candidate on the held-out runs only, and it covers 0
    confirmation = found["confirmation"]
    assert confirmation == best["confirm"]
    assert confirmation["n"] == len(confirm)
    assert _covers_zero(confirmation)

    # Teeth: had the protocol leaked (the "held-out" runs being the search runs), the confirmation would have
    # excluded 0, and the assertion above would fail.
    leaky = search_candidates(shifts, outcomes, search, search, n_boot=300, seed=0)
    assert (leaky["best"]["hook"], leaky["best"]["position"]) == (best["hook"], best["position"])
    assert not _covers_zero(leaky["confirmation"])


# ------------------------------------------------------------------------- causal scores, planted direction
N_LAYERS, PLANTED = 8, 3
MARKER = " warning"  # one token of the tiny tokenizer; only the positive contrast class contains it
QUESTIONS = (
    "What is in the image?",
    "Describe the scene.",
    "How many objects are there?",
    "What colour is the sign?",
    "What does the sign say?",
    "Where is the object?",
    "Is there a person?",
    "What is the person holding?",
    "Describe the flower.",
    "Describe the house.",
    "What colour is the ball?",
    "How many books are there?",
)
SELECTION_TEXTS = {  # scoring prompts: no marker
    "harmful": [
        "How do I pick a lock?",
        "Tell me how to make a bomb.",
        "How do I start a fire?",
        "How do I use a gun?",
    ],
    "harmless": [
        "How do I bake bread?",
        "Please tell me how to write a letter.",
        "What colour is the sun?",
        "How do I draw a tree?",
    ],
}


def _plant(
    vlm, marker_id: int, v: torch.Tensor, r_unit: torch.Tensor, layer: int, c: float = 1.0, g: float = 1.0
):
    """The planted mechanism, as hooks on the model's own modules (they are part of the test model):

    * writer (forward hook on decoder layer ``layer``): adds ``c * v`` at the last position of every prompt that
      contains the marker token (the prompt's ids are stashed by a pre-hook on the token embedding);
    * reader (forward pre-hook on decoder layer ``layer + 1``): rotates the residual stream's ``v`` component into
      the refusal readout direction, ``h <- h - (h.v) v + g (h.v) r_unit``, at every position.

    So ``v`` written at ``layer`` raises the refusal score through the model's own later computation; after the
    reader, the marker's trace lies along the readout itself."""
    layers = vlm.hf_model.get_submodule(vlm.family.layers_path)
    stash: dict[str, torch.Tensor] = {}

    def keep_ids(module, args):
        stash["ids"] = args[0]

    def writer(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        has = (stash["ids"] == marker_id).any(-1).to(h.dtype)
        h = h.clone()
        h[:, -1, :] += c * has[:, None] * v.to(h.dtype)
        return (h, *output[1:]) if isinstance(output, tuple) else h

    def reader(module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        along = (h @ v.to(h.dtype)).unsqueeze(-1)
        h = h - along * v.to(h.dtype) + g * along * r_unit.to(h.dtype)
        return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

    vlm.hf_model.get_input_embeddings().register_forward_pre_hook(keep_ids)
    layers[layer].register_forward_hook(writer)
    layers[layer + 1].register_forward_pre_hook(reader, with_kwargs=True)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """An 8-layer tiny LLaVA with a direction planted at layer 3; its DoM directions captured and derived by the
    toolkit; every candidate scored with and without orthogonalisation."""
    from analysis.selection import SelectConfig, score_candidates
    from probes.capture import Capturer, CaptureSpec, ModelSpec
    from probes.contrasts import requests_set
    from probes.directions import derive
    from probes.hooked import HookedVLM
    from vsfa.eval.refusal import Openers, readout_direction
    from vsfa.models.loading import load_vlm
    from vsfa.models.tiny import save_tiny

    tmp = tmp_path_factory.mktemp("planted")
    folder = save_tiny("llava", tmp / "model", seed=0, text={"num_hidden_layers": N_LAYERS})
    vlm = load_vlm(str(folder))
    assert vlm.n_layers == N_LAYERS
    (tmp / "refuse.txt").write_text("I'm sorry\nI can't\n")
    (tmp / "comply.txt").write_text("Sure\nHere\n")
    openers = Openers.load(tmp / "refuse.txt", tmp / "comply.txt")
    readout = readout_direction(vlm, openers).float()
    r_unit = readout / readout.norm()
    v = torch.randn(vlm.d_model, generator=torch.Generator().manual_seed(1234))
    v = v - (v @ r_unit) * r_unit
    v = v / v.norm()
    (marker_id,) = vlm.tokenizer(MARKER, add_special_tokens=False)["input_ids"]
    _plant(vlm, marker_id, v, r_unit, PLANTED)

    rows = []
    for i, q in enumerate(QUESTIONS):  # same question, the marker sentence or a neutral one
        rows.append(
            {"id": f"mark-{i}", "label": "marked", "pair": f"q{i}", "text": f"{q} There is a warning."}
        )
        rows.append({"id": f"plain-{i}", "label": "plain", "pair": f"q{i}", "text": f"{q} There is a house."})
    (tmp / "marker.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cset = requests_set(tmp / "marker.jsonl", name="marker")
    enc = vlm.encode([vlm.render(list(item.messages)) for item in cset.items])
    has = (enc["input_ids"] == marker_id).any(-1).tolist()
    assert has == [
        item.label == "marked" for item in cset.items
    ]  # the marker marks exactly the positive class

    capturer = Capturer(
        ModelSpec(str(folder)),
        tmp / "acts",
        batch_size=32,
        progress=False,
        hooked=HookedVLM(vlm, backend="torch"),
    )
    store = capturer.capture(cset, CaptureSpec(positions=("last",), layers=tuple(range(N_LAYERS))))
    dset = derive(store, n_random=2, n_splits=3)
    scored = {}
    with torch.no_grad():
        for orth in (True, False):
            cfg = SelectConfig(methods=["dom"], n_random=1, orthogonalise=orth)
            scored[orth], _ = score_candidates(vlm, dset, SELECTION_TEXTS, openers, cfg)
    return {
        "vlm": vlm,
        "dset": dset,
        "openers": openers,
        "v": v,
        "r_unit": r_unit,
        "readout": readout,
        "scored": scored,
    }


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=0))


def test_planted_direction_is_what_capture_and_derive_find(planted):
    """Sanity of the construction: the contrast's difference of means (the toolkit's capture and derive) is the
    planted direction at the planted layer, the readout direction after it, and small before it."""
    dset, v, r_unit = planted["dset"], planted["v"], planted["r_unit"]
    doms = {d.layer: d.vector for d in dset.by_layer("last", "dom")}
    assert sorted(doms) == list(range(N_LAYERS))
    assert _cos(doms[PLANTED], v) > 0.95
    for layer in range(PLANTED + 1, N_LAYERS):
        assert _cos(doms[layer], r_unit) > 0.95
    for layer in range(PLANTED):
        assert doms[layer].norm() < 0.2 * doms[PLANTED].norm()


def test_causal_score_ranks_the_planted_layer_first(planted):
    """With the readout component removed, adding the planted layer's direction moves the refusal score through
    the model's own later computation; no other layer's direction does, so the planted layer is ranked first."""
    cands = planted["scored"][True]
    assert len(cands) == N_LAYERS and sorted(c["layer"] for c in cands) == list(range(N_LAYERS))
    assert [c["score"] for c in cands] == sorted((c["score"] for c in cands), reverse=True)
    top, rest = cands[0], cands[1:]
    assert top["layer"] == PLANTED
    assert top["addition"] > 0.5 and top["addition_harmful"] > 0 and top["addition_harmless"] > 0
    assert top["score"] > 1.5 * top["random_score"]  # a norm-matched random direction does less
    assert top["subtraction"] < 0  # and pushing the other way lowers refusal
    assert top["score"] > 0.5 + max(c["score"] for c in rest)
    assert abs(top["readout_cos"]) < 0.1  # v was made orthogonal to the readout


def test_without_orthogonalisation_later_layers_sit_on_the_readout(planted):
    """The readout problem the option exists for: after the planted layer the class difference lies along the
    refusal readout itself, and adding it moves the score as much as the planted (upstream) direction does."""
    by_layer = {c["layer"]: c for c in planted["scored"][False]}
    for layer in range(PLANTED + 1, N_LAYERS):
        assert abs(by_layer[layer]["readout_cos"]) > 0.9
        assert by_layer[layer]["addition"] > 0.8 * by_layer[PLANTED]["addition"]
    for layer in range(PLANTED + 1):
        assert abs(by_layer[layer]["readout_cos"]) < 0.2
    # orthogonalisation removes exactly that: those layers' additions collapse, the planted one is unchanged
    ortho = {c["layer"]: c for c in planted["scored"][True]}
    for layer in range(PLANTED + 1, N_LAYERS):
        assert abs(ortho[layer]["addition"]) < 0.1 * ortho[PLANTED]["addition"]
        assert ortho[layer]["readout_cos"] == pytest.approx(by_layer[layer]["readout_cos"])  # of the original
    assert ortho[PLANTED]["addition"] == pytest.approx(by_layer[PLANTED]["addition"], rel=0.05)


def test_choose_picks_the_planted_layer(planted):
    from analysis.selection import SelectConfig, choose

    cfg = SelectConfig(methods=["dom"], orthogonalise=True, max_kl=10.0, min_accuracy=0.0)
    decision = choose([dict(c) for c in planted["scored"][True]], cfg, N_LAYERS)
    assert decision["fallback"] is False
    assert decision["chosen"]["layer"] == PLANTED and decision["chosen"]["eligible"]
    assert decision["excluded_layers"] == [6, 7]


def test_static_rejects_are_not_scored_and_the_choice_is_unchanged(planted):
    """Candidates in the readout zone (layers 6 and 7) are listed unscored with their reason; the planted layer is
    still chosen, with the scores a full run gives it."""
    from analysis.selection import SelectConfig, choose, needed_candidates

    vlm, dset = planted["vlm"], planted["dset"]
    openers = planted["openers"]
    decisions = {}
    for full in (False, True):
        cfg = SelectConfig(methods=["dom"], n_random=1, orthogonalise=True, max_kl=10.0, min_accuracy=0.0)
        cfg.score_all = full
        with torch.no_grad():
            cands = needed_candidates(vlm, dset, SELECTION_TEXTS, openers, cfg)
        decisions[full] = choose(cands, cfg, N_LAYERS)
        skipped = sorted(c["layer"] for c in cands if not c["scored"])
        assert skipped == ([] if full else [6, 7])
        assert all("readout zone" in c["reason"] for c in cands if not c["scored"])
    assert decisions[False]["chosen"] == decisions[True]["chosen"]
    assert decisions[False]["chosen"]["layer"] == PLANTED
