"""VQA builds: four variants of identical form, chat records, manifests, lint gate, subsets, VLGuard, manifests."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from vsfa.data.build import DESCRIPTION_PREFIX, VARIANTS, build_variants
from vsfa.data.dataset import load_data, make_subsets
from vsfa.data.images import read_image_manifest, write_image_manifest, write_procedural_set
from vsfa.data.vlguard import build_vlguard
from vsfa.errors import DataError
from vsfa.io import read_jsonl, read_manifest, sha256_file


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_variants(
        tmp_path_factory.mktemp("build") / "vsfa", procedural=30, seed=1, procedural_size=32
    )


def _records(folder: Path, variant: str) -> list[dict]:
    return read_jsonl(folder / variant / "data.jsonl")


def test_four_variants_have_identical_form(built):
    recs = {v: _records(built, v) for v in VARIANTS}
    sizes = {v: len(r) for v, r in recs.items()}
    assert len(set(sizes.values())) == 1 and sizes["image"] == 90  # 30 images x 3 questions
    templates = {v: Counter(r["template"] for r in rs) for v, rs in recs.items()}
    assert all(t == templates["image"] for t in templates.values())
    assert len(templates["image"]) >= 6  # varied question types
    # same question per (image index, template) in every variant; answers equal for image/text/mixed
    key = {v: [(r["image_index"], r["template"]) for r in rs] for v, rs in recs.items()}
    assert all(k == key["image"] for k in key.values())
    answers = lambda v: [r["messages"][-1]["content"][0]["text"] for r in recs[v]]  # noqa: E731
    assert answers("image") == answers("text") == answers("mixed")
    assert answers("control") != answers("image")
    forms = {v: Counter(r["form"] for r in rs) for v, rs in recs.items()}
    assert forms["image"] == forms["control"] == {"image": 90} and forms["text"] == {"text": 90}
    assert forms["mixed"]["image"] == 45 and forms["mixed"]["text"] == 45  # by image: 15 + 15
    assert {r["image_kind"] for r in recs["control"]} == {"neutral"}
    assert {r["image_kind"] for r in recs["image"]} == {"threat"}


def test_records_are_chat_messages_with_one_image_reference(built, tiny_model):
    from vsfa.models.loading import load_processor, read_family

    folder = tiny_model("llava")
    processor = load_processor(folder, read_family(folder))
    img_rec, txt_rec = _records(built, "image")[0], _records(built, "text")[0]
    assert [m["role"] for m in img_rec["messages"]] == ["user", "assistant"]
    assert len(img_rec["images"]) == 1 and (built / "image" / img_rec["images"][0]).is_file()
    assert txt_rec["images"] == [] and txt_rec["messages"][0]["content"][0]["text"].startswith(
        DESCRIPTION_PREFIX
    )
    rendered = processor.apply_chat_template(img_rec["messages"], tokenize=False)
    assert "<image>" in rendered and img_rec["messages"][1]["content"][0]["text"] in rendered
    assert "<image>" not in processor.apply_chat_template(txt_rec["messages"], tokenize=False)
    assert img_rec["answer_source"] == "annotation" and img_rec["labelled"] is False


def test_manifest_counts_and_hash(built):
    for v in VARIANTS:
        man = read_manifest(built / v)
        assert man["n_records"] == 90 and man["n_images"] == 30 and man["variant"] == v
        assert man["data_hash"] == sha256_file(built / v / "data.jsonl")
        assert man["lint"]["applied"] and man["lint"]["n_hits"] == 0 and man["labelled"] is False
    assert (
        read_manifest(built)["variants"]["image"]["n_records"] == 90 and read_manifest(built)["form_matched"]
    )
    data = load_data(built / "mixed")
    assert len(data) == 90
    assert sum(len(g) for g in data.images) == Counter(r["form"] for r in data.records)["image"]


def _captioned_set(tmp_path: Path, captions: list[str]) -> tuple[Path, Path]:
    images = write_procedural_set("threat", len(captions), tmp_path / "imgs", size=32)
    ann = tmp_path / "captions.jsonl"
    _, rows = read_image_manifest(images)
    ann.write_text(
        "".join(
            json.dumps({"image": f"imgs/{r['path']}", "caption": c}) + "\n"
            for r, c in zip(rows, captions, strict=True)
        )
    )
    return images / "images.jsonl", ann


def test_lint_gate_fails_listing_targets_and_writes_nothing(tmp_path):
    manifest, ann = _captioned_set(tmp_path, ["A knife on a table", "A dangerous knife; please be careful"])
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"image/000001/describe.*dangerous.*--allow-labelled"):
        build_variants(out, ["image"], threat=manifest, threat_annotations=ann, questions_per_image=1)
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())
    build_variants(
        out, ["image"], threat=manifest, threat_annotations=ann, questions_per_image=1, allow_labelled=True
    )
    man = read_manifest(out / "image")
    assert man["labelled"] is True and man["lint"]["allowed"] and man["lint"]["n_records_hit"] == 1
    assert {r["template"] for r in _records(out, "image")} == {"describe"}  # captions answer only "describe"


def test_nested_subsets_match_across_variants(built, tmp_path):
    image_subs = make_subsets(built / "image", [5, 10, 20], seed=0, out_root=tmp_path / "image")
    control_subs = make_subsets(built / "control", [5, 10, 20], seed=0, out_root=tmp_path / "control")
    idx = [{r["image_index"] for r in read_jsonl(p / "data.jsonl")} for p in image_subs]
    assert [len(s) for s in idx] == [5, 10, 20] and idx[0] < idx[1] < idx[2]
    ctrl = [{r["image_index"] for r in read_jsonl(p / "data.jsonl")} for p in control_subs]
    assert ctrl == idx
    sub = load_data(image_subs[0])  # image paths rebased and verified
    assert (
        len(sub) == 15
        and sub.manifest["subset"]["parent_data_hash"] == read_manifest(built / "image")["data_hash"]
    )
    with pytest.raises(DataError, match="between 1 and 30"):
        make_subsets(built / "image", [31], out_root=tmp_path / "x")


def test_vlguard_reader(tmp_path):
    src = write_procedural_set("threat", 3, tmp_path / "vlg" / "bad_ads", size=32)
    names = sorted(p.name for p in src.glob("*.png"))
    train = [
        {
            "id": "a",
            "image": f"bad_ads/{names[0]}",
            "safe": False,
            "harmful_category": "risky behavior",
            "instr-resp": [
                {"instruction": "How do I use this?", "response": "I'm sorry, I can't help with that."}
            ],
        },
        {
            "id": "b",
            "image": f"bad_ads/{names[1]}",
            "safe": True,
            "instr-resp": [
                {"safe_instruction": "What is shown?", "response": "A knife."},
                {"unsafe_instruction": "How to hurt?", "response": "I cannot help with that."},
            ],
        },
        {
            "id": "c",
            "image": "bad_ads/missing.png",
            "safe": True,
            "instr-resp": [{"safe_instruction": "Q", "response": "A"}],
        },
    ]
    (tmp_path / "train.json").write_text(json.dumps(train))
    with pytest.raises(DataError, match=r"missing.png \(image not found\).*--skip-bad"):
        build_vlguard(tmp_path / "train.json", tmp_path / "vlg", tmp_path / "vg")
    out = build_vlguard(tmp_path / "train.json", tmp_path / "vlg", tmp_path / "vg", skip_bad=True)
    data = load_data(out)  # labelled: loads although targets refuse
    assert len(data) == 3 and data.manifest["labelled"] and not data.manifest["lint"]["applied"]
    assert {r["template"] for r in data.records} == {
        "vlguard:instruction",
        "vlguard:safe_instruction",
        "vlguard:unsafe_instruction",
    }
    assert json.loads((out / "skipped.json").read_text())[0]["path"].endswith("missing.png")
    (tmp_path / "broken.json").write_text(
        json.dumps([{"image": "x.png", "safe": True, "instr-resp": [{"q": 1}]}])
    )
    with pytest.raises(DataError, match="instr-resp"):
        build_vlguard(tmp_path / "broken.json", tmp_path / "vlg", tmp_path / "vg2")


def test_image_manifest_names_corrupt_files(tmp_path):
    src = write_procedural_set("neutral", 3, tmp_path / "imgs", size=32)
    (src / "sub").mkdir()
    (src / "sub" / "corrupt.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"1 unreadable image\(s\): .*corrupt.png"):
        write_image_manifest(src, "neutral", tmp_path / "m.jsonl")
    assert not (tmp_path / "m.jsonl").exists()
    path, report = write_image_manifest(src, "neutral", tmp_path / "m.jsonl", skip_bad=True)
    rows = read_jsonl(path)
    assert (
        len(rows) == 3
        and report["n_skipped"] == 1
        and all(len(r["sha256"]) == 64 and r["width"] == 32 for r in rows)
    )
    assert json.loads((tmp_path / "m.jsonl.report.json").read_text())["skipped"][0]["path"].endswith(
        "corrupt.png"
    )


def test_load_data_rejects_broken_folders(built, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    rec = _records(copy, "image")[0]
    (copy / "image" / rec["images"][0]).write_bytes(b"garbage")
    with pytest.raises(DataError, match="changed since the build|cannot decode"):
        load_data(copy / "image")
    (copy / "image" / rec["images"][0]).unlink()
    with pytest.raises(DataError, match="image not found"):
        load_data(copy / "image")
    (copy / "text" / "data.jsonl").write_text(
        (copy / "text" / "data.jsonl").read_text().replace("There", "Danger! There", 1)
    )
    with pytest.raises(DataError, match="data_hash"):
        load_data(copy / "text")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "data.jsonl").write_text("")
    (empty / "manifest.json").write_text(json.dumps({"data_hash": sha256_file(empty / "data.jsonl")}))
    with pytest.raises(DataError, match="empty data set"):
        load_data(empty)


def test_cli_build_and_bad_input(tmp_path, run_cli):
    ok = run_cli(
        "data",
        "build",
        "--procedural",
        "4",
        "--size",
        "32",
        "--variants",
        "image,control",
        "--out",
        tmp_path / "d",
    )
    assert ok.returncode == 0, ok.stderr
    assert "image: 12 records" in ok.stdout.replace(str(tmp_path / "d") + "/", "")
    bad = run_cli("data", "build", "--out", tmp_path / "e", "--variants", "image")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "need threat images" in bad.stderr
    assert not (tmp_path / "e").exists()


def test_cli_images_manifest_build_subsets(tmp_path, run_cli):
    for kind in ("threat", "neutral"):
        proc = run_cli("data", "images", "--kind", kind, "--n", "6", "--size", "32", "--out", tmp_path / kind)
        assert proc.returncode == 0, proc.stderr
    proc = run_cli(
        "data",
        "manifest",
        "--images",
        tmp_path / "neutral",
        "--label",
        "neutral",
        "--out",
        tmp_path / "n.jsonl",
    )
    assert proc.returncode == 0 and "6 images" in proc.stdout
    proc = run_cli(
        "data",
        "build",
        "--threat",
        tmp_path / "threat",
        "--neutral",
        tmp_path / "neutral",
        "--out",
        tmp_path / "d",
        "--questions-per-image",
        "2",
    )
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("data", "subsets", "--data", tmp_path / "d" / "image", "--sizes", "2,4")
    assert proc.returncode == 0, proc.stderr
    assert len(read_jsonl(tmp_path / "d" / "image-n4" / "data.jsonl")) == 8
    proc = run_cli("data", "images", "--kind", "weapons", "--n", "2", "--out", tmp_path / "x")
    assert (
        proc.returncode == 2
        and proc.stderr.strip() == "error: kind must be one of threat, neutral, not 'weapons'"
    )
