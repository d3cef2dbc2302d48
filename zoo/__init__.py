"""zoo: a plugin-based model zoo for PyTorch.

``import zoo`` does not import torch; the functions that need it import it when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from zoo.api import (
    build_model,
    build_sampler,
    build_trainer,
    default_config,
    model_spec,
    parameter_estimate,
    spec_of,
)
from zoo.config import Config, load_config
from zoo.errors import (
    ArtifactError,
    DataError,
    PluginError,
    ProtocolError,
    RuntimeConfigError,
    SpecError,
    TrainingError,
    UnknownNameError,
    ZooError,
)
from zoo.hookspecs import hookimpl
from zoo.registry import Registry
from zoo.specs import ModelSpec, RuntimeSpec, SamplerSpec, Spec, TrainerSpec

if TYPE_CHECKING:
    from zoo.artifacts import load, save
    from zoo.generation import generate
    from zoo.runtime import Runtime

__version__ = "0.1.0"

# Names whose modules import torch: resolved on first use so `import zoo` stays light.
_LAZY = {
    "save": "zoo.artifacts",
    "load": "zoo.artifacts",
    "Runtime": "zoo.runtime",
    "generate": "zoo.generation",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


__all__ = [
    "ArtifactError",
    "Config",
    "DataError",
    "Field",
    "ModelSpec",
    "PluginError",
    "ProtocolError",
    "Registry",
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
    "load",
    "load_config",
    "model_spec",
    "parameter_estimate",
    "save",
    "spec_of",
]
