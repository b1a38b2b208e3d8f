"""Steering raises the projection downstream; ablation removes it; random controls are norm-matched."""

from __future__ import annotations

import pytest
import torch

from analysis.interventions import ablation_hooks, degenerate, random_like, steering_hook
from probes.fidelity import check_batch
from probes.hooked import HookedVLM, hook_name
from vsfa.models.loading import load_vlm


@pytest.fixture(scope="module")
def hooked(tiny_model):
    return HookedVLM(load_vlm(tiny_model("llava")))


def _last(hooked, batch, layer, hooks=()):
    _, cache = hooked.run_with_cache(batch, [hook_name(layer)], fwd_hooks=hooks)
    return cache[hook_name(layer)][:, -1]


def test_steering_raises_projection_downstream_monotonically(hooked):
    batch = check_batch(hooked.vlm)
    v = torch.randn(hooked.d_model)
    u = v / v.norm()
    projections = []
    for alpha in (-2.0, 0.0, 2.0, 4.0):
        act = _last(hooked, batch, 1, [(hook_name(0), steering_hook(v, alpha))])
        projections.append(float((act @ u).mean()))
    assert projections == sorted(projections) and projections[-1] - projections[1] > 1.0


def test_ablation_removes_the_direction_everywhere(hooked):
    batch = check_batch(hooked.vlm)
    v = torch.randn(hooked.d_model)
    u = v / v.norm()
    steered = [(hook_name(0), steering_hook(v, 5.0))]
    before = _last(hooked, batch, 1, steered)
    # ablation after the steering point: the component along u is gone at the later layer's input
    names = [hook_name(1, "hook_resid_pre")]
    _, cache = hooked.run_with_cache(batch, names, fwd_hooks=steered + ablation_hooks(v, hooked.n_layers))
    assert (before @ u).abs().mean() > 1.0
    assert (cache[names[0]] @ u).abs().max() < 1e-5


def test_random_controls_are_norm_matched_and_distinct():
    v = torch.randn(64) * 3
    rs = random_like(v, 5, seed=1)
    assert all(abs(float(r.norm() - v.norm())) < 1e-4 for r in rs)
    assert len({round(float(r[0]), 6) for r in rs}) == 5
    assert torch.equal(random_like(v, 1, seed=1)[0], rs[0])


def test_steering_positions_prompt_only(hooked):
    v = torch.randn(hooked.d_model)
    hook = steering_hook(v, 1.0, positions="prompt")
    prefill, step = torch.zeros(1, 5, hooked.d_model), torch.zeros(1, 1, hooked.d_model)
    assert hook(prefill, "x") is not None and hook(step, "x") is None
    with pytest.raises(ValueError):
        steering_hook(v, 1.0, positions="middle")


@pytest.mark.parametrize(
    "text, flag",
    [
        ("", True),
        ("... !!!", True),
        ("icipicipicipicipicipicipicip", True),
        ("the the the the the the the the the the", True),
        ("When a family is away, it's crucial to ensure your home is secure.", False),
        ("I can not help with that .", False),
    ],
)
def test_degenerate(text, flag):
    assert degenerate(text) is flag
