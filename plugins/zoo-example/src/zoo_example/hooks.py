"""The hooks of zoo-example: its specs (specs.py, beside the code they build) registered with zoo."""

from __future__ import annotations

import zoo
from zoo_example.specs import GRULMSpec, SignumSpec, SmallCNNSpec, SmoothClassifierSpec, TypicalSpec


@zoo.hookimpl
def zoo_register_optimizers(register: zoo.Register) -> None:
    register(SignumSpec)


@zoo.hookimpl
def zoo_register_models(register: zoo.Register) -> None:
    register(GRULMSpec)
    register(SmallCNNSpec)


@zoo.hookimpl
def zoo_register_samplers(register: zoo.Register) -> None:
    register(TypicalSpec)


@zoo.hookimpl
def zoo_register_trainers(register: zoo.Register) -> None:
    register(SmoothClassifierSpec)


@zoo.hookimpl
def zoo_register_presets(register: zoo.RegisterPreset) -> None:
    register("models", "gru-lm-small", {"type": "gru-lm", "d_model": 128, "n_layers": 2}, description="a 2-layer GRU")
    register(
        "models",
        "small-cnn-gray",
        {"type": "small-cnn", "channels": 1, "height": 16, "width": 16, "num_classes": 4},
        description="16x16 grey images, 4 classes",
    )
    register("samplers", "typical", {"type": "typical-p", "mass": 0.9}, description="locally typical sampling")
