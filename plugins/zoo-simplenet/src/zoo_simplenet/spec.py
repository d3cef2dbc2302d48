"""SimpleNet's spec: pure pydantic, no torch import (what `zoo list` reads)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

import zoo


class SimpleNetSpec(zoo.ModelSpec):
    """An MLP classifier: input -> [linear -> norm -> activation -> dropout] x N -> linear."""

    type: Literal["simplenet"] = "simplenet"
    protocol = "classifier"
    in_features: int = Field(20, gt=0, le=1 << 24, description="input feature count")
    hidden: list[int] = Field(
        default_factory=lambda: [64, 64], max_length=1024, description="hidden layer widths, in order"
    )
    num_classes: int = Field(4, ge=2, le=1 << 24, description="output classes")
    activation: Literal["relu", "gelu", "silu"] = Field("relu", description="hidden activation")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout after each hidden layer")
    norm: Literal["none", "batchnorm", "layernorm"] = Field("none", description="normalisation after each linear")
    init: Literal["kaiming", "xavier", "default"] = Field("kaiming", description="weight init of linear layers")

    @field_validator("hidden")
    @classmethod
    def _hidden_positive(cls, hidden: list[int]) -> list[int]:
        if any(h <= 0 or h > 1 << 24 for h in hidden):
            raise ValueError(f"hidden widths must be positive and at most {1 << 24}, got {hidden}")
        return hidden

    # zoo.ClassifierSpec: flat features in
    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.in_features,)

    def input_fields(self, input_shape: tuple[int, ...]) -> dict[str, Any]:
        return {"in_features": input_shape[0]} if len(input_shape) == 1 else {"in_features": list(input_shape)}

    builder = "zoo_simplenet.model:SimpleNet"  # imported (with torch) only when a model is built
