"""Activations -> directions: what a model represents, read at TransformerLens-named hook points.

- ``hooked``: :class:`HookedVLM` (TransformerBridge where supported, torch forward hooks otherwise) and
  :func:`load_hooked`; ``fidelity``: the hook-vs-HF check; ``positions``: token-position selectors.
- ``contrasts``: contrast sets (persona prompts, threat vs neutral images, harmful vs harmless requests);
  ``splits``: their selection / evaluation split.
- ``capture``: streaming capture into ``store``, the content-addressed activation store (safetensors shards).
- ``directions``: difference of means, the Direction / DirectionSet artifact; ``linear``: logistic probes.
- ``stages``: the ``vsfa directions`` and ``vsfa probe --checkpoint`` stages (configs and run functions).

Hook convention: ``blocks.{l}.hook_resid_post`` is the output of decoder layer ``l``, equal to HF's
``hidden_states[l + 1]`` except for the last layer, whose HF hidden state is taken after the final norm.
"""

from vsfa.exports import lazy_exports

_EXPORTS = {
    "HookedVLM": "probes.hooked",
    "load_hooked": "probes.hooked",
    "hook_name": "probes.hooked",
    "ContrastSet": "probes.contrasts",
    "load_set": "probes.contrasts",
    "CaptureSpec": "probes.capture",
    "capture": "probes.capture",
    "ActivationStore": "probes.store",
    "Direction": "probes.directions",
    "DirectionSet": "probes.directions",
    "derive": "probes.directions",
    "load_directions": "probes.directions",
    "project": "probes.directions",
    "DirectionsConfig": "probes.stages",
    "run_directions": "probes.stages",
    "ProbeConfig": "probes.stages",
    "run_probe": "probes.stages",
    "shift_table": "probes.stages",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
