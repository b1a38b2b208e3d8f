"""CPU thread count for torch/OpenMP from the cores this process can actually use.

torch's default is one OpenMP thread per core, spinning while it waits at each barrier. On a laptop or a shared
server with another busy process, one of those threads keeps losing its core, and every parallel region waits
for it: LoRA steps of a small VLM on 2 cores went from 2 s to 20-100 s. :func:`choose_threads` counts the
cores this process may run on (CPU affinity, the cgroup CPU quota) minus the ones other processes keep busy
(load average and the run queue right now, whichever is smaller), and :func:`apply_threads` sets it, with
passive OpenMP waiting so that threads sleep instead of spinning when the load changes later.

The user decides first: ``VSFA_THREADS=N`` wins; a user-set ``OMP_NUM_THREADS`` is left to torch.
Entry points call :func:`apply_threads` (the ``vsfa`` command, :func:`vsfa.study.run_study`); importing
``vsfa`` does not.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from vsfa.errors import ConfigError

log = logging.getLogger(__name__)

_CHOSEN_MARK = "VSFA_THREADS_CHOSEN"  # set when OMP_NUM_THREADS is ours (so a later call may re-choose)


@dataclass(frozen=True)
class ThreadChoice:
    """How many torch threads, and why."""

    threads: int
    cores: int
    busy: float
    source: str  # "VSFA_THREADS", "OMP_NUM_THREADS" or "auto"

    def text(self) -> str:
        if self.source != "auto":
            return f"{self.threads} torch threads ({self.source} set by the user)"
        return (
            f"{self.threads} torch threads ({self.cores} usable cores, {self.busy:.1f} busy with other work)"
        )


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def usable_cores() -> int:
    """Cores this process may run on: CPU affinity, capped by the cgroup quota (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, math.floor(limit + 0.5)))
    return max(1, cores)


def other_load() -> float:
    """Cores kept busy by other processes: the smaller of the 1-minute load average and the run queue now
    (``/proc/loadavg``: runnable tasks, less this process's own running thread)."""
    try:
        avg = os.getloadavg()[0]
    except OSError:
        return 0.0
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]) - 1
    except (OSError, ValueError, IndexError):
        return avg
    return max(0.0, min(avg, float(running)))


def choose_threads(cores: int | None = None, busy: float | None = None) -> ThreadChoice:
    """The thread count for this process: the user's setting, else the usable cores not busy with other work."""
    env = os.environ.get("VSFA_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise ConfigError(f"VSFA_THREADS must be a whole number >= 1, not {env!r}")
        return ThreadChoice(n, cores or usable_cores(), 0.0, "VSFA_THREADS")
    omp = os.environ.get("OMP_NUM_THREADS")
    if omp and os.environ.get(_CHOSEN_MARK) != omp and omp.isdigit() and int(omp) >= 1:
        return ThreadChoice(int(omp), cores or usable_cores(), 0.0, "OMP_NUM_THREADS")
    cores = usable_cores() if cores is None else cores
    busy = other_load() if busy is None else busy
    return ThreadChoice(free_cores(cores, busy), cores, busy, "auto")


def free_cores(cores: int | None = None, busy: float | None = None) -> int:
    """Usable cores not kept busy by other processes (at least 1); a core counts as busy once another process
    keeps it more than about half occupied."""
    cores = usable_cores() if cores is None else cores
    busy = other_load() if busy is None else busy
    return max(1, min(cores, cores - math.floor(busy + 0.5)))


def apply_threads(choice: ThreadChoice | None = None) -> ThreadChoice:
    """Set the chosen thread count for torch (and OpenMP/MKL, when torch is not imported yet); passive
    OpenMP waiting unless the user chose a wait policy. Returns the choice (logged at INFO when it leaves
    cores to other work)."""
    choice = choice or choose_threads()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if choice.source != "OMP_NUM_THREADS":
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(choice.threads)
        os.environ[_CHOSEN_MARK] = str(choice.threads)
    if "torch" in sys.modules:
        import torch

        if torch.get_num_threads() != choice.threads:
            torch.set_num_threads(choice.threads)
    reduced = choice.source == "auto" and choice.threads < choice.cores
    log.log(logging.INFO if reduced else logging.DEBUG, "%s", choice.text())
    return choice
