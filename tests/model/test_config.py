"""Configs by name or path, fields overridden by keyword: a dict merges into its section, anything unknown is an
error naming the fields there are."""

from __future__ import annotations

import pytest

from model import ConfigError, load_config


def test_an_override_merges_into_its_section_and_keeps_the_rest():
    tiny = load_config("tiny")
    tiled = load_config("tiny", inference={"tiles": 2}, seed=3)
    assert tiled.inference.tiles == 2 and tiled.seed == 3
    assert tiled.inference.bank_budget == tiny.inference.bank_budget  # the rest of the section is kept
    assert tiled.dino == tiny.dino and tiled.name == tiny.name


def test_nested_dicts_merge_too():
    config = load_config("tiny", clip={"arch": {"vision_cfg": {"layers": 2}}}, heads={"temperature": 0.1})
    assert config.clip.arch["vision_cfg"]["layers"] == 2
    assert config.clip.arch["vision_cfg"]["width"] == load_config("tiny").clip.arch["vision_cfg"]["width"]
    assert config.heads.temperature == 0.1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"inferences": {"tiles": 2}}, r"unknown config field\(s\) inferences: the fields are name, clip, dino, heads"),
        ({"inference": {"tile": 2}}, "unknown field"),
        ({"inference": {"bank_reduction": "median"}}, "bank_reduction must be 'coreset' or 'kmeans'"),
    ],
)
def test_unknown_fields_and_bad_values_are_config_errors(overrides, message):
    """A typo in an override must not be silently ignored (the config would keep its default)."""
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", **overrides)


def test_unknown_names_and_missing_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown config 'tinyy'"):
        load_config("tinyy")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.json")
