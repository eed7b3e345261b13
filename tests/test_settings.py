"""Settings declared once on dataclass fields: read from a config by name, checked, converted, one-line errors."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from worldssl.runtime.errors import ConfigError
from worldssl.runtime.settings import (
    Settings,
    between,
    describe,
    list_of,
    one_of,
    optional,
    positive,
    positive_int,
    setting,
    settings_from,
)
from worldssl.ssl.train import PretrainSettings
from worldssl.verbs.compare import CompareSettings
from worldssl.verbs.worldmodel import WorldModelRunSettings
from worldssl.worldmodels.train import WorldModelSettings


@dataclasses.dataclass
class Demo(Settings):
    steps: int = setting(10, positive_int, "optimiser steps")
    lr: float = setting(1e-3, positive, "learning rate")
    mode: str = setting("a", one_of("a", "b"), "the mode")
    clip: float | None = setting(None, optional(positive), "gradient clip; null: none")
    horizons: tuple[int, ...] = setting((1, 2), list_of(positive_int), "prediction steps")
    share: float = setting(0.5, between(0, 1), "held-out share")
    free: object = setting(None, None, "anything")


def test_settings_from_reads_fields_by_name_and_converts():
    cfg = OmegaConf.create({"steps": 3, "lr": 1, "horizons": [1, 5], "unrelated": "x", "clip": 2})
    s = settings_from(Demo, cfg)
    assert (s.steps, s.lr, s.horizons, s.clip, s.mode) == (3, 1.0, (1, 5), 2.0, "a")
    assert isinstance(s.lr, float) and isinstance(s.horizons, tuple)
    assert settings_from(Demo, cfg, steps=7).steps == 7


@pytest.mark.parametrize("key, value, message", [
    ("steps", 0, "steps must be a positive integer, got 0 (optimiser steps)"),
    ("steps", True, "steps must be a positive integer, got True"),
    ("steps", 1.5, "steps must be a positive integer, got 1.5"),
    ("lr", -1.0, "lr must be > 0, got -1.0 (learning rate)"),
    ("mode", "c", "mode must be one of a, b, got 'c' (the mode)"),
    ("clip", 0, "clip must be > 0 or null, got 0"),
    ("horizons", [], "horizons must be a non-empty list of positive integers, got []"),
    ("horizons", [1, 0], "horizons must be a non-empty list of positive integers, got [1, 0]"),
    ("share", 1.0, "share must be in (0, 1), got 1.0"),
])
def test_a_bad_value_is_one_line_naming_key_value_and_what_is_valid(key, value, message):
    with pytest.raises(ConfigError) as info:
        settings_from(Demo, OmegaConf.create({key: value}))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=f"^{key} must be"):
        dataclasses.replace(Demo(), **{key: value}).check()


def test_describe_lists_every_field_with_its_doc():
    rows = {name: (default, valid, doc) for name, default, valid, doc in describe(Demo)}
    assert rows["steps"] == (10, "a positive integer", "optimiser steps")
    assert rows["free"] == (None, "", "anything")


@pytest.mark.parametrize("cls", [PretrainSettings, WorldModelSettings, WorldModelRunSettings, CompareSettings])
def test_every_library_setting_is_documented_and_its_default_is_valid(cls):
    for f in dataclasses.fields(cls):
        assert f.metadata.get("doc"), f"{cls.__name__}.{f.name} has no doc"
    cls().check()


def test_verb_settings_extend_the_loop_settings():
    assert issubclass(CompareSettings, WorldModelRunSettings) and issubclass(WorldModelRunSettings, WorldModelSettings)
    cfg = OmegaConf.create({"epochs": 3, "load": "mmap", "seeds": [0, 1], "objectives": ["contrastive"],
                            "eval_steps": [1, 5]})
    s = settings_from(CompareSettings, cfg)
    assert (s.epochs, s.load, s.seeds, s.eval_steps, s.window) == (3, "mmap", (0, 1), (1, 5), None)
    with pytest.raises(ConfigError, match="seeds must be a non-empty list of distinct integers, got \\[0, 0\\]"):
        settings_from(CompareSettings, OmegaConf.create({"seeds": [0, 0]}))
