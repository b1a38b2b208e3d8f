"""The analysis notebooks run top to bottom on the quick study and reproduce the figures they promise."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
# notebook -> figure files (stems, PNG + PDF) it writes through the figure scripts' make()
PROMISED = {
    "01_directions.ipynb": ["directions_by_layer"],
    "02_trajectories.ipynb": [
        "trajectory",  # trajectory_named only when the link's search names another direction
        "heatmap_cos_rederived",
        "heatmap_shift_cos",
        "attribution_harmful",
        "attribution_harmless",
    ],
    "03_link_to_safety.ipynb": ["asr_vs_shift", "refusal_logodds_vs_shift", "direction_search", "steering"],
}


@pytest.fixture(scope="module")
def kernel_dirs(tmp_path_factory) -> Path:
    """A ``python3`` kernelspec that runs this interpreter (the venv's), whatever else is installed."""
    folder = tmp_path_factory.mktemp("kernels")
    spec = folder / "python3"
    spec.mkdir()
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"})
    )
    return folder


def execute(path: Path, kernel_dirs: Path, cwd: Path, env: dict[str, str]) -> nbformat.NotebookNode:
    """Run every cell of ``path`` in a fresh ``python3`` kernel (raises CellExecutionError on any error)."""
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(
        kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dirs)])
    )
    client = NotebookClient(nb, km=km, timeout=300, resources={"metadata": {"path": str(cwd)}})
    client.execute(env={**os.environ, "MPLBACKEND": "Agg", **env})
    return nb


def outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def tables(nb: nbformat.NotebookNode) -> list[str]:
    """The HTML of every displayed pandas table."""
    return [o["data"]["text/html"] for o in outputs(nb) if "<table" in o.get("data", {}).get("text/html", "")]


@pytest.mark.parametrize("name", list(PROMISED))
def test_notebook_is_committed_clean(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.cells[0].cell_type == "markdown" and "VSFA_STUDY" in nb.cells[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert 'os.environ.get("VSFA_STUDY", "runs/demo-organism")' in code[0].source
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"


@pytest.mark.parametrize("name", list(PROMISED))
def test_notebook_reproduces_its_figures_and_tables(name, quick_study, kernel_dirs, tmp_path):
    out = tmp_path / "figures"
    nb = execute(
        NOTEBOOKS / name, kernel_dirs, ROOT, {"VSFA_STUDY": str(quick_study), "VSFA_FIGURES": str(out)}
    )
    outs = outputs(nb)
    assert not [o for o in outs if o.output_type == "error"]
    for stem in PROMISED[name]:
        for ext in (".png", ".pdf"):
            assert (out / f"{stem}{ext}").stat().st_size > 1000, f"{name}: {stem}{ext} not written"
    shown = sum("image/png" in o.get("data", {}) for o in outs)
    assert shown == len(PROMISED[name]), f"{name}: {shown} figures displayed"
    hook = json.loads((quick_study / "link.json").read_text())["hook"]
    assert any(hook in html for html in tables(nb)), (
        f"{name}: no displayed table names the selected hook {hook}"
    )


def test_notebook_runs_from_the_notebooks_folder_with_a_relative_study(quick_study, kernel_dirs, tmp_path):
    """Opened in Jupyter from notebooks/, a relative STUDY is taken from the repository root."""
    (tmp_path / "notebooks").mkdir()
    shutil.copy(NOTEBOOKS / "01_directions.ipynb", tmp_path / "notebooks")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "demo").symlink_to(quick_study, target_is_directory=True)
    env = {"VSFA_STUDY": "runs/demo", "VSFA_FIGURES": "figs"}  # both relative to the repository root
    nb = execute(tmp_path / "notebooks" / "01_directions.ipynb", kernel_dirs, tmp_path / "notebooks", env)
    assert (tmp_path / "figs" / "directions_by_layer.png").stat().st_size > 1000
    assert any("image/png" in o.get("data", {}) for o in outputs(nb))
