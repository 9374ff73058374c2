"""Typed configs from params sections, overrides and their error messages."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from components.config import from_dict, load_section, parse_overrides
from components.errors import ConfigError


@dataclass
class Demo:
    rank: int = 4
    lr: float = 1e-4
    name: str = "tiny"
    flag: bool = False
    classes: list[str] = field(default_factory=lambda: ["a", "b"])
    path: str | None = None


def test_from_dict_coerces_types():
    cfg = from_dict(Demo, {"rank": "8", "lr": "0.5", "flag": "true", "classes": "x, y", "path": None})
    assert (cfg.rank, cfg.lr, cfg.flag, cfg.classes, cfg.path) == (8, 0.5, True, ["x", "y"], None)
    assert from_dict(Demo, {"rank": 8.0}).rank == 8  # MLflow passes floats for integer params


def test_unknown_key_names_the_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['rnak'\].*'rank'"):
        from_dict(Demo, {"rnak": 2}, where="params.yaml:finetune")


@pytest.mark.parametrize("values, msg", [({"rank": 2.5}, "expected an integer"), ({"flag": "maybe"}, "true/false"),
                                         ({"lr": "fast"}, "expected a number")])
def test_bad_values_are_rejected(values, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(Demo, values)


def test_overrides_accept_dvc_style_keys():
    assert parse_overrides(["finetune.rank=8", "name=sd2", "classes=[a, c]"]) == {
        "rank": 8, "name": "sd2", "classes": ["a", "c"]}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["rank"])


def test_load_section_applies_overrides(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("demo:\n  rank: 2\n  name: tiny\n")
    cfg = load_section(Demo, "demo", p, ["rank=8"])
    assert (cfg.rank, cfg.name) == (8, "tiny")
    with pytest.raises(ConfigError, match="section 'other' is missing"):
        load_section(Demo, "other", p)
    with pytest.raises(ConfigError, match="params file not found"):
        load_section(Demo, "demo", tmp_path / "nope.yaml")
