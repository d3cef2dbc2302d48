"""A label-smoothing classifier trainer: zoo's engine and classifier task, one loss changed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.engine import Batch
from zoo.trainers.classifier import ClassificationTask, ClassifierTrainer


class SmoothTask(ClassificationTask):
    def __init__(self, train_set, val_set, smoothing: float) -> None:  # type: ignore[no-untyped-def]
        super().__init__(train_set, val_set)
        self.smoothing = smoothing

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x).float(), y, label_smoothing=self.smoothing)


class SmoothClassifierTrainer(ClassifierTrainer):
    def task_from(self, train_set, val_set) -> SmoothTask:  # type: ignore[no-untyped-def]
        return SmoothTask(train_set, val_set, self.spec.label_smoothing)
