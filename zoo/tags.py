"""What a model built by zoo carries: the spec that built it, its tokenizer and, for weights from
a hub, where they came from. The ground floor every other part reads these through."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError
from zoo.specs import ModelSpec

if TYPE_CHECKING:
    from torch import nn

    from zoo.protocols import Tokenizer


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
