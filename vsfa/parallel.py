"""Run a study's independent stages side by side in worker processes.

A study is a small graph of tasks (train each run; derive and select the direction on the base; evaluate and
track each run once it is trained and the direction chosen). :func:`run_tasks` runs it with one worker (in this
process, in list order) or with a pool of spawned worker processes, each with its own torch thread count: on a
small CPU machine two 1-thread processes do more work than one 2-thread process, and a busy core slows one
process instead of stalling every step of a shared OpenMP team. Tasks talk only through files (the runs,
stores and direction artifacts), so the results do not depend on the worker count.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from vsfa.errors import ConfigError


@dataclass(frozen=True)
class Task:
    """One unit of work: ``fn(*args)`` (a module-level function, so a worker process can import it), started
    once every task named in ``after`` has finished."""

    key: str
    label: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    after: tuple[str, ...] = ()


def _init_worker(threads: int, level: int) -> None:
    os.environ["VSFA_THREADS"] = str(threads)
    os.environ["TQDM_DISABLE"] = "1"  # bars of several processes would overwrite each other; the log says it
    logging.basicConfig(level=level, format="%(message)s")
    from vsfa.threads import apply_threads

    apply_threads()


def _check(tasks: list[Task]) -> None:
    """Keys are unique and list order is a valid order (the single-worker path runs the tasks as given)."""
    keys = {t.key for t in tasks}
    done: set[str] = set()
    for t in tasks:
        if t.key in done:
            raise ConfigError(f"task {t.key!r} given twice")
        for a in t.after:
            if a not in keys:
                raise ConfigError(f"task {t.key!r} waits for unknown task {a!r}")
            if a not in done:
                raise ConfigError(f"task {t.key!r} comes before a task it waits for")
        done.add(t.key)


def run_tasks(
    tasks: list[Task],
    workers: int = 1,
    threads: int = 1,
    announce: Callable[[str], None] = lambda label: None,
    worker_log_level: int = logging.WARNING,
) -> dict[str, Any]:
    """Run ``tasks``; returns ``{key: result}``. ``announce(label)`` is called as each task starts.

    ``workers == 1``: in this process, in list order. Otherwise a pool of ``workers`` spawned processes with
    ``threads`` torch threads each; when a worker is free it takes the first task in list order whose ``after``
    tasks are done. The first failure stops the pool (running tasks are terminated; every artifact is written
    atomically, so nothing half-written is left) and is raised here.
    """
    _check(tasks)
    results: dict[str, Any] = {}
    if workers <= 1:
        for t in tasks:
            announce(t.label)
            results[t.key] = t.fn(*t.args)
        return results
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),  # no fork of a process that holds OpenMP threads
        initializer=_init_worker,
        initargs=(threads, worker_log_level),
    )
    pending = list(tasks)
    running: dict[Future, Task] = {}
    try:
        while pending or running:
            while len(running) < workers:
                ready = next((t for t in pending if all(a in results for a in t.after)), None)
                if ready is None:
                    break
                pending.remove(ready)
                announce(ready.label)
                running[pool.submit(ready.fn, *ready.args)] = ready
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                results[running.pop(future).key] = future.result()
    except BaseException:
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results
