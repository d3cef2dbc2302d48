"""Specs and hooks of zoo-example. Imports pydantic and zoo only: torch is imported in build()."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

import zoo
from zoo.hookspecs import Register, RegisterPreset
from zoo.trainers.specs import ClassifierTrainerSpec


class GRULMSpec(zoo.ModelSpec):
    """A GRU language model; its 'KV cache' is the recurrent hidden state."""

    type: Literal["gru-lm"] = "gru-lm"
    protocol = "causal-lm"
    vocab_size: int = Field(256, gt=0, description="vocabulary size")
    d_model: int = Field(64, gt=0, description="embedding and hidden width")
    n_layers: int = Field(1, ge=1, le=8, description="stacked GRU layers")
    max_seq_len: int = Field(1024, gt=0, description="longest sequence accepted")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout between GRU layers")

    def build(self) -> Any:
        from zoo_example.model import GRULM

        return GRULM(self)


class TypicalSpec(zoo.SamplerSpec):
    """Locally typical sampling: keep the tokens whose surprise is closest to the entropy."""

    type: Literal["typical-p"] = "typical-p"
    mass: float = Field(0.9, gt=0.0, le=1.0, description="probability mass of the typical set")
    temperature: float = Field(1.0, gt=0.0, description="divides the logits first")

    def build(self) -> Any:
        from zoo_example.sampling import Typical

        return Typical(self.mass, self.temperature)


class SmoothClassifierSpec(ClassifierTrainerSpec):
    """zoo's classifier trainer with label smoothing: a new trainer in a few lines."""

    type: Literal["smooth-classifier"] = "smooth-classifier"  # type: ignore[assignment]
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0, description="weight of the uniform target")

    def build(self) -> Any:
        from zoo_example.training import SmoothClassifierTrainer

        return SmoothClassifierTrainer(self)


@zoo.hookimpl
def zoo_register_models(register: Register) -> None:
    register(GRULMSpec)


@zoo.hookimpl
def zoo_register_samplers(register: Register) -> None:
    register(TypicalSpec)


@zoo.hookimpl
def zoo_register_trainers(register: Register) -> None:
    register(SmoothClassifierSpec)


@zoo.hookimpl
def zoo_register_presets(register: RegisterPreset) -> None:
    register("models", "gru-lm-small", {"type": "gru-lm", "d_model": 128, "n_layers": 2}, description="a 2-layer GRU")
    register("samplers", "typical", {"type": "typical-p", "mass": 0.9}, description="locally typical sampling")
