"""The registry loop: every registered model passes the conformance checks."""

from __future__ import annotations

from pathlib import Path

import pytest

import zoo
import zoo.testing
from zoo.config import load_config

REGISTRY = load_config(Path(__file__).resolve().parents[1] / "registry.toml", env={})


@pytest.mark.parametrize("type_name", sorted(REGISTRY.registry.types("models")))
def test_every_registered_model(type_name, config):
    example = config.registry.entry("models", type_name).spec_cls.example()
    zoo.testing.check_model(example, config=config)


@pytest.mark.parametrize("preset", sorted(REGISTRY.presets["models"]))
def test_every_model_preset_builds_on_meta(preset, config):
    estimate = zoo.parameter_estimate(config.presets["models"][preset])
    assert estimate["parameters"] > 0
