"""The standard loggers: ``metrics.jsonl`` (the record every run keeps), TensorBoard and CSV.

Each is a `zoo.protocols.Logger` built from a `zoo.LoggerSpec`; the engine hands every one the
same records on the main process. On resume each drops what it holds past the resumed step, so
the curves show one history, not two.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo.errors import ArtifactError
from zoo.files import parse_json

METRICS_FILE = "metrics.jsonl"
FIGURE_SPLITS = ("train", "val")  # what the curve loggers draw; events and rank shares stay in the record


def _own_file(path: Path) -> Path:
    """``path``, if zoo may write it: a regular file or nothing (never through a planted link)."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ArtifactError(f"{path}: not a regular file; zoo writes metrics only to its own files")
    return path


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a record (the step and text fields left out)."""
    return {
        k: float(v)
        for k, v in record.items()
        if k != "step" and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


class JsonlLogger:
    """Append-only ``metrics.jsonl``; on resume, lines past the resumed step are dropped."""

    def __init__(self) -> None:
        self.path: Path | None = None

    def start(self, out: Path, step: int) -> None:
        self.path = _own_file(out / METRICS_FILE)
        if self.path.is_file():  # keep the lines up to ``step``; unreadable ones (a half-written last) go
            text = self.path.read_bytes().decode("utf-8", errors="replace")
            keep = [ln for ln in text.splitlines() if ln.strip() and _line_step(ln) <= step]
            self.path.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")

    def log(self, record: Mapping[str, Any]) -> None:
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(dict(record)) + "\n")

    def close(self) -> None:
        self.path = None


def _line_step(line: str) -> int:
    try:
        step = parse_json(line, "metrics line").get("step")
    except (ArtifactError, AttributeError):
        return sys.maxsize  # an unreadable (half-written) line goes
    return step if isinstance(step, int) and not isinstance(step, bool) else sys.maxsize


class TensorBoardLogger:
    """Scalars as ``SPLIT/NAME`` (``train/loss``, ``val/val_loss``) in ``RUN/tensorboard``."""

    def __init__(self, folder: str = "tensorboard") -> None:
        self.folder = folder
        self.writer: Any = None

    def start(self, out: Path, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard hides the events past ``step``, which the resumed run writes again
        self.writer = SummaryWriter(log_dir=str(out / self.folder), purge_step=step + 1 if step else None)

    def log(self, record: Mapping[str, Any]) -> None:
        split = record.get("split")
        if self.writer is None or split not in FIGURE_SPLITS or not isinstance(record.get("step"), int):
            return
        for name, value in scalars(record).items():
            self.writer.add_scalar(f"{split}/{name}", value, record["step"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class CsvLogger:
    """One table per split, ``RUN/csv/train.csv`` and ``RUN/csv/val.csv``: a column per figure
    (a figure that appears later widens the table; earlier rows leave it empty)."""

    def __init__(self, folder: str = "csv") -> None:
        self.folder = folder
        self.root: Path | None = None
        self.headers: dict[Path, list[str]] = {}  # each table's columns, read once

    def start(self, out: Path, step: int) -> None:
        self.root = out / self.folder
        if self.root.is_symlink() or (self.root.exists() and not self.root.is_dir()):
            raise ArtifactError(f"{self.root}: not a folder; zoo writes its CSV tables only to its own folder")
        self.root.mkdir(exist_ok=True)
        self.headers = {}
        for table in sorted(self.root.glob("*.csv")):
            header, rows = self._read(table)
            self._write(table, header, [r for r in rows if _int(r.get("step")) <= step])
            self.headers[table] = header

    def log(self, record: Mapping[str, Any]) -> None:
        split = record.get("split")
        if self.root is None or split not in FIGURE_SPLITS or not isinstance(record.get("step"), int):
            return
        table = self.root / f"{split}.csv"
        row = {"step": str(record["step"]), **{k: repr(v) for k, v in scalars(record).items()}}
        header = self.headers.get(table, [])
        if set(row) - set(header):  # a new column: rewrite the table once with it
            rows = self._read(table)[1] if table.exists() else []
            header = header + [k for k in row if k not in header]
            self._write(table, header, [*rows, row])
            self.headers[table] = header
            return
        with open(_own_file(table), "a", encoding="utf-8", newline="") as fh:
            csv.DictWriter(fh, header).writerow(row)

    def close(self) -> None:
        self.root = None

    @staticmethod
    def _read(table: Path) -> tuple[list[str], list[dict[str, str]]]:
        text = _own_file(table).read_text(encoding="utf-8", errors="replace")
        reader = csv.DictReader(io.StringIO(text))
        rows = [r for r in reader if None not in r and None not in r.values()]  # a half-written row goes
        return list(reader.fieldnames or []), rows

    @staticmethod
    def _write(table: Path, header: list[str], rows: list[dict[str, str]]) -> None:
        tmp = table.with_name(f".{table.name}.tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, header, restval="")
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(_own_file(table))


def _int(text: str | None) -> int:
    try:
        return int(text or "")
    except ValueError:
        return sys.maxsize


class Loggers:
    """Every logger a run writes to, as one: started, fed and closed together (main process only)."""

    def __init__(self, loggers: list[Any], enabled: bool) -> None:
        self.loggers = loggers if enabled else []

    def start(self, out: Path, step: int) -> None:
        for logger in self.loggers:
            logger.start(out, step)

    def log(self, record: Mapping[str, Any]) -> None:
        for logger in self.loggers:
            logger.log(record)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
