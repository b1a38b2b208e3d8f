"""Ground-truth model organism of the self-fulfilling mechanism.

A tiny stock LLaVA pretrained from scratch on a synthetic world in which every document has a latent persona
(vigilant / carefree) that governs both how scenes are described and whether harmful requests are refused.
Because refusals are exact token sequences and the persona of every document is known, the organism gives
exact behavioural readouts and ground truth for persona directions.

Modules: :mod:`~vsfa.organism.world` (specification), :mod:`~vsfa.organism.render` (icons),
:mod:`~vsfa.organism.documents` (documents, arms), :mod:`~vsfa.organism.model` (tokenizer, processor, config,
fast encoder), :mod:`~vsfa.organism.pretrain`, :mod:`~vsfa.organism.readouts`, :mod:`~vsfa.organism.finetune`,
:mod:`~vsfa.organism.shipped` (the base that ships with the toolkit).
"""

from vsfa.organism.shipped import shipped_base_info, shipped_base_path
from vsfa.organism.world import WorldSpec, load_world

__all__ = ["WorldSpec", "load_world", "shipped_base_info", "shipped_base_path"]
