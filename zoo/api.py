"""The Python entry points: build anything registered from a name, a dict or a spec."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.config import Config, find_registry_file, load_config
from zoo.errors import ProtocolError, ZooError
from zoo.specs import ModelSpec, SamplerSpec, Spec, TrainerSpec

if TYPE_CHECKING:
    from torch import nn

Ref = str | Mapping[str, Any] | Spec


def default_config() -> Config:
    """The registry of this process: ./registry.toml (or $ZOO_REGISTRY) plus installed plugins.

    Cached per file and modification time, so repeated calls are cheap and edits are seen.
    """
    file = find_registry_file()
    stamp = file.stat().st_mtime_ns if file is not None and file.exists() else None
    switches = (os.environ.get("ZOO_DISABLE_PLUGINS", ""), os.environ.get("ZOO_ENABLE_PLUGINS", ""))
    return _cached_config(str(file.resolve()) if file else None, stamp, switches)


@functools.lru_cache(maxsize=4)
def _cached_config(path: str | None, stamp: int | None, switches: tuple[str, str]) -> Config:
    return load_config(Path(path) if path else None)


def model_spec(ref: Ref, *, config: Config | None = None) -> ModelSpec:
    spec = (config or default_config()).spec("models", ref)
    assert isinstance(spec, ModelSpec)
    return spec


def build_model(ref: Ref, *, config: Config | None = None) -> nn.Module:
    """Build a registered model on the CPU in fp32: ``build_model("minigpt-tiny")`` or a dict."""
    spec = model_spec(ref, config=config)
    return attach(spec.build(), spec)


def build_trainer(ref: Ref, *, model: Ref | nn.Module | None = None, config: Config | None = None) -> Any:
    """Build a trainer; given a model (or model spec), check that it speaks the trainer's protocol."""
    spec = (config or default_config()).spec("trainers", ref)
    assert isinstance(spec, TrainerSpec)
    if model is not None:
        check_protocol(spec, model, config=config)
    return spec.build()


def build_sampler(ref: Ref, *, model: Ref | nn.Module | None = None, config: Config | None = None) -> Any:
    spec = (config or default_config()).spec("samplers", ref)
    assert isinstance(spec, SamplerSpec)
    if model is not None:
        check_protocol(spec, model, config=config)
    return spec.build()


def check_protocol(user: TrainerSpec | SamplerSpec, model: Any, *, config: Config | None = None) -> None:
    """A trainer or sampler meant for one model protocol refuses a model of another."""
    mspec = getattr(model, "zoo_spec", None)
    if mspec is None:
        mspec = model_spec(model, config=config) if isinstance(model, (str, Mapping, Spec)) else None
    if mspec is None:
        return
    if mspec.protocol != user.protocol:
        raise ProtocolError(
            f"{user.kind[:-1]} type {user.type!r} works on {user.protocol} models, but model type "
            f"{mspec.type!r} is a {mspec.protocol} model"
        )
    wanted = getattr(user, "input_kind", mspec.input_kind)
    if mspec.protocol == "classifier" and mspec.input_kind != wanted:
        raise ProtocolError(
            f"{user.kind[:-1]} type {user.type!r} trains classifiers of {wanted}, but model type "
            f"{mspec.type!r} takes {mspec.input_kind}"
        )


def attach(model: nn.Module, spec: ModelSpec, *, tokenizer: Any = None) -> nn.Module:
    """Remember on the module which spec built it (and its tokenizer), for saving and checks."""
    # nn.Module.__setattr__ stores plain objects as attributes; setattr keeps mypy out of it
    setattr(model, "zoo_spec", spec)  # noqa: B010
    if tokenizer is not None:
        setattr(model, "zoo_tokenizer", tokenizer)  # noqa: B010
    return model


def spec_of(model: Any) -> ModelSpec:
    spec = getattr(model, "zoo_spec", None)
    if spec is None:
        raise ZooError("this model was not built by zoo; pass spec=... to zoo.save")
    assert isinstance(spec, ModelSpec)
    return spec


def parameter_estimate(spec: ModelSpec) -> dict[str, Any]:
    """Parameter count and memory, from a build on the meta device (no memory is allocated)."""
    import torch

    with torch.device("meta"):
        model = spec.build()
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "parameters": params,
        "trainable": trainable,
        "weights_fp32_mb": round(params * 4 / 2**20, 2),
        "weights_bf16_mb": round(params * 2 / 2**20, 2),
        # fp32 weights + grads + two AdamW moments
        "training_adamw_fp32_mb": round(trainable * 16 / 2**20 + (params - trainable) * 4 / 2**20, 2),
    }
