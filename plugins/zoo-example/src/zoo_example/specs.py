"""The specs of zoo-example: pydantic and zoo only (torch is imported when something is built).

Only the public API (``import zoo``) is used, as an outside author would. A spec whose
implementation imports it back names that implementation (``builder``) instead of importing it."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

import zoo


class GRULMSpec(zoo.ModelSpec):
    """A GRU language model; its 'KV cache' is the recurrent hidden state."""

    type: Literal["gru-lm"] = "gru-lm"
    protocol = "causal-lm"
    vocab_size: int = Field(256, gt=0, le=1 << 24, description="vocabulary size")
    d_model: int = Field(64, gt=0, le=1 << 20, description="embedding and hidden width")
    n_layers: int = Field(1, ge=1, le=8, description="stacked GRU layers")
    max_seq_len: int = Field(1024, gt=0, le=1 << 24, description="training window (decoding has no limit)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout between GRU layers")

    builder = "zoo_example.model:GRULM"  # imported (with torch) only when built


class SmallCNNSpec(zoo.ModelSpec):
    """A small convolutional image classifier: [conv 3x3 -> ReLU -> max-pool 2] per width, then a
    global average pool and a linear head. Takes (B, channels, height, width) floats in [0, 1]."""

    type: Literal["small-cnn"] = "small-cnn"
    protocol = "classifier"
    input_kind: ClassVar[zoo.InputKind] = "images"
    channels: int = Field(3, ge=1, le=4, description="image channels (3: RGB, 1: grey)")
    height: int = Field(32, ge=4, le=4096, description="image height in pixels")
    width: int = Field(32, ge=4, le=4096, description="image width in pixels")
    widths: list[int] = Field(
        default_factory=lambda: [16, 32], max_length=64, description="channels of each conv stage"
    )
    num_classes: int = Field(10, ge=2, le=1 << 24, description="output classes")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the head")

    @field_validator("widths")
    @classmethod
    def _widths(cls, widths: list[int]) -> list[int]:
        if not widths or any(w <= 0 or w > 65536 for w in widths):
            raise ValueError(f"widths must be one or more channel counts between 1 and 65536, got {widths}")
        return widths

    # zoo.ClassifierSpec: what one example looks like
    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.channels, self.height, self.width)

    def input_fields(self, input_shape: tuple[int, ...]) -> dict[str, Any]:
        if len(input_shape) != 3:
            return {"input_shape": list(input_shape)}  # not an image: no field fixes that
        return dict(zip(("channels", "height", "width"), input_shape, strict=True))

    builder = "zoo_example.cnn:SmallCNN"  # imported (with torch) only when built


class TypicalSpec(zoo.SamplerSpec):
    """Locally typical sampling: keep the tokens whose surprise is closest to the entropy."""

    type: Literal["typical-p"] = "typical-p"
    mass: float = Field(0.9, gt=0.0, le=1.0, description="probability mass of the typical set")
    temperature: float = Field(1.0, gt=0.0, description="divides the logits first")

    def build(self) -> Any:
        from zoo_example.sampling import Typical

        return Typical(self.mass, self.temperature)


class SmoothClassifierSpec(zoo.ClassifierTrainerSpec):
    """zoo's classifier trainer with label smoothing: a new trainer in a few lines."""

    type: Literal["smooth-classifier"] = "smooth-classifier"  # type: ignore[assignment]
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0, description="weight of the uniform target")

    builder = "zoo_example.training:SmoothClassifierTrainer"  # imported (with torch) only when built


class SignumSpec(zoo.OptimizerSpec):
    """Signum: sign of the momentum, every weight moving by lr (a new optimizer in a few lines)."""

    type: Literal["signum"] = "signum"
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="decay of the gradient's running mean")
    weight_decay: float = Field(0.0, ge=0.0, description="decoupled weight decay of the matrices")

    def build(self, model: Any, lr: float, device: Any) -> Any:
        from zoo_example.optim import Signum

        groups = zoo.param_groups(model.parameters(), lr, self.weight_decay)  # zoo's decay / no_decay split
        return Signum(groups, lr=lr, momentum=self.momentum)
