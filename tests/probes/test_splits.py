"""Selection / evaluation splits of a request set (:mod:`probes.splits`)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from probes.splits import EVALUATION, SELECTION, SetSplit, split_rows, split_set, write_split
from vsfa.errors import ConfigError, DataError, VsfaError
from vsfa.io import read_jsonl

N_PAIRS = 20


def _rows(n_pairs: int = N_PAIRS, split: dict[int, str] | None = None) -> list[dict]:
    """Matched harmful / harmless requests, one pair per index; ``split``: pair index -> the rows' own split."""
    rows = []
    for i in range(n_pairs):
        for label, kind in (("harmful", "h"), ("harmless", "b")):
            row = {"id": f"{kind}-{i:03d}", "label": label, "pair": f"pair-{i:03d}", "text": f"{label} {i}"}
            if split is not None:
                row["split"] = split[i]
            rows.append(row)
    return rows


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _pairs(rows: list[dict], ids: tuple[str, ...]) -> set[str]:
    keep = set(ids)
    return {r["pair"] for r in rows if r["id"] in keep}


# ---------------------------------------------------------------------------------------------- hash split
def test_split_is_deterministic_by_seed_and_independent_of_row_order():
    rows = _rows()
    a, b = split_rows(rows, seed=0), split_rows(rows, seed=0)
    assert a == b and a.made == "hash" and a.seed == 0 and a.key == "pair"
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    c = split_rows(shuffled, seed=0)
    assert set(c.selection) == set(a.selection) and set(c.evaluation) == set(a.evaluation)
    others = {frozenset(split_rows(rows, seed=s).evaluation) for s in range(1, 6)}
    assert frozenset(a.evaluation) not in others  # another seed, another split
    assert len(others) > 1


def test_split_is_grouped_complete_and_sized_by_fraction():
    rows = _rows()
    for fraction, n_eval_pairs in ((0.5, 10), (0.25, 5), (0.8, 16)):
        s = split_rows(rows, seed=3, fraction=fraction)
        assert not set(s.selection) & set(s.evaluation)
        assert sorted(s.selection + s.evaluation) == sorted(r["id"] for r in rows)
        sel_pairs, eval_pairs = _pairs(rows, s.selection), _pairs(rows, s.evaluation)
        assert not sel_pairs & eval_pairs  # a pair never straddles the split
        assert len(eval_pairs) == n_eval_pairs and len(s.evaluation) == 2 * n_eval_pairs
        for i in s.evaluation:
            assert s.part_of(i) == EVALUATION
        for i in s.selection:
            assert s.part_of(i) == SELECTION
    # ids keep the file's order within each part
    order = [r["id"] for r in rows]
    assert list(s.selection) == [i for i in order if i in set(s.selection)]


def test_split_groups_by_the_given_key_and_falls_back_to_the_id():
    rows = _rows()
    for r in rows:
        r["topic"] = f"t{int(r['id'][2:]) % 4}"
    s = split_rows(rows, key="topic", seed=0)
    topic = {r["id"]: r["topic"] for r in rows}
    assert not {topic[i] for i in s.selection} & {topic[i] for i in s.evaluation}
    assert s.key == "topic"
    bare = [{k: v for k, v in r.items() if k != "pair"} for r in rows]  # no pair: every row is its own group
    s = split_rows(bare, seed=0)
    assert len(s.evaluation) == len(rows) // 2  # 40 groups, half of them
    assert _pairs(rows, s.selection) & _pairs(
        rows, s.evaluation
    )  # pairs do straddle now: nothing groups them


def test_set_split_record(tmp_path):
    path = _write(tmp_path / "mine.jsonl", _rows())
    s = split_set(path, seed=2, fraction=0.25)
    assert (s.set, s.source, s.made, s.seed, s.fraction) == ("mine", str(path), "hash", 2, 0.25)
    d = s.as_dict()
    assert d["n"] == {SELECTION: 30, EVALUATION: 10}
    assert d["selection"] == list(s.selection) and d["evaluation"] == list(s.evaluation)
    json.dumps(d)  # manifest-ready
    with pytest.raises(DataError, match="mine.jsonl.*'nope'"):
        s.part_of("nope")


def test_shipped_request_set_splits_by_pair():
    s = split_set("requests")
    assert s.set == "requests" and s.made == "hash"
    rows = read_jsonl(s.source)
    assert not _pairs(rows, s.selection) & _pairs(rows, s.evaluation)
    assert len(s.selection) + len(s.evaluation) == len(rows)


# ---------------------------------------------------------------------------------------------- file split
@pytest.mark.parametrize("names", [("extract", "heldout"), ("selection", "evaluation")])
def test_a_files_own_split_column_is_kept(tmp_path, names):
    own = {i: names[1] if i % 3 == 0 else names[0] for i in range(N_PAIRS)}
    rows = _rows(split=own)
    path = _write(tmp_path / "own.jsonl", rows)
    for seed in (0, 1, 9):  # the seed and fraction do not matter: the file decides
        s = split_set(path, seed=seed, fraction=0.9)
        assert s.made == "file"
        assert s.evaluation == tuple(r["id"] for r in rows if r["split"] == names[1])
        assert s.selection == tuple(r["id"] for r in rows if r["split"] == names[0])


