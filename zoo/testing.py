"""Conformance checks a plugin author runs against their own components.

    import zoo.testing

    def test_my_model():
        zoo.testing.check_model("my-type")

Each check raises ``AssertionError`` with a message saying what broke. zoo runs them over every
registered type in its own test suite.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo.config import Config
from zoo.specs import ModelSpec, Spec

Ref = str | Mapping[str, Any] | Spec


def _config(config: Config | None) -> Config:
    from zoo.api import default_config

    return config or default_config()


def example_batch(spec: ModelSpec, batch: int = 2, seq: int = 8) -> Any:
    """A small valid input for a model of this spec: features for classifiers, ids for LMs."""
    import torch

    g = torch.Generator().manual_seed(0)
    if spec.protocol == "classifier" and spec.input_kind == "features":
        in_features = getattr(spec, "in_features", None)
        if in_features is None:
            raise AssertionError(f"{spec.type}: classifier specs need an in_features field for conformance checks")
        return torch.randn(batch, in_features, generator=g)
    config = getattr(spec, "config", None) or {}
    vocab = int(getattr(spec, "vocab_size", None) or config.get("vocab_size", 256))
    ctx = int(getattr(spec, "max_seq_len", None) or seq)
    return torch.randint(0, vocab, (batch, min(seq, ctx)), generator=g)


def logits_of(model: Any, x: Any) -> Any:
    out = model(x)
    return out[0] if isinstance(out, tuple) else out


def check_model(ref: Ref, *, config: Config | None = None) -> None:
    """Build on CPU, forward, backward, one optimizer step, and a save/load round trip."""
    import torch

    from zoo.api import attach, model_spec
    from zoo.artifacts import load, save

    cfg = _config(config)
    spec = model_spec(ref, config=cfg)
    again = type(spec).model_validate_json(spec.model_dump_json())
    assert again == spec, f"{spec.type}: spec does not survive a JSON round trip"
    type(spec).model_json_schema()
    torch.manual_seed(0)
    model = attach(spec.build(), spec)
    assert isinstance(model, torch.nn.Module), f"{spec.type}: build() must return a torch.nn.Module"
    params = list(model.parameters())
    assert params, f"{spec.type}: model has no parameters"
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params), (
        f"{spec.type}: build() must return an fp32 model on the CPU (the runtime moves it)"
    )
    x = example_batch(spec)
    model.train()
    logits = logits_of(model, x)
    assert logits.shape[0] == x.shape[0], f"{spec.type}: batch dimension lost, got {tuple(logits.shape)}"
    assert torch.isfinite(logits).all(), f"{spec.type}: non-finite logits"
    loss = logits.float().logsumexp(-1).mean()
    loss.backward()
    grads = [p.grad for p in params if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{spec.type}: no gradient reached parameters"
    before = [p.detach().clone() for p in params]
    torch.optim.SGD(params, lr=0.1).step()
    assert any(not torch.equal(b, p) for b, p in zip(before, params, strict=True)), (
        f"{spec.type}: an optimizer step changed nothing"
    )
    model.eval()
    with torch.no_grad():
        expected = logits_of(model, x)
    with tempfile.TemporaryDirectory() as tmp:
        path = save(model, Path(tmp) / "artifact", config=cfg)
        loaded = load(path, config=cfg)
    with torch.no_grad():
        got = logits_of(loaded, x)
    assert torch.equal(got, expected), f"{spec.type}: save/load changed the outputs"
