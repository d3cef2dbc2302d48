"""SimpleNet's registration hooks (no torch import here): the spec beside the model, these on top."""

from __future__ import annotations

import zoo
from zoo_simplenet.spec import SimpleNetSpec


@zoo.hookimpl
def zoo_register_models(register: zoo.Register) -> None:
    register(SimpleNetSpec)


@zoo.hookimpl
def zoo_register_presets(register: zoo.RegisterPreset) -> None:
    register(
        "models",
        "simplenet-small",
        {"type": "simplenet", "in_features": 20, "hidden": [64, 64], "num_classes": 4, "activation": "gelu"},
        description="two hidden layers of 64",
    )
    register(
        "models",
        "simplenet-deep",
        {
            "type": "simplenet",
            "in_features": 20,
            "hidden": [256, 256, 128],
            "num_classes": 4,
            "norm": "layernorm",
            "dropout": 0.1,
        },
        description="three hidden layers with LayerNorm and dropout",
    )
