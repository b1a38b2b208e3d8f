"""Shared fixtures: offline environment, tiny model folders built once per test session."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ["OMP_NUM_THREADS"] = "1"  # also for CLI subprocesses: tiny models run several times faster

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # tiny models: one thread is several times faster on a shared 2-core machine

from vsfa.env import guard_torchvision_autoinstall  # noqa: E402

guard_torchvision_autoinstall()

from transformers.utils import logging as _hf_logging  # noqa: E402

_hf_logging.set_verbosity_error()
_hf_logging.disable_progress_bar()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Factory: ``tiny_model("llava", seed=0)`` -> folder of a saved tiny VLM, built once per session."""
    from vsfa.models.tiny import save_tiny

    built: dict[tuple[str, int], Path] = {}

    def make(family: str = "llava", seed: int = 0) -> Path:
        key = (family, seed)
        if key not in built:
            built[key] = save_tiny(
                family, tmp_path_factory.mktemp(f"tiny-{family}-{seed}") / "model", seed=seed
            )
        return built[key]

    return make


@pytest.fixture
def run_cli():
    """Run the ``vsfa`` CLI in a subprocess: ``run_cli("models", "list")`` -> CompletedProcess."""

    def run(*args: str, check: bool = False, cwd: str | Path | None = None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "vsfa.cli", *map(str, args)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="session")
def quick_study(tmp_path_factory):
    """The ``quick`` demo study (tiny model, every stage), run once per session; returns its folder."""
    from vsfa.study import run_study, study_config

    out = tmp_path_factory.mktemp("quick-study") / "study"
    run_study(study_config("quick", out=out))
    return out
