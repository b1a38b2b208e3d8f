"""Output-folder locks, temp-file hygiene and umask: one writer per folder, stale-lock safe after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vsfa.errors import ArtifactError
from vsfa.io import (
    atomic_dir,
    clean_stale_temps,
    lock_path,
    output_lock,
    write_json_atomic,
)

HOLD = textwrap.dedent(
    """
    import sys, time
    from vsfa.io import output_lock
    with output_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)
    """
)


def _holder(target: Path) -> subprocess.Popen:
    """A process holding the lock on ``target`` (returns once it holds it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_fails_naming_the_holder(tmp_path):
    target = tmp_path / "out"
    proc = _holder(target)
    try:
        with pytest.raises(ArtifactError, match=rf"{target}: in use by pid {proc.pid}"), output_lock(target):
            pass
    finally:
        proc.kill()
        proc.wait()


def test_lock_is_released_by_kill_9_and_cleaned(tmp_path):
    target = tmp_path / "runs" / "deep" / "out"
    proc = _holder(target)
    assert lock_path(target).is_file()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock_path(target).is_file()  # the dead holder's file stays, but its lock is gone
    with output_lock(target) as lock:
        assert lock.read_text().strip() == str(os.getpid())
    assert not lock_path(target).exists()


def test_lock_leaves_nothing_behind(tmp_path):
    target = tmp_path / "a" / "b" / "out"
    with output_lock(target):
        assert (tmp_path / "a" / "b").is_dir()
    assert not (tmp_path / "a").exists()  # folders made only for the lock go again
    held = output_lock(target)
    held.__enter__()  # a second descriptor in the same process is a second writer too
    try:
        with pytest.raises(ArtifactError, match="in use by pid"), output_lock(target):
            pass
    finally:
        held.__exit__(None, None, None)
    assert not lock_path(target).exists()


def test_stale_temps_of_dead_writers_are_cleaned(tmp_path):
    target = tmp_path / "set"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(dead.stdout)
    stale_dir = tmp_path / f".set.{dead_pid}.abc123.tmp"
    stale_dir.mkdir()
    (stale_dir / "half.png").write_bytes(b"x")
    stale_file = tmp_path / f".manifest.json.{dead_pid}.xyz.tmp"
    stale_file.write_text("{")
    live = tmp_path / f".set.{os.getpid()}.live.tmp"  # a running writer's temp is kept
    live.mkdir()
    with atomic_dir(target) as tmp:
        (tmp / "ok").write_text("1")
    assert not stale_dir.exists() and live.exists() and (target / "ok").is_file()
    write_json_atomic(tmp_path / "manifest.json", {})
    assert not stale_file.exists()
    assert clean_stale_temps(target) == []


@pytest.mark.parametrize("mask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o007, 0o660, 0o770)])
def test_artifacts_follow_the_umask(tmp_path, mask, file_mode, dir_mode):
    old = os.umask(mask)
    try:
        write_json_atomic(tmp_path / "f.json", {})
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("1")
    finally:
        os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "d").stat().st_mode & 0o777 == dir_mode


def test_two_trainings_on_one_folder(tmp_path, tiny_model):
    """The second `vsfa train` on a running run's folder exits 2 naming the pid; the first finishes intact."""
    from vsfa.data.build import build_variants

    data = build_variants(tmp_path / "data", ["image"], procedural=8, seed=0, procedural_size=32)
    cfg = tmp_path / "run.toml"
    steps = 400  # long enough that the second process's lock check lands mid-run even on a busy machine
    cfg.write_text(
        f'seed = 0\n[model]\nbase = "{tiny_model("llava")}"\n[data]\npath = "{data / "image"}"\n'
        f"[train]\nmax_steps = {steps}\nbatch_size = 2\n[checkpoints]\nlog_until = 4\nevery = 20\n"
        '[runtime]\ndevice = "cpu"\n'
    )
    out = tmp_path / "run"
    args = ["train", "--config", str(cfg), "--out", str(out), "--quiet"]
    # the second process imports everything first, then starts its command the moment it is told to
    warm = "import sys, vsfa.cli, vsfa.train; sys.stdin.readline(); sys.argv = ['vsfa', *sys.argv[1:]]; vsfa.cli.main()"
    second = subprocess.Popen(
        [sys.executable, "-c", warm, *args], stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first = subprocess.Popen(
        [sys.executable, "-m", "vsfa.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not (out / "loss.jsonl").is_file() and first.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    _, err2 = second.communicate("go\n", timeout=120)
    assert first.poll() is None, "the first run finished before the second started"
    assert second.returncode == 2, err2
    assert err2.count("\n") == 1 and f"in use by pid {first.pid}" in err2
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    steps_logged = [json.loads(line)["step"] for line in (out / "loss.jsonl").read_text().splitlines()]
    assert steps_logged == list(range(1, steps + 1))
    assert json.loads((out / "manifest.json").read_text())["total_steps"] == steps
    assert not lock_path(out).exists()


def test_kill_9_mid_render_then_rerun_cleans_the_orphan(tmp_path):
    """`vsfa data images` killed while rendering leaves its temp folder; the next run removes it."""
    out = tmp_path / "set"
    cmd = [sys.executable, "-m", "vsfa.cli", "data", "images", "--kind", "threat", "--n", "400"]
    proc = subprocess.Popen([*cmd, "--size", "96", "--out", str(out)], stderr=subprocess.PIPE)
    deadline = time.time() + 120
    orphans: list[Path] = []
    while time.time() < deadline and proc.poll() is None:
        orphans = [p for p in tmp_path.glob(f".set.{proc.pid}.*.tmp") if any(p.glob("*.png"))]
        if orphans:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert orphans and orphans[0].is_dir() and not out.exists()
    from vsfa.data.images import write_procedural_set

    write_procedural_set("threat", 2, out, size=32)
    assert not orphans[0].exists() and (out / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temp, no lock file left
