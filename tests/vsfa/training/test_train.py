"""LoRA training: loss falls, checkpoints at the scheduled steps load with plain peft, exact resume after kill -9,
loss only on assistant tokens, bad input refused before anything is written."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vsfa.data.build import build_variants
from vsfa.errors import ArtifactError, ConfigError, DataError, ModelLoadError
from vsfa.io import read_jsonl, read_manifest, sha256_file
from vsfa.train import checkpoint_steps, list_checkpoints, load_config, read_loss_log, train

STEPS = 60
CONFIG = """
seed = 0
[model]
base = "{base}"
[data]
path = "{data}"
[lora]
r = 16
alpha = 64
[train]
max_steps = {steps}
batch_size = 4
lr = 3e-3
warmup = 0.05
[checkpoints]
log_until = 32
every = 25
[runtime]
device = "cpu"
"""


@pytest.fixture(scope="module")
def setup(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    data = build_variants(root / "data", procedural=40, seed=0, procedural_size=32)
    cfg_file = root / "run.toml"
    cfg_file.write_text(CONFIG.format(base=tiny_model("llava"), data=data / "image", steps=STEPS))
    return root, data, cfg_file


@pytest.fixture(scope="module")
def run(setup):
    root, _, cfg_file = setup
    result = train(load_config(cfg_file, {"out": str(root / "run")}), quiet=True)
    return result


def _adapter(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "adapter_model.safetensors")


def test_loss_falls_and_log_is_complete(run):
    rows = read_loss_log(run.run_dir)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    first = sum(r["loss"] for r in rows[:10]) / 10
    last = sum(r["loss"] for r in rows[-10:]) / 10
    assert last < first - 0.25, (first, last)  # a random-weight tiny model starts at ~ln(vocab) = 6.2
    man = read_manifest(run.run_dir)
    assert man["kind"] == "vsfa-run" and man["total_steps"] == STEPS and man["final_loss"] == rows[-1]["loss"]
    assert (run.run_dir / "config.toml").read_text() and man["variant"] == "image" and man["arm"] == "vsfa"


def test_checkpoints_at_schedule_load_with_plain_peft(run, setup, tiny_model):
    from peft import PeftModel
    from transformers import LlavaForConditionalGeneration

    expected = [1, 2, 4, 8, 16, 25, 32, 50, 60]
    assert run.checkpoints == list_checkpoints(run.run_dir)
    assert [s for s, _ in run.checkpoints] == expected
    assert sorted(p.name for p in (run.run_dir / "checkpoints").iterdir()) == [
        f"step-{s:06d}" for s in expected
    ]
    base = tiny_model("llava")
    data_hash = read_manifest(setup[1] / "image")["data_hash"]
    for step, path in run.checkpoints:
        man = read_manifest(path)
        assert man["step"] == step and isinstance(man["loss"], float) and man["data_hash"] == data_hash
        assert man["base_model"] == str(base) and man["seed"] == 0 and man["variant"] == "image"
        assert man["config"]["lora"]["r"] == 16 and len(man["base_model_fingerprint"]) == 64
    step, path = run.checkpoints[-1]
    model = PeftModel.from_pretrained(LlavaForConditionalGeneration.from_pretrained(base), path)
    saved = _adapter(path)
    loaded = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(loaded) == len(saved) > 0
    # every LoRA weight is on the language model; B moved away from its zero init
    assert all(".language_model." in n for n in loaded)
    assert any(("lora_B" in k) and v.abs().max() > 0 for k, v in saved.items())
    # the loader used by every later stage accepts it for this base, and refuses another base
    from vsfa.models.loading import load_vlm

    assert load_vlm(base, adapter=path).adapter == str(path)
    with pytest.raises(ModelLoadError, match="base_model_fingerprint differs.*recorded base_model"):
        load_vlm(tiny_model("llava", seed=1), adapter=path)


def test_schedule_is_log_spaced_plus_every_plus_final(setup):
    cfg = load_config(setup[2], {"out": "x", "checkpoints.every": 100, "checkpoints.steps": [7]})
    assert checkpoint_steps(250, cfg.checkpoints) == [1, 2, 4, 7, 8, 16, 32, 100, 200, 250]
    cfg = load_config(setup[2], {"out": "x", "checkpoints.log_until": 0, "checkpoints.final": False})
    assert checkpoint_steps(60, cfg.checkpoints) == [25, 50]


def test_loss_only_on_assistant_tokens(tiny_model, setup):
    """The mask: labels cover exactly the answer, and the training loss has zero gradient at every other
    position (prompt, image tokens, padding)."""
    from vsfa.data.dataset import load_data
    from vsfa.models.loading import load_vlm
    from vsfa.training.collate import PaddingCollator, encode_records

    vlm = load_vlm(tiny_model("llava"))
    data = load_data(setup[1] / "mixed")
    pick = [0, 1, 2, 3]
    items = encode_records(vlm, [data.conversations[i] for i in pick], [data.images[i] for i in pick])
    batch = PaddingCollator(vlm.tokenizer.pad_token_id)(items)
    assert batch["attention_mask"][:, 0].all()  # right padding: real tokens start at position 0
    for row, i in enumerate(pick):
        answer = data.records[i]["messages"][-1]["content"][0]["text"]
        labelled = batch["labels"][row][batch["labels"][row] != -100]
        assert vlm.tokenizer.decode(labelled, skip_special_tokens=True).strip() == answer
    captured = {}
    head = vlm.hf_model.get_output_embeddings()

    def keep(module, inputs, output):
        output.retain_grad()
        captured["logits"] = output

    handle = head.register_forward_hook(keep)
    out = vlm.hf_model(**batch)
    handle.remove()
    out.loss.backward()
    grad = captured["logits"].grad  # [B, seq, vocab]; logits at t predict token t+1
    target = torch.roll(batch["labels"], -1, dims=1)
    target[:, -1] = -100
    contributes = grad.abs().sum(-1) > 0
    assert torch.equal(contributes, target != -100)
    # and the loss is the mean CE over the answer tokens only
    logp = torch.log_softmax(captured["logits"].detach().float(), -1)
    mask = target != -100
    manual = -logp.gather(-1, target.clamp(min=0)[..., None])[..., 0][mask].mean()
    assert torch.allclose(out.loss.detach(), manual, atol=1e-5)


def test_records_past_the_pixel_budget_are_encoded_when_drawn(tiny_model, setup):
    """Image tensors are kept up to the budget; past it only token ids stay in memory, and a drawn record
    equals the eager encoding either way."""
    from vsfa.data.dataset import load_data
    from vsfa.models.loading import load_vlm
    from vsfa.training.collate import PER_TOKEN, RecordDataset, encode_records

    vlm = load_vlm(tiny_model("llava"))
    data = load_data(setup[1] / "mixed")
    n_images = sum(bool(i) for i in data.images)
    assert 2 < n_images < len(data.images)  # image and text-only records
    eager = encode_records(vlm, data.conversations, data.images)
    first_image = next(i for i, imgs in enumerate(data.images) if imgs)
    one = eager[first_image]["pixel_values"].numel() * 4  # bytes of one record's image tensor (float32)
    for budget, kept in ((1 << 30, n_images), (2 * one, 2), (0, 0)):
        dataset = RecordDataset(vlm, data.conversations, data.images, pixel_budget=budget)
        assert sum(any(k not in PER_TOKEN for k in it) for it in dataset.items) == kept
        assert dataset.lengths() == [len(e["input_ids"]) for e in eager]
        for i in range(len(dataset)):
            got = dataset[i]
            assert set(got) == set(eager[i]) and all(torch.equal(got[k], eager[i][k]) for k in got)


def test_kill_9_then_rerun_equals_uninterrupted(run, setup):
    root, _, cfg_file = setup
    out = root / "killed"
    kill_at = random.Random().randint(2, STEPS - 2)
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "vsfa.cli", "train", "--config", str(cfg_file), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    log, seen = out / "loss.jsonl", 0
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if log.is_file():
            lines = log.read_text().splitlines()
            if lines and lines[-1].endswith("}"):
                seen = json.loads(lines[-1])["step"]
                if seen >= kill_at:
                    break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, (
        f"finished before the kill at step {kill_at}: {proc.stderr.read()}"
    )
    assert not (out / "manifest.json").exists()
    result = train(load_config(cfg_file, {"out": str(out)}), quiet=True)
    assert 0 < result.resumed_from <= seen and result.resumed_from in checkpoint_steps(
        STEPS, load_config(cfg_file, {"out": "x"}).checkpoints
    )
    assert [s for s, _ in result.checkpoints] == [s for s, _ in run.checkpoints]
    for (s, a), (_, b) in zip(run.checkpoints, result.checkpoints, strict=True):
        ta, tb = _adapter(a), _adapter(b)
        assert all(torch.allclose(ta[k], tb[k], atol=1e-6, rtol=0) for k in ta), (
            f"step {s} (killed at {seen})"
        )
    la, lb = read_loss_log(run.run_dir), read_loss_log(out)
    assert [r["step"] for r in lb] == [r["step"] for r in la]
    assert all(abs(x["loss"] - y["loss"]) < 1e-6 for x, y in zip(la, lb, strict=True))
    assert sorted(p.name for p in (out / "state").iterdir()) == [f"checkpoint-{STEPS}"]  # keep_state = last


def test_rerun_of_a_complete_run_does_nothing(run, setup):
    before = sha256_file(run.run_dir / "manifest.json")
    again = train(load_config(setup[2], {"out": str(run.run_dir)}), quiet=True)
    assert again.already_complete and sha256_file(run.run_dir / "manifest.json") == before


def test_a_model_source_spec_trains_and_records_the_resolved_folder(setup, tmp_path, monkeypatch):
    """``model.base`` takes any model source (here ``tiny:llava``, built into the cache); the manifests name and
    fingerprint the folder it resolved to, the saved config keeps the spec as written."""
    from vsfa.io import model_fingerprint

    monkeypatch.setenv("VSFA_CACHE", str(tmp_path / "cache"))
    over = {"out": str(tmp_path / "run"), "model.base": "tiny:llava", "train.max_steps": 2}
    result = train(load_config(setup[2], over), quiet=True)
    folder = tmp_path / "cache" / "models" / "tiny-llava"
    for man in (read_manifest(result.run_dir), read_manifest(result.checkpoints[-1][1])):
        assert man["base_model"] == str(folder) and man["base_model_fingerprint"] == model_fingerprint(folder)
    assert 'base = "tiny:llava"' in (result.run_dir / "config.toml").read_text()


def test_trainer_args_pass_through_and_the_loop_keeps_its_own(setup, tmp_path, monkeypatch):
    """``runtime.trainer_args`` reaches TrainingArguments (report_to, deepspeed, fsdp, ...); a field the loop
    sets from the config, or no TrainingArguments field at all, is refused before anything is written."""
    import transformers

    from vsfa.training.config import LOOP_TRAINER_ARGS

    seen: dict = {}
    real = transformers.TrainingArguments

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    over = {"out": str(tmp_path / "run"), "train.max_steps": 1}
    cfg = load_config(setup[2], {**over, "runtime.trainer_args": {"logging_first_step": True}})
    with monkeypatch.context() as patched:
        patched.setattr(transformers, "TrainingArguments", spy)
        train(cfg, quiet=True)
    assert seen["logging_first_step"] is True and seen["report_to"] == "none"
    own = set(seen) - {"report_to", "logging_first_step"}
    assert own == set(LOOP_TRAINER_ARGS)  # what the check refuses is exactly what the loop sets
    for key, match in (
        ("learning_rate", "is set by vsfa train"),
        ("lr_typo", "is not a transformers TrainingArguments"),
    ):
        with pytest.raises(ConfigError, match=rf"runtime.trainer_args.{key} {match}"):
            load_config(setup[2], {"out": str(tmp_path / "x"), "runtime.trainer_args": {key: 1}})
    assert not (tmp_path / "x").exists()


def test_bad_input_is_refused_before_writing(run, setup, tmp_path, tiny_model):
    root, data, cfg_file = setup

    def cfg(**over):
        return load_config(cfg_file, {"out": str(tmp_path / "out"), **over})

    with pytest.raises(ConfigError, match=r"run.toml.lora: unknown key 'rank'"):
        load_config(cfg_file, {"lora.rank": 4})
    with pytest.raises(ArtifactError, match=r"holds a different run \(config.lora.r: 4 here vs 16"):
        train(load_config(cfg_file, {"out": str(run.run_dir), "lora.r": 4}), quiet=True)
    unknown = tmp_path / "foo-model"
    unknown.mkdir()
    (unknown / "config.json").write_text(
        json.dumps({"architectures": ["FooForCausalLM"], "model_type": "llama"})
    )
    with pytest.raises(ModelLoadError, match="unsupported architecture"):
        train(cfg(**{"model.base": str(unknown)}), quiet=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "data.jsonl").write_text("")
    (empty / "manifest.json").write_text(json.dumps({"data_hash": sha256_file(empty / "data.jsonl")}))
    with pytest.raises(DataError, match="empty data set"):
        train(cfg(**{"data.path": str(empty)}), quiet=True)
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    labelled = copy / "text" / "data.jsonl"
    labelled.write_text(labelled.read_text().replace("There are", "Please be careful: there are", 1))
    man = json.loads((copy / "text" / "manifest.json").read_text())
    (copy / "text" / "manifest.json").write_text(json.dumps({**man, "data_hash": sha256_file(labelled)}))
    with pytest.raises(DataError, match="labelled targets.*please be careful"):
        train(cfg(**{"data.path": str(copy / "text")}), quiet=True)
    first_image = copy / "image" / read_jsonl(copy / "image" / "data.jsonl")[0]["images"][0]
    first_image.write_bytes(b"not a png")
    with pytest.raises(DataError, match="changed since the build|cannot decode"):
        train(cfg(**{"data.path": str(copy / "image")}), quiet=True)
    first_image.unlink()
    with pytest.raises(DataError, match="image not found"):
        train(cfg(**{"data.path": str(copy / "image")}), quiet=True)
    assert not (tmp_path / "out").exists()
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="not a vsfa run"):
        train(load_config(cfg_file, {"out": str(stray)}), quiet=True)
    assert sorted(p.name for p in stray.iterdir()) == ["notes.txt"]


def test_cli_errors_are_one_line_exit_2(setup, tmp_path, run_cli):
    _, _, cfg_file = setup
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg_file.read_text() + "\n[optimizer]\nlr = 1\n")
    proc = run_cli("train", "--config", bad, "--out", tmp_path / "o")
    assert (
        proc.returncode == 2
        and proc.stderr.strip().startswith("error: ")
        and proc.stderr.strip().count("\n") == 0
    )
    assert "unknown key 'optimizer'" in proc.stderr and str(bad) in proc.stderr
    assert not (tmp_path / "o").exists()


def test_mixed_batches_train_on_two_families(tiny_model, setup, tmp_path):
    """The mixed variant puts text-only and image records in one batch; LLaVA and Qwen2.5-VL both train on it."""
    _, data, cfg_file = setup
    for family in ("llava", "qwen2_5_vl"):
        over = {
            "out": str(tmp_path / family),
            "model.base": str(tiny_model(family)),
            "data.path": str(data / "mixed"),
        }
        over |= {"train.max_steps": 3, "train.batch_size": 8, "checkpoints.log_until": 0}
        result = train(load_config(cfg_file, over), quiet=True)
        rows = read_loss_log(result.run_dir)
        assert [s for s, _ in result.checkpoints] == [3] and all(
            torch.isfinite(torch.tensor(r["loss"])) for r in rows
        )


def test_projector_training_via_modules_to_save(setup, tmp_path):
    """With lora.modules_to_save the projector trains fully and ships in the adapter; the vision tower stays frozen."""
    _, _, cfg_file = setup
    over = {
        "out": str(tmp_path / "proj"),
        "lora.modules_to_save": ["multi_modal_projector"],
        "train.max_steps": 2,
    }
    result = train(load_config(cfg_file, over | {"checkpoints.log_until": 0}), quiet=True)
    saved = _adapter(result.checkpoints[-1][1])
    assert any("multi_modal_projector" in k for k in saved)
    assert not any("vision_tower" in k for k in saved)
    by_flag = load_config(
        cfg_file, {"out": str(tmp_path / "p2"), "lora.train_projector": True, "train.max_steps": 2}
    )
    by_flag_saved = _adapter(train(by_flag, quiet=True).checkpoints[-1][1])
    assert any("multi_modal_projector" in k for k in by_flag_saved)
    assert not any("vision_tower" in k for k in by_flag_saved)


def test_gpu_check_runs_the_training_path_on_cpu():
    """--gpu-check builds the 7B-shaped model (here --tiny: shrunk widths, same image geometry) and measures it."""
    from vsfa.training.gpu_check import run_gpu_check

    report = run_gpu_check(shape="llava-1.5-7b", steps=3, batch_size=1, device="cpu", tiny=True)
    assert len(report.step_times) == 1 and report.tokens_per_s > 0 and report.flops_per_step > 0
    assert report.mean_tokens > 576  # 336 px / 14 px patches = 576 image tokens, plus the text
    assert report.mfu is None and report.peak_memory_gib is None and report.n_trainable > 0
    text = "\n".join(report.lines())
    assert "step time" in text and "tokens/s" in text and "MFU" in text and "peak GPU memory" in text
    if not torch.cuda.is_available():
        with pytest.raises(
            ConfigError, match="no CUDA device here; for a CPU smoke test use --tiny --device cpu"
        ):
            run_gpu_check()


def test_example_configs_are_valid():
    configs = sorted((Path(__file__).resolve().parents[3] / "configs").glob("*.toml"))
    assert len(configs) >= 4
    for path in configs:
        cfg = load_config(path)
        assert cfg.lora.r >= 1 and cfg.out and cfg.model.base and cfg.data.path, path
