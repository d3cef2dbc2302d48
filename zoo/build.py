"""Build anything registered from a name, a dict or a spec: the functions `zoo.build_model`,
`zoo.build_sampler`, `zoo.build_trainer` and the protocol check every part of zoo shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from zoo.config import Config, default_config
from zoo.errors import ProtocolError
from zoo.specs import Kind, ModelSpec, SamplerSpec, Spec, TrainerSpec, validate
from zoo.tags import attach

if TYPE_CHECKING:
    from torch import nn

Ref = str | Mapping[str, Any] | Spec


def resolve(kind: Kind, ref: Ref, overrides: Mapping[str, Any], config: Config | None) -> Spec:
    """A validated spec from a name, dict or spec, with field ``overrides`` applied (validated too)."""
    cfg = config or default_config()
    spec = cfg.spec(kind, ref)
    if not overrides:
        return spec
    where = f"{kind}.{ref}" if isinstance(ref, str) else f"{kind}.{spec.type}"
    fields = {**spec.model_dump(exclude_unset=False), **overrides}
    new: Spec = validate(type(spec), fields, where)
    return new


def model_spec(ref: Ref, *, config: Config | None = None, **overrides: Any) -> ModelSpec:
    spec = resolve("models", ref, overrides, config)
    assert isinstance(spec, ModelSpec)
    return spec


def build_model(ref: Ref, *, config: Config | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model on the CPU in fp32, timm-style: ``build_model("minigpt-tiny")``,
    ``build_model("minigpt-small", dropout=0.1)`` (overrides are validated, errors name the
    field) or ``build_model({"type": "simplenet", ...})``."""
    spec = model_spec(ref, config=config, **overrides)
    return attach(spec.build(), spec)


def build_trainer(
    ref: Ref, *, model: Ref | nn.Module | None = None, config: Config | None = None, **overrides: Any
) -> Any:
    """Build a trainer; given a model (or model spec), check that it speaks the trainer's protocol."""
    spec = resolve("trainers", ref, overrides, config)
    assert isinstance(spec, TrainerSpec)
    if model is not None:
        check_protocol(spec, model, config=config)
    return spec.build()


def build_sampler(
    ref: Ref, *, model: Ref | nn.Module | None = None, config: Config | None = None, **overrides: Any
) -> Any:
    spec = resolve("samplers", ref, overrides, config)
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
    wanted = user.input_kinds if isinstance(user, TrainerSpec) else (mspec.input_kind,)
    if mspec.protocol == "classifier" and mspec.input_kind not in wanted:
        raise ProtocolError(
            f"{user.kind[:-1]} type {user.type!r} trains classifiers of {' or '.join(wanted)}, but model type "
            f"{mspec.type!r} takes {mspec.input_kind}"
        )


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
