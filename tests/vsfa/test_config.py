"""vsfa.config: the one KEY=VALUE parser, the one dotted-key helper, TOML reading and writing."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from vsfa.config import (
    from_dict,
    load_toml,
    merge,
    nest,
    parse_assignment,
    parse_assignments,
    parse_value,
    set_dotted,
    to_dict,
    to_toml,
)
from vsfa.errors import ConfigError


@pytest.mark.parametrize(
    "raw, value",
    [
        ("8", 8),
        ("1e-4", 1e-4),
        ("true", True),
        ("[1, 2]", [1, 2]),
        ("'x y'", "x y"),
        ('"a=b"', "a=b"),
        ("runs/x", "runs/x"),  # not TOML: the bare word
        ("SD,TYPO", "SD,TYPO"),
        (" 3 ", 3),
    ],
)
def test_values_are_toml_else_bare_strings(raw, value):
    assert parse_value(raw) == value and type(parse_value(raw)) is type(value)


def test_assignments():
    assert parse_assignment("train.lr=1e-4") == ("train.lr", 1e-4)
    assert parse_assignment("expr=a=b") == ("expr", "a=b")  # the first '=' splits
    assert parse_assignments(["a=1", "b.c='x'", "a=2"]) == {"a": 2, "b.c": "x"}
    for bad in ("lr", "=3", " =3"):
        with pytest.raises(ConfigError, match=r"--set .*expected KEY=VALUE"):
            parse_assignment(bad)
    with pytest.raises(ConfigError, match=r"--world-set 'x': expected KEY=VALUE"):
        parse_assignment("x", "--world-set")


def test_dotted_keys_nest_and_merge():
    data = {"a": {"b": 1}}
    set_dotted(data, "a.c.d", 2)
    set_dotted(data, "e", 3)
    assert data == {"a": {"b": 1, "c": {"d": 2}}, "e": 3}
    with pytest.raises(ConfigError, match=r"world: 'a.b.x': 'b' is not a table"):
        set_dotted(data, "a.b.x", 1, "world")
    assert nest({"a.b": 1, "a.c": 2, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}
    assert merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}, "d": 1}


def test_to_toml_round_trips_awkward_strings_and_drops_none_in_tables():
    data = {
        "name": 'line one\nline "two"\ttab \x01 ctrl \\ back',
        "path": Path("runs/x"),
        "unset": None,
        "nums": [1, 2.5],
        "section": {"flag": True, "words": ["a\nb", "c"], "gone": None, "deeper": {"x": 1}},
    }
    back = tomllib.loads(to_toml(data))
    assert back == {
        "name": data["name"],
        "path": "runs/x",
        "nums": [1, 2.5],
        "section": {"flag": True, "words": ["a\nb", "c"], "deeper": {"x": 1}},
    }


def test_to_toml_refuses_none_inside_a_list():
    with pytest.raises(ConfigError, match=r"section.openers: TOML cannot hold None inside a list"):
        to_toml({"section": {"openers": ["a.txt", None]}})


def test_train_config_round_trips_through_toml(tmp_path):
    from vsfa.training.config import TrainConfig, config_from_dict

    cfg = config_from_dict(
        {
            "out": "runs/x",
            "model": {"base": "m"},
            "data": {"path": "d\nnewline"},
            "checkpoints": {"steps": [3]},
        }
    )
    path = tmp_path / "config.toml"
    path.write_text(to_toml(to_dict(cfg)))
    assert load_toml(TrainConfig, path) == cfg
    assert load_toml(TrainConfig, path, {"train.lr": 1e-3, "lora.r": 4}).train.lr == 1e-3
    with pytest.raises(ConfigError, match=r"config.toml.train: unknown key 'lrr'"):
        load_toml(TrainConfig, path, {"train.lrr": 1})


def test_from_dict_paths_and_types():
    from vsfa.eval.metrics import TableConfig

    cfg = from_dict(TableConfig, {"eval_dir": "runs/e", "out": "t.csv"})
    assert cfg.eval_dir == Path("runs/e") and cfg.out == Path("t.csv")
    with pytest.raises(ConfigError, match=r"config.eval_dir: expected a path, got int"):
        from_dict(TableConfig, {"eval_dir": 3})
