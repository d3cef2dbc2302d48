"""The Python entry points: build anything registered from a name, a dict or a spec."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.config import Config, load_config, registry_files
from zoo.errors import ProtocolError, ZooError
from zoo.specs import Kind, ModelSpec, SamplerSpec, Spec, TrainerSpec, validate

if TYPE_CHECKING:
    from torch import nn

    from zoo.protocols import Tokenizer

Ref = str | Mapping[str, Any] | Spec


def default_config() -> Config:
    """The configuration of this process: the installed plugins and their presets, then the
    user's, the project's and ``$ZOO_REGISTRY``'s registry files (see `zoo.config.registry_files`).

    Cached per set of files and their modification times, so repeated calls are cheap and edits
    are seen.
    """
    files = tuple((str(f.resolve()), f.stat().st_mtime_ns if f.exists() else 0) for f in registry_files())
    switches = (os.environ.get("ZOO_DISABLE_PLUGINS", ""), os.environ.get("ZOO_ENABLE_PLUGINS", ""))
    return _cached_config(files, switches, os.getcwd())


@functools.lru_cache(maxsize=4)
def _cached_config(files: tuple[tuple[str, int], ...], switches: tuple[str, str], cwd: str) -> Config:
    return load_config()


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


def read_data(
    path: str | Path,
    protocol: str = "classifier",
    *,
    data_format: str | None = None,
    options: Mapping[str, Any] | None = None,
    config: Config | None = None,
) -> Any:
    """Read a data file or folder with the registered data source for it: `zoo.Examples` for
    ``"classifier"``, a list of `zoo.TextSource` for ``"causal-lm"``."""
    from zoo.data.sources import open_data

    registry = (config or default_config()).registry
    return open_data(registry, path, protocol, data_format=data_format, options=options)


def list_names(
    kind: Kind = "models", pattern: str = "*", *, protocol: str | None = None, config: Config | None = None
) -> list[str]:
    """Preset and type names of one kind matching a shell-style ``pattern`` (and ``protocol``)."""
    import fnmatch

    cfg = config or default_config()
    out = []
    for name in cfg.names(kind):
        if not fnmatch.fnmatchcase(name, pattern):
            continue
        if protocol is not None:
            spec_cls = cfg.spec_class(kind, name)
            if spec_cls is None or spec_cls.protocol != protocol:
                continue
        out.append(name)
    return out


def list_models(pattern: str = "*", *, protocol: str | None = None, config: Config | None = None) -> list[str]:
    """timm-style: ``zoo.list_models("minigpt*", protocol="causal-lm")`` -> preset and type names."""
    return list_names("models", pattern, protocol=protocol, config=config)


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


def attach(
    model: nn.Module, spec: ModelSpec, *, tokenizer: Any = None, source: Mapping[str, Any] | None = None
) -> nn.Module:
    """Remember on the module which spec built it (and its tokenizer), for saving and checks;
    ``source`` is where its weights came from when a hub gave them (``{"reference": "hf:ORG/NAME@SHA",
    "revision": SHA, "files": {name: sha256}}``), recorded as the parent of what is saved or trained."""
    # nn.Module.__setattr__ stores plain objects as attributes; setattr keeps mypy out of it
    setattr(model, "zoo_spec", spec)  # noqa: B010
    if tokenizer is not None:
        setattr(model, "zoo_tokenizer", tokenizer)  # noqa: B010
    if source is not None:
        setattr(model, "zoo_source", dict(source))  # noqa: B010
    return model


def source_of(model: Any) -> dict[str, Any] | None:
    """The hub provenance `attach` recorded (None: weights not from a hub reference)."""
    source: dict[str, Any] | None = vars(model).get("zoo_source")
    return source


def tokenizer_of(model: Any) -> Tokenizer | None:
    """The tokenizer a model was trained or loaded with (None: byte-level text, or none recorded)."""
    tokenizer: Tokenizer | None = vars(model).get("zoo_tokenizer")  # set by attach(); never a class attribute
    return tokenizer


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
