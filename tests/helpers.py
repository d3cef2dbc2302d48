"""Helpers shared by tests (importable because pytest puts tests/ on the path)."""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from pathlib import Path

# `make test-slow` sets ZOO_THOROUGH=1: the slow tests run, and the fuzzers their full number of cases
THOROUGH = os.environ.get("ZOO_THOROUGH") == "1"


def examples(quick: int, thorough: int) -> int:
    """A fuzzer's number of cases: ``quick`` in `make test`, ``thorough`` in `make test-slow`."""
    return thorough if THOROUGH else quick


def make_module(name: str, **attrs: object) -> types.ModuleType:
    """An inline plugin module."""
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


GOOD = '''
from typing import Literal
import zoo

class Spec(zoo.ModelSpec):
    """A fake model."""
    type: Literal["{type}"] = "{type}"
    in_features: int = zoo.Field(4, gt=0, description="inputs")

    def build(self):
        import torch
        return torch.nn.Linear(self.in_features, 2)

@zoo.hookimpl
def zoo_register_models(register):
    register(Spec)
'''
HOOK = "import zoo\n\n@zoo.hookimpl\ndef zoo_register_models(register):\n    {body}\n"
BROKEN = {
    "import": "raise ImportError('needs a package that is not installed')\n",
    "hook": HOOK.format(body="raise RuntimeError('hook exploded')"),
    "spec": HOOK.format(body="register(dict)"),
}


def fake_plugin_site(site, n: int = 50) -> dict[str, list[int]]:
    """Write n installed fake plugin distributions (dist-info + module) into ``site``.

    35 good ones, then 5 whose import fails, 4 whose hook raises, 3 registering an invalid spec
    class, and 3 registering a type that plugin 0 already has. Returns the indices per group.
    """
    groups = {
        "good": list(range(0, 35)),
        "import": list(range(35, 40)),
        "hook": list(range(40, 44)),
        "spec": list(range(44, 47)),
        "duplicate": list(range(47, n)),
    }
    site.mkdir(parents=True, exist_ok=True)
    for group, indices in groups.items():
        for i in indices:
            if group == "good":
                code = GOOD.replace("{type}", f"fake-{i}")
            elif group == "duplicate":
                code = GOOD.replace("{type}", "fake-0")
            else:
                code = BROKEN[group]
            (site / f"fakeplug_{i}.py").write_text(code)
            info = site / f"fakeplug_{i}-1.{i}.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakeplug-{i}\nVersion: 1.{i}\n")
            (info / "entry_points.txt").write_text(f"[zoo]\nfake = fakeplug_{i}\n")
    return groups


def crash_sampling_at(monkeypatch, task_cls: type, n: int) -> Callable[[], None]:
    """Make ``task_cls.sample`` raise KeyboardInterrupt on its ``n``-th call (a run killed
    mid-way); returns what puts the real ``sample`` back."""
    calls = {"n": 0}
    real = task_cls.sample

    def sample(self, generator, batch_size):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(self, generator, batch_size)

    monkeypatch.setattr(task_cls, "sample", sample)
    return lambda: monkeypatch.setattr(task_cls, "sample", real)


def tiny_llama(folder: Path, vocab: int = 256) -> None:
    """A 2-layer random Llama (grouped-query attention) saved as a local Hugging Face folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
