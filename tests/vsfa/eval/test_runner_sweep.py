"""`vsfa eval --run` over checkpoints: the base is read once, answers equal per-checkpoint loading."""

from __future__ import annotations

from tests.vsfa.models.test_adapter_switch import count_base_reads, make_sweep_run
from vsfa.eval.generation import GenerationConfig
from vsfa.eval.judges import make_judge
from vsfa.eval.runner import BenchSpec, run_eval

STEPS = ("step-000000", "step-000001", "step-000002", "step-000003")


def test_eval_run_reads_the_base_once_and_answers_as_one_load_per_checkpoint(
    tiny_model, tmp_path, monkeypatch
):
    run = make_sweep_run(tmp_path, tiny_model("llava"))
    bench = [BenchSpec("builtin", options={"limit_pairs": 2, "variants": ("neutral", "typo")})]
    judges = [make_judge("keyword")]
    config = GenerationConfig(max_new_tokens=6, batch_size=4)  # with the sequence refusal score
    reads = count_base_reads(monkeypatch)
    swept = run_eval(bench, judges, config, run=run, quiet=True)
    assert len(reads) == 1
    for name in STEPS[1:]:  # each checkpoint alone: a fresh load of base + adapter
        run_eval(
            bench, judges, config, checkpoint=run / "checkpoints" / name, out=tmp_path / "one", quiet=True
        )
    assert len(reads) == 4
    answers = {n: (swept / n / "builtin" / "responses.jsonl").read_bytes() for n in STEPS}
    for name in STEPS[1:]:
        assert (tmp_path / "one" / name / "builtin" / "responses.jsonl").read_bytes() == answers[name]
    assert len(set(answers.values())) == len(STEPS)  # every checkpoint answered differently
