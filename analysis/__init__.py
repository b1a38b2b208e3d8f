"""Directions across checkpoints and their link to safety, with causal checks.

- ``trajectory``: projections, cosines and fine-tuning shifts per checkpoint (``vsfa track``).
- ``link``: trajectories joined with eval metrics; cluster-bootstrap correlations over runs, arm differences,
  the direction search confirmed on held-out seeds (``vsfa link``); ``forecast``: early prediction.
- ``selection``: causal scoring of candidate directions on selection items (``vsfa select``).
- ``interventions``: steering and directional-ablation hooks, :func:`steering` as a ``with`` block;
  ``causal``: dose-response steering runs (``vsfa steer``).
- ``plots``: figure functions; ``report``: a study's tables as Markdown (``vsfa report``).
"""

from vsfa.exports import lazy_exports

_EXPORTS = {
    "steering": "analysis.interventions",
    "steering_hook": "analysis.interventions",
    "ablation_hooks": "analysis.interventions",
    "TrackConfig": "analysis.trajectory",
    "track": "analysis.trajectory",
    "read_trajectory": "analysis.trajectory",
    "LinkConfig": "analysis.link",
    "link": "analysis.link",
    "load_run": "analysis.link",
    "pooled_correlations": "analysis.link",
    "SelectConfig": "analysis.selection",
    "select": "analysis.selection",
    "SteerConfig": "analysis.causal",
    "steer": "analysis.causal",
    "render_study": "analysis.report",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
