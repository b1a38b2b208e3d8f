"""``accelerate launch --multi_gpu --num_processes 2`` on CPU (gloo) runs train, capture and eval data-parallel with the same
results as one process: adapter tensors within 1e-5 at the same global batch, the same activation store, the same
judged records."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vsfa.data.build import build_variants
from vsfa.io import read_jsonl, read_manifest

pytestmark = pytest.mark.slow

TRAIN = """
seed = 0
[model]
base = "{base}"
[data]
path = "{data}"
[lora]
r = 4
alpha = 16
dropout = 0.0  # dropout masks depend on how the batch is split: no run can match them
[train]
max_steps = 6
batch_size = {batch}
lr = 3e-3
[checkpoints]
log_until = 0
every = 3
keep_state = "all"
[runtime]
device = "cpu"
"""


def _env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU processes joined with gloo, also on a machine with GPUs
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _vsfa(*args: object, procs: int = 1) -> subprocess.CompletedProcess:
    """``vsfa ARGS`` in one process, or under ``accelerate launch --multi_gpu --num_processes PROCS``.

    On a machine without CUDA that launcher (torchrun underneath) starts CPU processes joined with gloo;
    ``--cpu --num_processes 2`` would start a single process (accelerate's multi-CPU path needs mpirun).
    """
    if procs == 1:
        cmd = [sys.executable, "-m", "vsfa.cli"]
    else:
        cmd = [
            *(
                sys.executable,
                "-m",
                "accelerate.commands.launch",
                "--multi_gpu",
                "--num_processes",
                str(procs),
            ),
            *("--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"),
            *("--main_process_port", str(_free_port()), "-m", "vsfa.cli"),
        ]
    proc = subprocess.run(
        [*cmd, *map(str, args)], capture_output=True, text=True, env=_env(), timeout=900, check=False
    )
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} {args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def launcher():
    """Skip (with the reason) where ``accelerate launch`` cannot start two gloo processes."""
    pytest.importorskip("accelerate")
    probe = (
        "import torch.distributed as d; d.init_process_group('gloo'); d.barrier(); print('ok', d.get_rank())"
    )
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--main_process_port", str(_free_port())]
    script = Path(os.environ.get("TMPDIR", "/tmp")) / f"vsfa-dist-probe-{os.getpid()}.py"
    script.write_text(probe)
    try:
        proc = subprocess.run([*cmd, str(script)], capture_output=True, text=True, env=_env(), timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip("accelerate launch did not start 2 gloo processes within 300 s")
    finally:
        script.unlink(missing_ok=True)
    if proc.returncode != 0 or proc.stdout.count("ok") != 2:
        pytest.skip(f"accelerate launch cannot start 2 gloo processes here: {proc.stderr.strip()[-300:]}")


def _adapter(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "adapter_model.safetensors")


def test_train_two_processes_equals_one_at_same_global_batch(launcher, tiny_model, tmp_path):
    base = tiny_model("llava")
    data = build_variants(tmp_path / "data", procedural=16, seed=0, procedural_size=32) / "image"
    runs = {}
    for procs, batch in ((1, 4), (2, 2)):  # global batch 4 = per-device batch x processes
        cfg = tmp_path / f"train{procs}.toml"
        cfg.write_text(TRAIN.format(base=base, data=data, batch=batch))
        runs[procs] = tmp_path / f"run{procs}"
        _vsfa("train", "--config", cfg, "--out", runs[procs], "--quiet", procs=procs)
    one, two = runs[1], runs[2]
    for step in (3, 6):
        a = _adapter(one / f"checkpoints/step-{step:06d}")
        b = _adapter(two / f"checkpoints/step-{step:06d}")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=0, msg=f"step {step} {k}")
    # written once, by the main process: one loss row per step, one manifest naming both checkpoints
    assert [json.loads(x)["step"] for x in (two / "loss.jsonl").read_text().splitlines()] == list(range(1, 7))
    man = read_manifest(two)
    assert man["total_steps"] == 6 and man["checkpoints"] == [
        "checkpoints/step-000003",
        "checkpoints/step-000006",
    ]
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step-000003", "step-000006"]

    # exact resume under 2 processes: drop the last checkpoint, its state and the run manifest, rerun
    final = _adapter(two / "checkpoints/step-000006")
    shutil.rmtree(two / "checkpoints/step-000006")
    shutil.rmtree(two / "state/checkpoint-6")
    (two / "manifest.json").unlink()
    _vsfa("train", "--config", tmp_path / "train2.toml", "--out", two, "--quiet", procs=2)
    assert read_manifest(two)["resumed_from"] == 3
    resumed = _adapter(two / "checkpoints/step-000006")
    for k in final:
        torch.testing.assert_close(resumed[k], final[k], atol=1e-6, rtol=0, msg=k)


def _store(root: Path) -> Path:
    (store,) = [p for p in root.glob("*/*") if p.is_dir() and not p.name.startswith(".")]
    return store


def test_capture_two_processes_writes_the_same_store(launcher, tiny_model, tmp_path):
    base = tiny_model("llava")
    args = ["capture", "--model", base, "--contrast", "persona", "--max-questions", "3", "--batch-size", "2"]
    args += ["--positions", "last,eoi_mean", "--layers", "0,1"]
    _vsfa(*args, "--acts", tmp_path / "one", procs=1)
    two_procs = _vsfa(*args, "--acts", tmp_path / "two", procs=2)
    assert two_procs.stdout.count("wrote ") == 2  # one line per process: two processes ran
    one, two = _store(tmp_path / "one"), _store(tmp_path / "two")
    assert one.name == two.name  # same content key
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert (two / "index.jsonl").read_bytes() == (one / "index.jsonl").read_bytes()
    timing = ("seconds", "created")
    m1, m2 = read_manifest(one), read_manifest(two)
    assert {k: v for k, v in m2.items() if k not in timing} == {
        k: v for k, v in m1.items() if k not in timing
    }
    assert m1["n_items"] > 4  # more batches than processes: both processes had work
    for shard in m1["shards"]:
        a, b = load_file(one / shard["file"]), load_file(two / shard["file"])
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (shard["file"], k)
    assert not list((tmp_path / "two").rglob(".*parts"))  # the parts were merged and removed


def test_eval_two_processes_judges_the_same_records(launcher, tiny_model, tmp_path):
    base = tiny_model("llava")
    args = ["eval", "--model", base, "--bench", "builtin", "--bench-opt", "builtin.limit_pairs=2"]
    args += ["--bench-opt", "builtin.variants=text,typo", "--judge", "keyword", "--max-new-tokens", "6"]
    args += ["--batch-size", "2", "--quiet"]
    _vsfa(*args, "--out", tmp_path / "one", procs=1)
    two_procs = _vsfa(*args, "--out", tmp_path / "two", procs=2)
    assert two_procs.stdout.count("wrote ") == 2  # one line per process: two processes ran
    one, two = tmp_path / "one/base/builtin", tmp_path / "two/base/builtin"
    assert len(read_jsonl(one / "responses.jsonl")) == 8
    for name in ("responses.jsonl", "judged.jsonl", "metrics.json"):
        assert (two / name).read_bytes() == (one / name).read_bytes(), name
    assert not list(two.glob(".*partial"))
    drop = ("model", "files")  # absolute paths; the file hashes are compared above
    assert {k: v for k, v in read_manifest(two).items() if k not in drop} == {
        k: v for k, v in read_manifest(one).items() if k not in drop
    }
