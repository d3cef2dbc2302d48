"""The `classifier` trainer: cross-entropy on features or images, through the training engine."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.data.examples import Examples, from_dataset, synthetic
from zoo.data.sources import open_data
from zoo.errors import DataError, DataMismatch
from zoo.protocols import ClassifierSpec
from zoo.runtime import Runtime
from zoo.tags import spec_of
from zoo.trainers.engine import Batch, EngineTrainer, as_path, data_key
from zoo.trainers.specs import ClassifierTrainerSpec


class ClassificationTask:
    unit = "examples"

    def __init__(self, train_set: Examples, val_set: Examples) -> None:
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
        loss, accuracy = classification_scores(model, self.val_set, runtime)
        return {"val_loss": loss, "val_accuracy": accuracy}


def classification_scores(model: nn.Module, examples: Examples, runtime: Runtime) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` over every example, 1,024 at a time (the caller holds
    `Runtime.inference`); labels past the model's outputs are a `DataError`."""
    total_loss, correct, n = 0.0, 0, len(examples.y)
    for x, y in zip(examples.x.split(1024), examples.y.split(1024), strict=True):
        x, y = runtime.to_device((x, y))
        logits = model(x).float()
        if logits.shape[-1] <= int(y.max()):
            raise DataError(f"labels go up to {int(y.max())}; the model has {logits.shape[-1]} classes")
        total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
    return total_loss / n, correct / n


class ClassifierTrainer(EngineTrainer):
    spec: ClassifierTrainerSpec

    def __init__(self, spec: ClassifierTrainerSpec) -> None:
        super().__init__(spec)
        self.checked: dict[str, Examples] = {}  # tables check_data loaded, for make_task to reuse

    def make_task(
        self, model: nn.Module, runtime: Runtime, data: str | Path | None, workdir: Path, resume: bool
    ) -> ClassificationTask:
        table = self.checked.pop(data_key(data), None) or self.dataset(self.model_spec(model), data)
        if data is None and self.spec.data is None and runtime.is_main:  # say so: results on it mean little
            print(
                f"note: no --data: training on synthetic data ({len(table.y):,} examples labelled by a random "
                "linear teacher, trainer field `synthetic`)",
                file=sys.stderr,
            )
        train_set, val_set = table.split(self.spec.val_fraction, seed=runtime.seed)
        task = self.task_from(train_set, val_set)
        if table.ceiling is not None:
            task.summary["reachable_accuracy"] = table.ceiling
        return task

    def check_data(self, model: nn.Module, data: str | Path | None) -> None:
        """Load and check the table now (before the run folder is touched); `make_task` reuses it."""
        self.checked = {data_key(data): self.dataset(self.model_spec(model), data)}

    @staticmethod
    def model_spec(model: nn.Module) -> Any:

        return spec_of(model)

    def task_from(self, train_set: Examples, val_set: Examples) -> ClassificationTask:
        """The task for these splits; a subclass changes the loss here (see zoo-example)."""
        return ClassificationTask(train_set, val_set)

    def dataset(self, model_spec: Any, data: str | Path | None = None) -> Examples:
        """The data a model of this spec trains on, checked against the model's input contract."""
        if not isinstance(model_spec, ClassifierSpec):
            raise DataError(
                f"model type {model_spec.type!r} does not state its input_shape and num_classes "
                "(zoo.protocols.ClassifierSpec), so its data cannot be checked; add them to its spec"
            )
        shape, n_classes = tuple(model_spec.input_shape), model_spec.num_classes
        path = data if data is not None else self.spec.data
        if path is None:
            s = self.spec.synthetic
            return synthetic(s.n_samples, shape, n_classes, s.label_noise, s.seed)
        examples: Examples = (
            open_data(
                self.registry(), path, "classifier", data_format=self.spec.data_format, options=self.spec.data_options
            )
            if as_path(path) is not None
            else from_dataset(path)
        )
        if examples.input_shape != shape:
            raise DataMismatch(
                f"{path} holds examples of shape {examples.input_shape} but the model takes {shape} "
                f"({model_spec.input_kind})",
                model_spec.input_fields(examples.input_shape),
            )
        if examples.n_classes > n_classes:
            raise DataMismatch(
                f"{path} has labels up to {examples.n_classes - 1} but the model has {n_classes} classes",
                {"num_classes": examples.n_classes},
            )
        return examples
