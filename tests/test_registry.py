"""Plugin discovery, isolation, conflicts, disabling and provenance."""

from __future__ import annotations

import importlib.metadata as metadata
from typing import Literal

import pytest
from helpers import make_module

import zoo
from zoo.registry import Registry


class EchoSpec(zoo.ModelSpec):
    type: Literal["echo"] = "echo"
    width: int = zoo.Field(4, gt=0, description="width")

    def build(self) -> object:
        import torch

        return torch.nn.Linear(self.width, 2)


class EchoSpec2(EchoSpec):
    type: Literal["echo2"] = "echo2"  # type: ignore[assignment]


def models_plugin(name: str, *specs: type, dist: str | None = None):
    @zoo.hookimpl
    def zoo_register_models(register):
        for spec in specs:
            register(spec)

    module = make_module(name, zoo_register_models=zoo_register_models)
    module.DIST = dist or name
    return module


def test_builtin_plugins_register_through_entry_points(config):
    plugins = {p.distribution: p for p in config.registry.plugins.values()}
    assert plugins["zoo"].status == "loaded"
    assert ("trainers", "classifier") in plugins["zoo"].entries
    entry = config.registry.entry("models", "simplenet")
    assert (entry.distribution, entry.version) == ("zoo-simplenet", metadata.version("zoo-simplenet"))


def test_inline_plugin_registers_with_provenance(make_config):
    cfg = make_config({}, models_plugin("my_plugin", EchoSpec, dist="my-dist"), entry_points=False)
    entry = cfg.registry.entry("models", "echo")
    assert entry.distribution == "my-dist" and entry.version == "9.9"
    model = zoo.build_model({"type": "echo", "width": 3}, config=cfg)
    assert model.in_features == 3


def test_hook_that_raises_is_isolated(make_config):
    @zoo.hookimpl
    def zoo_register_models(register):
        register(EchoSpec)
        raise RuntimeError("boom")

    bad = make_module("bad_plugin", zoo_register_models=zoo_register_models)
    cfg = make_config({}, bad, models_plugin("good", EchoSpec2))
    info = cfg.registry.plugins["bad_plugin"]
    assert info.status == "failed" and "RuntimeError: boom" in info.reason
    assert "echo" not in cfg.registry.types("models")  # rolled back: nothing half-registered
    assert "echo2" in cfg.registry.types("models")
    assert "simplenet" in cfg.registry.types("models")


@pytest.mark.parametrize(
    ("cls", "reason"),
    [
        (dict, "must subclass zoo.ModelSpec"),
        (type("NoLiteral", (zoo.ModelSpec,), {"__annotations__": {"type": str}, "type": "x"}), "Literal of one string"),
    ],
)
def test_invalid_spec_class_fails_only_its_plugin(make_config, cls, reason):
    cfg = make_config({}, models_plugin("broken", cls))
    info = cfg.registry.plugins["broken"]
    assert info.status == "failed"
    assert reason in info.reason
    assert "simplenet" in cfg.registry.types("models")


def test_unknown_hook_name_is_reported_with_suggestion(make_config):
    @zoo.hookimpl
    def zoo_register_model(register):  # typo: missing "s"
        register(EchoSpec)

    cfg = make_config({}, make_module("typo", zoo_register_model=zoo_register_model))
    assert "did you mean 'zoo_register_models'" in cfg.registry.plugins["typo"].reason


def test_import_failure_of_entry_point_is_reported(monkeypatch):
    real = metadata.entry_points

    def fake_entry_points(group):
        eps = list(real(group=group))
        broken = metadata.EntryPoint("broken", "no_such_module_zoo_test", "zoo")._for(eps[0].dist)
        return [*eps, broken]

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    registry = Registry(env={})
    failed = [p for p in registry.plugins.values() if p.status == "failed"]
    assert len(failed) == 1
    assert "ModuleNotFoundError" in failed[0].reason and "no_such_module_zoo_test" in failed[0].reason
    assert "simplenet" in registry.types("models")


def test_duplicate_type_from_two_distributions_names_both(make_config):
    a = models_plugin("plugin_a", EchoSpec, dist="dist-a")
    b = models_plugin("plugin_b", EchoSpec, dist="dist-b")
    cfg = make_config({}, a, b)
    with pytest.raises(zoo.PluginError, match=r"'echo' is registered by dist-a 9\.9 and dist-b 9\.9.*prefer"):
        cfg.spec("models", "echo")
    assert "echo" not in cfg.registry.types("models")
    assert len(cfg.registry.conflicts()) == 1


def test_prefer_picks_the_winner(make_config):
    a = models_plugin("plugin_a", EchoSpec, dist="dist-a")
    b = models_plugin("plugin_b", EchoSpec, dist="dist-b")
    cfg = make_config({"plugins": {"prefer": {"echo": "dist-b"}}}, a, b)
    assert cfg.registry.entry("models", "echo").distribution == "dist-b"
    assert cfg.registry.conflicts() == []


def test_disable_by_config_and_env(make_config):
    cfg = make_config({"plugins": {"disable": ["zoo-simplenet"]}})
    assert "simplenet" not in cfg.registry.types("models")
    status = {p.distribution: p.status for p in cfg.registry.plugins.values()}
    assert status["zoo-simplenet"] == "disabled" and status["zoo"] == "loaded"
    cfg = make_config({}, env={"ZOO_DISABLE_PLUGINS": "zoo_simplenet"})
    assert "simplenet" not in cfg.registry.types("models")
    cfg = make_config({"plugins": {"disable": ["zoo-simplenet"]}}, env={"ZOO_ENABLE_PLUGINS": "zoo-simplenet"})
    assert "simplenet" in cfg.registry.types("models")


def test_presets_of_a_disabled_plugin_stay_unavailable_not_fatal(make_config):
    raw = {
        "plugins": {"disable": ["zoo-simplenet"]},
        "models": {"net": {"type": "simplenet"}},
        "trainers": {"t": {"type": "classifier"}},
    }
    cfg = make_config(raw)
    assert "t" in cfg.presets["trainers"]
    with pytest.raises(zoo.SpecError, match=r"models\.net: type 'simplenet' is not available.*zoo-simplenet"):
        cfg.spec("models", "net")


def test_fresh_registries_do_not_share_state(make_config):
    make_config({}, models_plugin("only_here", EchoSpec))
    assert "echo" not in make_config({}).registry.types("models")


def test_disable_lists_add_up_across_registry_layers():
    """A user file disables one distribution and the project file another: both are off (a
    `[plugins] disable` of a higher layer adds to the ones below, it does not replace them)."""
    from zoo.config import Layer, config_from_layers

    low = Layer("user.toml", {"plugins": {"disable": ["zoo-simplenet"]}})
    high = Layer("registry.toml", {"plugins": {"disable": ["zoo-example"]}})
    cfg = config_from_layers([low, high], env={})
    status = {p.distribution: p.status for p in cfg.registry.plugins.values()}
    assert status["zoo-simplenet"] == status["zoo-example"] == "disabled" and status["zoo-minigpt"] == "loaded"
