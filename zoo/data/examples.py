"""Labelled examples for classifiers, and the built-in readers: `.npz`, `.csv` and image folders.

Every reader is a data source (registered in `zoo.plugin` through the same hook as a plugin's)
and returns `Examples`: inputs (N, *input_shape) float32 and labels (N,) int64, checked.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.errors import DataError


@dataclass
class Examples:
    """A classification set: what a ``"classifier"`` data source returns."""

    x: torch.Tensor  # (N, *input_shape) float32
    y: torch.Tensor  # (N,) int64
    ceiling: float | None = None  # best reachable accuracy, when known
    classes: list[str] | None = None  # label names, when the data has them (image folders)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def n_classes(self) -> int:
        return int(self.y.max()) + 1 if len(self.y) else 0

    def split(self, val_fraction: float, seed: int) -> tuple[Examples, Examples]:
        """Deterministic shuffled split (the same seed always gives the same split)."""
        order = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(seed))
        n_val = max(1, round(len(self.y) * val_fraction))
        if n_val >= len(self.y):
            raise DataError(f"{len(self.y)} examples are too few to hold out {val_fraction:.0%} for validation")
        val, train = order[:n_val], order[n_val:]
        return (
            Examples(self.x[train], self.y[train], self.ceiling, self.classes),
            Examples(self.x[val], self.y[val], self.ceiling, self.classes),
        )


def synthetic(n_samples: int, input_shape: tuple[int, ...], n_classes: int, label_noise: float, seed: int) -> Examples:
    """Labels from a random linear teacher over the flattened input, a fraction replaced at random.

    The teacher is exactly learnable, so the reachable accuracy is the share of labels that stay
    right: ``1 - label_noise * (1 - 1 / n_classes)``.
    """
    g = torch.Generator().manual_seed(seed)
    n_features = math.prod(input_shape)
    x = torch.randn(n_samples, n_features, generator=g)
    teacher = torch.randn(n_features, n_classes, generator=g)
    y = (x @ teacher).argmax(dim=1)
    x = x.view(n_samples, *input_shape)
    noisy = torch.rand(n_samples, generator=g) < label_noise
    y = torch.where(noisy, torch.randint(0, n_classes, (n_samples,), generator=g), y)
    return Examples(x, y, ceiling=1.0 - label_noise * (1.0 - 1.0 / n_classes))


def checked(path: Path, x: np.ndarray, y: np.ndarray, classes: list[str] | None = None) -> Examples:
    """Examples from arrays, or a `DataError` naming the file and what is wrong."""
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{path}: inputs must be (N, ...) and labels (N,), got {x.shape} and {y.shape}")
    if len(y) == 0:
        raise DataError(f"{path}: no examples")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{path}: inputs must be real numbers, not {x.dtype}")
    if not np.isfinite(x).all():
        raise DataError(f"{path}: inputs contain NaN or infinity")
    if not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y)) or not np.all(np.mod(y, 1) == 0):
        raise DataError(f"{path}: labels must be whole numbers 0..C-1")
    if y.min() < 0:
        raise DataError(f"{path}: labels must be 0..C-1, found {int(y.min())}")
    return Examples(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y.astype(np.int64)), classes=classes)


def from_dataset(dataset: Any) -> Examples:
    """Examples from a dataset given in Python: `Examples` as they are, or any indexable collection
    of ``(x, y)`` pairs (a ``torch.utils.data.Dataset``, a list), stacked into tensors once."""
    if isinstance(dataset, Examples):
        return dataset
    name = type(dataset).__name__
    try:
        n = len(dataset)
        pairs = [dataset[i] for i in range(n)]
    except (TypeError, KeyError, IndexError) as err:
        raise DataError(f"{name}: a dataset given from Python needs len() and indexing by 0..N-1 ({err})") from None
    xs, ys = [], []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise DataError(f"{name}[{i}]: each item must be an (x, y) pair, got {type(pair).__name__}")
        xs.append(np.asarray(pair[0], dtype=np.float64))
        ys.append(np.asarray(pair[1]))
    if not xs or any(x.shape != xs[0].shape for x in xs):
        raise DataError(f"{name}: items must all have inputs of one shape (found {len({x.shape for x in xs})} shapes)")
    return checked(Path(name), np.stack(xs), np.stack(ys).reshape(-1))


def read_npz(path: Path, options: Mapping[str, Any]) -> Examples:
    """Arrays ``x`` (N, F) features or (N, C, H, W) images, and ``y`` (N,) labels; never a pickle."""
    x, y = _read_npz(path)
    return checked(path, x, y)


def read_csv(path: Path, options: Mapping[str, Any]) -> Examples:
    """A header row, then one example per row: numeric features and a label column
    (``data_options.label_column``; default: the last column)."""
    label = options.get("label_column")
    if label is not None and not isinstance(label, str):
        raise DataError(f"data_options.label_column must be a column name, not {label!r}")
    x, y = _read_csv(path, label)
    return checked(path, x, y)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import zipfile

    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a valid .npz file (not a zip archive of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as data:
            names = list(data.keys())
            if "x" not in names or "y" not in names:
                raise DataError(f"{path}: expected arrays named 'x' (features) and 'y' (labels), found {names}")
            return np.asarray(data["x"]), np.asarray(data["y"])
    except DataError:
        raise
    except ValueError as err:  # object arrays would need pickle, which is never allowed
        raise DataError(f"{path}: unreadable .npz ({err}); store plain numeric arrays") from None
    except Exception as err:
        raise DataError(f"{path}: not a valid .npz file ({type(err).__name__}: {err})") from None


def _read_csv(path: Path, label_column: str | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from None
    if len(rows) < 2:
        raise DataError(f"{path}: needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    label = label_column or header[-1]
    if label not in header:
        raise DataError(f"{path}: no column {label!r}; columns: {', '.join(header)}")
    li = header.index(label)
    feats, labels = [], []
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{n}: {len(row)} fields, header has {len(header)}")
        try:
            values = [float(v) for v in row]
        except ValueError:
            bad = next(v for v in row if not _is_float(v))
            raise DataError(f"{path}:{n}: {bad!r} is not a number") from None
        labels.append(values.pop(li))
        feats.append(values)
    return np.asarray(feats, dtype=np.float32), np.asarray(labels)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