# ---------------------------------------------------------------------------------------------------- errors
def test_too_few_groups_is_an_error_naming_the_file(tmp_path):
    one = [{"id": "a", "label": "harmful", "pair": "p"}, {"id": "b", "label": "harmless", "pair": "p"}]
    path = _write(tmp_path / "onepair.jsonl", one)
    with pytest.raises(DataError, match=r"onepair\.jsonl.*1 group"):
        split_set(path)
    with pytest.raises(DataError, match=r"single\.jsonl.*1 group"):
        split_set(_write(tmp_path / "single.jsonl", one[:1]))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_fraction_outside_the_open_interval_is_a_config_error(tmp_path, fraction):
    path = _write(tmp_path / "frac.jsonl", _rows())
    with pytest.raises(ConfigError, match="fraction"):
        split_set(path, fraction=fraction)


def test_a_group_straddling_the_files_split_is_an_error_naming_file_and_group(tmp_path):
    rows = _rows(split={i: "heldout" if i % 2 else "extract" for i in range(N_PAIRS)})
    assert rows[4]["pair"] == rows[5]["pair"] == "pair-002" and rows[5]["split"] == "extract"
    rows[4]["split"] = "heldout"  # one member of pair-002 held out, the other not
    path = _write(tmp_path / "straddle.jsonl", rows)
    with pytest.raises(DataError, match=r"straddle\.jsonl.*'pair-002'.*straddles"):
        split_set(path)


def test_missing_or_empty_request_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="absent.jsonl"):
        split_set(tmp_path / "absent.jsonl")
    with pytest.raises(DataError, match=r"empty\.jsonl.*no requests"):
        split_set(_write(tmp_path / "empty.jsonl", []))
    with pytest.raises(DataError, match=r"noid\.jsonl:2.*'id'"):
        split_set(_write(tmp_path / "noid.jsonl", [{"id": "a"}, {"label": "harmful"}]))
    assert issubclass(DataError, VsfaError) and issubclass(ConfigError, VsfaError)


# ---------------------------------------------------------------------------------------------- write_split
def test_write_split_one_file_per_part_with_absolute_images(tmp_path):
    src_dir = tmp_path / "data"
    (src_dir / "img").mkdir(parents=True)
    rows = _rows(8)
    absolute = str(tmp_path / "elsewhere" / "abs.png")
    for i, r in enumerate(rows):
        if i % 2 == 0:
            r["image"] = f"img/{r['id']}.png"
        else:
            r["images"] = [f"img/{r['id']}-a.png", absolute]
        r["category"] = "c"
    rows[1]["image"] = absolute
    src = _write(src_dir / "reqs.jsonl", rows)
    split = split_set(src, seed=1)
    files = write_split(split, tmp_path / "out")
    assert files == {
        SELECTION: tmp_path / "out" / "reqs.selection.jsonl",
        EVALUATION: tmp_path / "out" / "reqs.evaluation.jsonl",
    }
    by_id = {r["id"]: r for r in rows}
    for part, written_split in ((SELECTION, "extract"), (EVALUATION, "heldout")):
        written = read_jsonl(files[part])
        assert [r["id"] for r in written] == list(getattr(split, part))
        for w in written:
            orig = by_id[w["id"]]
            assert w["split"] == written_split
            assert {k: v for k, v in w.items() if k not in ("split", "image", "images")} == {
                k: v for k, v in orig.items() if k not in ("image", "images")
            }
            if "image" in orig:
                want = (
                    orig["image"] if orig["image"] == absolute else str((src_dir / orig["image"]).resolve())
                )
                assert w["image"] == want and Path(w["image"]).is_absolute()
            if "images" in orig:
                assert w["images"] == [str((src_dir / orig["images"][0]).resolve()), absolute]
    # the written files carry the split: read together again, the file's own split reproduces it
    both = read_jsonl(files[SELECTION]) + read_jsonl(files[EVALUATION])
    again = split_set(_write(tmp_path / "both.jsonl", both), seed=99)
    assert again.made == "file"
    assert set(again.selection) == set(split.selection) and set(again.evaluation) == set(split.evaluation)


def test_write_split_source_is_read_from_the_split_record(tmp_path):
    src = _write(tmp_path / "r.jsonl", _rows(4))
    split = SetSplit("named", str(src), "pair", 0, 0.5, "hash", ("h-000", "b-000"), ("h-001",))
    files = write_split(split, tmp_path / "o")
    assert [r["id"] for r in read_jsonl(files[SELECTION])] == ["h-000", "b-000"]
    assert [r["id"] for r in read_jsonl(files[EVALUATION])] == ["h-001"]
    assert files[SELECTION].name == "named.selection.jsonl"


@pytest.mark.parametrize("spoil", ["missing", "unknown"])
def test_a_partial_split_column_never_moves_heldout_rows_into_selection(spoil):
    rows = _rows(split={i: "heldout" if i % 2 else "extract" for i in range(N_PAIRS)})
    if spoil == "missing":
        del rows[0]["split"]
    else:
        rows[0]["split"] = rows[1]["split"] = "test"
    with pytest.raises(DataError, match=r"partial\.jsonl:\d+: split"):  # never a silent hash split
        split_rows(rows, seed=0, source="partial.jsonl")
