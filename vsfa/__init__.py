"""VSFA toolkit: Visual Self-Fulfilling Alignment, trained and explained.

The public Python API, for notebooks and scripts (each name also lives in the module that owns it)::

    from vsfa import load_hooked, load_set, capture, derive, shift_table, steering

Importing ``vsfa`` sets no environment variable and no logging level; the ``vsfa`` command does (offline
hub access, quiet transformers). Packages: ``vsfa`` (models, data, training, evaluation, the study),
``probes`` (hooked models, activation capture and store, directions), ``analysis`` (checkpoints, link to
safety, causal checks, report).
"""

from vsfa.exports import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    # models and hooks
    "load_vlm": "vsfa.models.loading",
    "base_model_of": "vsfa.models.loading",
    "HookedVLM": "probes.hooked",
    "load_hooked": "probes.hooked",
    # activations and directions
    "load_set": "probes.contrasts",
    "CaptureSpec": "probes.capture",
    "capture": "probes.capture",
    "ActivationStore": "probes.store",
    "derive": "probes.directions",
    "Direction": "probes.directions",
    "DirectionSet": "probes.directions",
    "load_directions": "probes.directions",
    "shift_table": "probes.stages",
    # causal checks and the link to safety
    "steering": "analysis.interventions",
    "read_trajectory": "analysis.trajectory",
    "load_run": "analysis.link",
    "pooled_correlations": "analysis.link",
    # stages: a config dataclass and its run function (what the CLI commands call)
    "TrainConfig": "vsfa.training.config",
    "train": "vsfa.train",
    "DirectionsConfig": "probes.stages",
    "run_directions": "probes.stages",
    "ProbeConfig": "probes.stages",
    "run_probe": "probes.stages",
    "TrackConfig": "analysis.trajectory",
    "track": "analysis.trajectory",
    "LinkConfig": "analysis.link",
    "link": "analysis.link",
    "SteerConfig": "analysis.causal",
    "steer": "analysis.causal",
    "StudyConfig": "vsfa.study",
    "run_study": "vsfa.study",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
