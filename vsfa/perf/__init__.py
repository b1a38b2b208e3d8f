"""``vsfa bench``: the toolkit's speed and memory measures, each against a baseline measured in the same run.

One module per measure (capture, probes, training, generation, threads under load); :mod:`vsfa.perf.bench`
runs the chosen ones and prints one table of measure, value, goal and pass/fail. This package sits on the top
floor beside the CLI (it drives ``probes`` and the training/eval stages); nothing imports it.
"""

from vsfa.perf.bench import BenchConfig, Measure, format_bench, run_bench

__all__ = ["BenchConfig", "Measure", "format_bench", "run_bench"]
