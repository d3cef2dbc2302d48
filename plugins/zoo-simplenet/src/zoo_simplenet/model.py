"""SimpleNet: an MLP classifier. ``forward(x) -> logits``, x of shape (B, in_features)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

import zoo
from zoo_simplenet.spec import SimpleNetSpec

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class SimpleNet(nn.Module):
    def __init__(self, spec: SimpleNetSpec) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = spec.in_features
        for hidden in spec.hidden:
            layers.append(nn.Linear(width, hidden))
            if spec.norm == "batchnorm":
                layers.append(nn.BatchNorm1d(hidden))
            elif spec.norm == "layernorm":
                layers.append(nn.LayerNorm(hidden))
            layers.append(ACTIVATIONS[spec.activation]())
            if spec.dropout:
                layers.append(nn.Dropout(spec.dropout))
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, spec.num_classes)
        self._init(spec.init, spec.activation)

    def _init(self, scheme: str, activation: str) -> None:
        if scheme == "default":
            return
        for module in self.modules():
            if isinstance(module, nn.Linear):
                if scheme == "kaiming" and module is not self.head:
                    # kaiming's gain formula knows relu; gelu/silu are close enough to it
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                else:  # the head feeds a softmax, not an activation: keep its logits small
                    nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # (B, num_classes)


if TYPE_CHECKING:  # mypy checks SimpleNet and its spec against zoo's classifier protocols

    def _model(model: SimpleNet) -> zoo.Classifier:
        return model

    def _spec(spec: SimpleNetSpec) -> zoo.ClassifierSpec:
        return spec
