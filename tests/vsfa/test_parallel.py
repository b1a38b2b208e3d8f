"""vsfa.parallel: tasks run once each, after what they wait for, in worker processes or inline; failures surface."""

import math
import operator
import os

import pytest

from vsfa.errors import ConfigError
from vsfa.parallel import Task, run_tasks


@pytest.mark.parametrize("workers", [1, 2])
def test_tasks_run_after_what_they_wait_for(workers):
    started = []
    tasks = [
        Task("a", "first", math.factorial, (5,)),
        Task("pid", "pid", os.getpid),
        Task("b", "second", operator.add, (1, 2), after=("a",)),
    ]
    results = run_tasks(tasks, workers=workers, announce=started.append)
    assert results["a"] == 120 and results["b"] == 3
    assert started.index("second") > started.index("first") and sorted(started) == ["first", "pid", "second"]
    assert (results["pid"] == os.getpid()) == (workers == 1)  # two workers: run in another process


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failure_is_raised_and_its_dependants_never_start(workers):
    started = []
    tasks = [Task("x", "x", operator.truediv, (1, 0)), Task("y", "y", abs, (-1,), after=("x",))]
    with pytest.raises(ZeroDivisionError):
        run_tasks(tasks, workers=workers, announce=started.append)
    assert started == ["x"]


def test_a_task_graph_out_of_order_is_refused():
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        run_tasks([Task("a", "a", abs, (1,), after=("nope",))])
    with pytest.raises(ConfigError, match="comes before"):
        run_tasks([Task("b", "b", abs, (1,), after=("a",)), Task("a", "a", abs, (1,))])
