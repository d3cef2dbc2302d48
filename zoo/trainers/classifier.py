"""The `classifier` trainer: cross-entropy on tabular data, through the training engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.data.tabular import Table, load_table, synthetic
from zoo.engine import Batch, EngineTrainer
from zoo.errors import DataError
from zoo.runtime import Runtime
from zoo.trainers.specs import ClassifierTrainerSpec


class ClassificationTask:
    unit = "examples"

    def __init__(self, train_set: Table, val_set: Table) -> None:
        self.train_set, self.val_set = train_set, val_set
        self.summary: dict[str, float] = {}  # figures added to the run's result

    def sample(self, generator: torch.Generator, batch_size: int) -> Batch:
        idx = torch.randint(0, len(self.train_set.y), (batch_size,), generator=generator)
        return self.train_set.x[idx], self.train_set.y[idx]

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x).float(), y)

    def count(self, batch: Batch) -> int:
        return int(batch[0].shape[0])

    def evaluate(self, model: nn.Module, runtime: Runtime, batches: int) -> dict[str, float]:
        """Loss and accuracy over the whole validation split (it is small), in fixed order."""
        total_loss, correct, n = 0.0, 0, len(self.val_set.y)
        for x, y in zip(self.val_set.x.split(1024), self.val_set.y.split(1024), strict=True):
            x, y = runtime.to_device((x, y))
            logits = model(x).float()
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
        return {"val_loss": total_loss / n, "val_accuracy": correct / n}


class ClassifierTrainer(EngineTrainer):
    spec: ClassifierTrainerSpec

    def __init__(self, spec: ClassifierTrainerSpec) -> None:
        super().__init__(spec)
        self.checked: dict[str, Table] = {}  # tables check_data loaded, for make_task to reuse

    def make_task(
        self, model: nn.Module, runtime: Runtime, data: str | Path | None, workdir: Path, resume: bool
    ) -> ClassificationTask:
        table = self.checked.pop(str(data), None) or self.dataset(self.model_spec(model), data)
        train_set, val_set = table.split(self.spec.val_fraction, seed=runtime.seed)
        task = self.task_from(train_set, val_set)
        if table.ceiling is not None:
            task.summary["reachable_accuracy"] = table.ceiling
        return task

    def check_data(self, model: nn.Module, data: str | Path | None) -> None:
        """Load and check the table now (before the run folder is touched); `make_task` reuses it."""
        self.checked = {str(data): self.dataset(self.model_spec(model), data)}

    @staticmethod
    def model_spec(model: nn.Module) -> Any:
        from zoo.api import spec_of

        return spec_of(model)

    def task_from(self, train_set: Table, val_set: Table) -> ClassificationTask:
        """The task for these splits; a subclass changes the loss here (see zoo-example)."""
        return ClassificationTask(train_set, val_set)

    def dataset(self, model_spec: Any, data: str | Path | None = None) -> Table:
        """The data a model of this spec trains on, checked against the model's shape."""
        in_features = getattr(model_spec, "in_features", None)
        n_classes = getattr(model_spec, "num_classes", None)
        path = data if data is not None else self.spec.data
        if path is None:
            if in_features is None or n_classes is None:
                raise DataError(f"model type {model_spec.type!r} does not state in_features/num_classes; pass --data")
            s = self.spec.synthetic
            return synthetic(s.n_samples, in_features, n_classes, s.label_noise, s.seed)
        table = load_table(path, self.spec.label_column)
        name = f"models.{model_spec.type}"
        if in_features is not None and table.n_features != in_features:
            raise DataError(
                f"{path} has {table.n_features} features but the model expects in_features={in_features}; "
                f"set {name}.in_features={table.n_features}"
            )
        if n_classes is not None and table.n_classes > n_classes:
            raise DataError(
                f"{path} has labels up to {table.n_classes - 1} but the model has num_classes={n_classes}; "
                f"set {name}.num_classes={table.n_classes}"
            )
        return table
