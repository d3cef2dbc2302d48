"""Every model preset in registry.toml builds (on the meta device: cheap even for GPT-2 size)."""

from __future__ import annotations

from pathlib import Path

import pytest

import zoo
from zoo.config import load_config

REGISTRY = load_config(Path(__file__).resolve().parents[1] / "registry.toml", env={})


# zoo-hf's pretrained presets name a hub repo: they build once fetched (plugins/zoo-hf/tests/test_hub.py)
OFFLINE = sorted(n for n, s in REGISTRY.presets["models"].items() if not str(getattr(s, "path", "")).startswith("hf:"))


@pytest.mark.parametrize("preset", OFFLINE)
def test_every_model_preset_builds_on_meta(preset, config):
    spec = config.presets["models"][preset]
    estimate = zoo.parameter_estimate(spec)
    assert estimate["parameters"] > 0
    if estimate["parameters"] < 5_000_000:  # the count on meta is the count of the real model
        assert estimate["parameters"] == sum(p.numel() for p in spec.build().parameters())


def test_the_pretrained_presets_name_hub_repos():
    hub = {n: s.path for n, s in REGISTRY.presets["models"].items() if n not in OFFLINE}
    assert hub["smollm2-135m-instruct"] == "hf:HuggingFaceTB/SmolLM2-135M-Instruct" and len(hub) == 4


@pytest.mark.parametrize("kind", ["samplers", "trainers"])
def test_every_sampler_and_trainer_preset_builds(kind, config):
    protocol = {"samplers": zoo.Sampler, "trainers": zoo.Trainer}[kind]
    for name in config.presets[kind]:
        built = config.spec(kind, name).build()
        assert isinstance(built, protocol), f"{kind}.{name} built {type(built).__name__}"


def test_a_plugins_preset_derives_with_base(make_config):
    from helpers import make_module

    import zoo.hookspecs

    @zoo.hookspecs.hookimpl
    def zoo_register_presets(register):
        register("trainers", "lm-long", {"base": "lm", "max_steps": 5000, "schedule": {"warmup_steps": 7}})
        register("trainers", "lm-longer", {"base": "lm-long", "lr": 0.5})
        register("trainers", "loop-a", {"base": "loop-b"})
        register("trainers", "loop-b", {"base": "loop-a"})
        register("trainers", "orphan", {"base": "no-such-preset"})

    config = make_config({}, make_module("long_presets", zoo_register_presets=zoo_register_presets))
    lm, long, longer = (config.spec("trainers", n) for n in ("lm", "lm-long", "lm-longer"))
    assert long.max_steps == 5000 and long.batch_size == lm.batch_size and long.lr == lm.lr
    assert long.schedule == {**lm.schedule, "warmup_steps": 7}  # tables merge key by key
    assert longer.max_steps == 5000 and longer.lr == 0.5
    assert "(base lm from zoo" in config.origins[("trainers", "lm-long")]
    for name, why in (("loop-a", "derives from itself"), ("orphan", "'no-such-preset' is not a trainer preset")):
        assert (
            why in config.unavailable[("trainers", name)] and "long_presets" in config.unavailable[("trainers", name)]
        )
