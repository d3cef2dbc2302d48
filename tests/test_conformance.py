"""zoo's conformance suite over every installed plugin, and proof that it catches what it checks."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import torch
from helpers import make_module

import zoo
import zoo.testing
from zoo.config import load_config

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = load_config(ROOT / "registry.toml", env={})
DISTRIBUTIONS = sorted({p.distribution for p in REGISTRY.registry.plugins.values()})


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_every_installed_plugin_conforms(distribution, config):
    zoo.testing.check_plugin(distribution, config=config)


class Undocumented(zoo.ModelSpec):
    type: Literal["undocumented"] = "undocumented"
    width: int = 3

    def build(self):
        return torch.nn.Linear(self.width, 2)


class Float64Spec(zoo.ModelSpec):
    type: Literal["f64"] = "f64"
    in_features: int = zoo.Field(3, description="inputs")

    def build(self):
        return torch.nn.Linear(self.in_features, 2).double()


class LeakyCacheSpec(zoo.ModelSpec):
    """A causal LM whose cached decoding forgets the past (a broken cache)."""

    type: Literal["leaky"] = "leaky"
    protocol = "causal-lm"
    vocab_size: int = zoo.Field(16, description="vocabulary")
    max_seq_len: int = zoo.Field(32, description="context")

    def build(self):
        from zoo.lm.kv_cache import KVCache

        class Leaky(torch.nn.Module):
            vocab_size, max_seq_len = 16, 32

            def __init__(self):
                super().__init__()
                self.emb = torch.nn.Embedding(16, 8)
                self.head = torch.nn.Linear(8, 16)

            def new_cache(self, batch_size, max_len=None, dtype=None):
                return KVCache(1, batch_size, 1, 32, 8, device="cpu", dtype=torch.float32)

            def forward(self, ids, cache=None, attention_mask=None, position_ids=None):
                h = self.emb(ids).cumsum(1)  # depends on the whole prefix...
                if cache is not None:
                    cache.advance(ids.shape[1])  # ...but the cache keeps nothing
                return self.head(h), cache

        return Leaky()


def registry_with(*specs, kind="models"):
    hook = f"zoo_register_{kind}"

    @zoo.hookimpl
    def register_all(register):
        for spec in specs:
            register(spec)

    registry = zoo.Registry(entry_points=False, env={})
    registry.add_plugin(make_module("bad", **{hook: register_all}), name="bad")
    return zoo.Config(registry=registry)


def test_catches_an_undocumented_field():
    with pytest.raises(AssertionError, match=r"give Field\(description=...\) to width"):
        zoo.testing.check_spec_class(Undocumented)


def test_catches_a_model_not_built_in_fp32():
    with pytest.raises(AssertionError, match="must return an fp32 model on the CPU"):
        zoo.testing.check_model("f64", config=registry_with(Float64Spec))


def test_catches_a_broken_cache():
    with pytest.raises(AssertionError, match="decoded through the cache differ from a full forward"):
        zoo.testing.check_model("leaky", config=registry_with(LeakyCacheSpec), precisions=["fp32"])


def test_catches_a_nondeterministic_sampler():
    class RandomSpec(zoo.SamplerSpec):
        type: Literal["unseeded"] = "unseeded"

        def build(self):
            class Unseeded:
                needs_seen = False

                def select(self, logits, seen, generator):
                    return torch.randint(0, 40, (logits.shape[0],))  # ignores the generator

            return Unseeded()

    with pytest.raises(AssertionError, match="the same seed gave different tokens"):
        zoo.testing.check_sampler("unseeded", config=registry_with(RandomSpec, kind="samplers"))


def test_a_sampler_states_whether_it_needs_seen_tokens():
    class PartialSpec(zoo.SamplerSpec):
        type: Literal["partial"] = "partial"

        def build(self):
            class Partial:  # select() only: the decoding loop could not tell whether to track tokens
                def select(self, logits, seen, generator):
                    return logits.argmax(-1)

            return Partial()

    with pytest.raises(
        AssertionError, match=r"must return a zoo\.Sampler: select\(logits, seen, generators\) and needs_seen"
    ):
        zoo.testing.check_sampler("partial", config=registry_with(PartialSpec, kind="samplers"))


def test_catches_a_hook_module_that_imports_torch(tmp_path, monkeypatch):
    (tmp_path / "heavy_hooks.py").write_text("import torch\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(AssertionError, match=r"imports \['torch'\] at import time"):
        zoo.testing.check_hook_module("heavy_hooks")


def test_unknown_distribution_is_reported(config):
    with pytest.raises(AssertionError, match="no plugin from distribution 'zoo-nope' is installed"):
        zoo.testing.check_plugin("zoo-nope", config=config)


class NoShapeSpec(zoo.ModelSpec):
    """A classifier that does not say what its input looks like."""

    type: Literal["no-shape"] = "no-shape"
    width: int = zoo.Field(3, description="inputs")

    def build(self):
        return torch.nn.Linear(self.width, 2)


def test_a_classifier_spec_states_its_input():
    with pytest.raises(
        AssertionError, match=r"states input_shape, num_classes and input_fields\(\) \(zoo\.ClassifierSpec\)"
    ):
        zoo.testing.check_model("no-shape", config=registry_with(NoShapeSpec), precisions=["fp32"])


def test_catches_a_lossy_hf_mapping():
    """A model that claims zoo.HFExportable must get every tensor back from its own export."""
    import zoo_minigpt.model

    class Lossy(zoo_minigpt.model.MiniGPT):
        def hf_import(self, tensors):
            state = super().hf_import(tensors)
            state.pop("ln_f.bias")  # forgets one tensor
            return state

    model = Lossy(zoo.model_spec("minigpt-tiny"))
    zoo.testing.check_hf_mapping(zoo_minigpt.model.MiniGPT(model.spec))  # the real one round-trips
    with pytest.raises(AssertionError, match=r"hf_import\(hf_export\(\)\) misses \['ln_f\.bias'\]"):
        zoo.testing.check_hf_mapping(model)
