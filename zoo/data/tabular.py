"""Tabular classification data: a synthetic set with a known ceiling, or .npz / .csv files."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zoo.errors import DataError


@dataclass
class Table:
    x: torch.Tensor  # (N, F) float32
    y: torch.Tensor  # (N,) int64
    ceiling: float | None = None  # best reachable accuracy, when known

    @property
    def n_features(self) -> int:
        return int(self.x.shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.y.max()) + 1 if len(self.y) else 0

    def split(self, val_fraction: float, seed: int) -> tuple[Table, Table]:
        """Deterministic shuffled split (the same seed always gives the same split)."""
        order = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(seed))
        n_val = max(1, round(len(self.y) * val_fraction))
        if n_val >= len(self.y):
            raise DataError(f"{len(self.y)} examples are too few to hold out {val_fraction:.0%} for validation")
        val, train = order[:n_val], order[n_val:]
        return Table(self.x[train], self.y[train], self.ceiling), Table(self.x[val], self.y[val], self.ceiling)


def synthetic(n_samples: int, n_features: int, n_classes: int, label_noise: float, seed: int) -> Table:
    """Labels from a random linear teacher, a fraction replaced at random.

    The teacher is exactly learnable, so the reachable accuracy is the share of labels that stay
    right: ``1 - label_noise * (1 - 1 / n_classes)``.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_samples, n_features, generator=g)
    teacher = torch.randn(n_features, n_classes, generator=g)
    y = (x @ teacher).argmax(dim=1)
    noisy = torch.rand(n_samples, generator=g) < label_noise
    y = torch.where(noisy, torch.randint(0, n_classes, (n_samples,), generator=g), y)
    return Table(x, y, ceiling=1.0 - label_noise * (1.0 - 1.0 / n_classes))


def load_table(path: str | Path, label_column: str | None = None) -> Table:
    """Load features + integer labels from ``.npz`` (arrays ``x`` and ``y``) or ``.csv``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".npz":
        x, y = _read_npz(path)
    elif path.suffix == ".csv":
        x, y = _read_csv(path, label_column)
    else:
        raise DataError(f"{path}: unsupported data file; use .npz (arrays x, y) or .csv (features + label column)")
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{path}: features must be (N, F) and labels (N,), got {x.shape} and {y.shape}")
    if len(y) == 0:
        raise DataError(f"{path}: no examples")
    if not np.isfinite(x).all():
        raise DataError(f"{path}: features contain NaN or infinity")
    if not np.issubdtype(y.dtype, np.integer) and not (np.all(np.isfinite(y)) and np.all(np.mod(y, 1) == 0)):
        raise DataError(f"{path}: labels must be whole numbers 0..C-1")
    if y.min() < 0:
        raise DataError(f"{path}: labels must be 0..C-1, found {int(y.min())}")
    return Table(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y.astype(np.int64)))


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
