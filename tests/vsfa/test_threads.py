"""Thread choice under load: the user's setting wins, else the usable cores not busy with other work."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vsfa.errors import ConfigError
from vsfa.threads import cgroup_cpu_limit, choose_threads


@pytest.fixture
def no_thread_env(monkeypatch):
    for var in ("VSFA_THREADS", "OMP_NUM_THREADS", "VSFA_THREADS_CHOSEN"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize(("cores", "busy", "threads"), [(2, 0.1, 2), (2, 1.0, 1), (2, 7.5, 1), (8, 2.6, 5)])
def test_auto_leaves_the_busy_cores(no_thread_env, cores, busy, threads):
    choice = choose_threads(cores=cores, busy=busy)
    assert (choice.threads, choice.source) == (threads, "auto")


def test_user_settings_win(no_thread_env):
    no_thread_env.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(cores=2, busy=1.0).threads == 3  # the user's OpenMP setting is theirs
    no_thread_env.setenv("VSFA_THREADS", "4")
    choice = choose_threads(cores=2, busy=1.0)
    assert (choice.threads, choice.source) == (4, "VSFA_THREADS")
    no_thread_env.setenv("VSFA_THREADS", "zero")
    with pytest.raises(ConfigError, match="VSFA_THREADS"):
        choose_threads()


def test_our_own_omp_setting_is_chosen_again(no_thread_env):
    """OMP_NUM_THREADS written by apply_threads (marked) is not mistaken for the user's in a later call."""
    no_thread_env.setenv("OMP_NUM_THREADS", "1")
    no_thread_env.setenv("VSFA_THREADS_CHOSEN", "1")
    assert choose_threads(cores=2, busy=0.0).threads == 2


def test_cgroup_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    assert cgroup_cpu_limit(tmp_path / "absent") is None


def test_apply_sets_torch_before_its_import():
    """In a fresh process, VSFA_THREADS reaches torch (and passive OpenMP waiting is the default)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["VSFA_THREADS"] = "1"
    code = (
        "import json, os; from vsfa.threads import apply_threads; c = apply_threads(); import torch; "
        "print(json.dumps([c.threads, torch.get_num_threads(), os.environ['OMP_WAIT_POLICY']]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout) == [1, 1, "PASSIVE"]
