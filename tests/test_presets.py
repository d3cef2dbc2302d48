"""Every model preset in registry.toml builds (on the meta device: cheap even for GPT-2 size)."""

from __future__ import annotations

from pathlib import Path

import pytest

import zoo
from zoo.config import load_config

REGISTRY = load_config(Path(__file__).resolve().parents[1] / "registry.toml", env={})


@pytest.mark.parametrize("preset", sorted(REGISTRY.presets["models"]))
def test_every_model_preset_builds_on_meta(preset, config):
    estimate = zoo.parameter_estimate(config.presets["models"][preset])
    assert estimate["parameters"] > 0


@pytest.mark.parametrize("kind", ["samplers", "trainers"])
def test_every_sampler_and_trainer_preset_builds(kind, config):
    for name in config.presets[kind]:
        assert config.spec(kind, name).build() is not None
