"""zoo: a plugin-based model zoo for PyTorch.

``import zoo`` imports nothing heavy (not even pydantic): every public name is resolved from its
module on first use. That keeps ``zoo list`` fast and lets the command line treat Ctrl-C during
start-up like Ctrl-C anywhere else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import Field

    from zoo.api import (
        build_model,
        build_sampler,
        build_trainer,
        default_config,
        list_models,
        model_spec,
        parameter_estimate,
        spec_of,
    )
    from zoo.artifacts import load, save
    from zoo.config import Config, load_config
    from zoo.errors import (
        ArtifactError,
        DataError,
        PluginError,
        ProtocolError,
        RunDirError,
        RuntimeConfigError,
        SpecError,
        TrainingError,
        UnknownNameError,
        ZooError,
    )
    from zoo.generation import generate
    from zoo.hookspecs import hookimpl
    from zoo.registry import Registry
    from zoo.runtime import Runtime
    from zoo.specs import ModelSpec, RuntimeSpec, SamplerSpec, Spec, TrainerSpec
    from zoo.training import train

__version__ = "0.2.0"

_HOME = {
    "Field": "pydantic",
    "build_model": "zoo.api",
    "build_sampler": "zoo.api",
    "build_trainer": "zoo.api",
    "default_config": "zoo.api",
    "list_models": "zoo.api",
    "model_spec": "zoo.api",
    "parameter_estimate": "zoo.api",
    "spec_of": "zoo.api",
    "save": "zoo.artifacts",
    "load": "zoo.artifacts",
    "Config": "zoo.config",
    "load_config": "zoo.config",
    "generate": "zoo.generation",
    "hookimpl": "zoo.hookspecs",
    "Registry": "zoo.registry",
    "Runtime": "zoo.runtime",
    "train": "zoo.training",
    **{
        name: "zoo.errors"
        for name in (
            "ArtifactError",
            "DataError",
            "PluginError",
            "ProtocolError",
            "RunDirError",
            "RuntimeConfigError",
            "SpecError",
            "TrainingError",
            "UnknownNameError",
            "ZooError",
        )
    },
    **{name: "zoo.specs" for name in ("ModelSpec", "RuntimeSpec", "SamplerSpec", "Spec", "TrainerSpec")},
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ArtifactError",
    "Config",
    "DataError",
    "Field",
    "ModelSpec",
    "PluginError",
    "ProtocolError",
    "Registry",
    "RunDirError",
    "Runtime",
    "RuntimeConfigError",
    "RuntimeSpec",
    "SamplerSpec",
    "Spec",
    "SpecError",
    "TrainerSpec",
    "TrainingError",
    "UnknownNameError",
    "ZooError",
    "__version__",
    "build_model",
    "build_sampler",
    "build_trainer",
    "default_config",
    "generate",
    "hookimpl",
    "list_models",
    "load",
    "load_config",
    "model_spec",
    "parameter_estimate",
    "save",
    "spec_of",
    "train",
]
