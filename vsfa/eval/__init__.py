"""Safety evaluation: benchmark loaders, batched resumable generation, judges, metrics with CIs.

Modules (one concern each):

* ``items``: the common record (:class:`~vsfa.eval.items.BenchItem`) every loader yields;
* ``benchmarks``: loaders for FigStep, MM-SafetyBench, SPA-VL, MM-Vet, XSTest, VLGuard, MOSSBench and the
  built-in offline set (``load_benchmark(name, path, **options)``);
* ``prompts`` / ``typography``: chat messages, the FigStep prompt, AdaShield-S; FigStep-style images;
* ``modelio``: prompts -> model inputs, and the ``hook_context`` entered around every model call;
* ``generation``: batched HF ``generate`` (or an OpenAI-compatible server), resumable JSONL;
* ``refusal``: the continuous refusal score (log-odds of refusal vs compliance openers) and P(refuse);
* ``endpoint``: a stdlib client for OpenAI-compatible endpoints;
* ``judges``: keyword lists, LLM judges (MM-SafetyBench, MM-Vet, MOSSBench, Constructive Score), Llama Guard;
* ``metrics``: ASR, refusal rate, over-refusal, scores, per category, bootstrap CIs; the cross-checkpoint table;
* ``runner``: ``vsfa eval`` (checkpoints x benchmarks -> folders with a manifest written last).

This package sits below ``probes``: it never imports it. Steering code passes hooks in through
``hook_context``.
"""

from vsfa.eval.refusal import p_refuse, refusal_scores, refusal_stats

__all__ = ["p_refuse", "refusal_scores", "refusal_stats"]
