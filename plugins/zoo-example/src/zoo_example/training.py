"""A label-smoothing classifier trainer: zoo's engine and classifier task, one loss changed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

import zoo
from zoo_example.specs import SmoothClassifierSpec


class SmoothTask(zoo.ClassificationTask):
    def __init__(self, train_set: zoo.Examples, val_set: zoo.Examples, smoothing: float) -> None:
        super().__init__(train_set, val_set)
        self.smoothing = smoothing

    def loss(self, model: nn.Module, batch: zoo.Batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x).float(), y, label_smoothing=self.smoothing)


class SmoothClassifierTrainer(zoo.ClassifierTrainer):
    spec: SmoothClassifierSpec

    def task_from(self, train_set: zoo.Examples, val_set: zoo.Examples) -> SmoothTask:
        return SmoothTask(train_set, val_set, self.spec.label_smoothing)


if TYPE_CHECKING:  # mypy checks the trainer and its task against zoo's protocols

    def _trainer(trainer: SmoothClassifierTrainer, task: SmoothTask) -> tuple[zoo.Trainer, zoo.Task]:
        return trainer, task
