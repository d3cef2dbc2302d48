"""SmallCNN: ``forward(x) -> logits``, x of shape (B, channels, height, width)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

import zoo
from zoo_example.specs import SmallCNNSpec


class SmallCNN(nn.Module):
    def __init__(self, spec: SmallCNNSpec) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = spec.channels
        for out in spec.widths:
            layers += [nn.Conv2d(width, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            width = out
        self.features = nn.Sequential(*layers)
        self.drop = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        self.head = nn.Linear(width, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean(dim=(2, 3))  # global average pool: (B, width)
        return self.head(self.drop(h))  # (B, num_classes)


if TYPE_CHECKING:  # mypy checks the model and its spec speak zoo's classifier protocols

    def _model(model: SmallCNN) -> zoo.Classifier:
        return model

    def _spec(spec: SmallCNNSpec) -> zoo.ClassifierSpec:
        return spec
