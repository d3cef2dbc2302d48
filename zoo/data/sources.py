"""Choose and open the data source for a path: the registered formats, matched one way only."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo.errors import DataError, UnknownNameError, ZooError
from zoo.files import why_unreadable
from zoo.registry import DataSourceEntry, Registry


def choose(registry: Registry, path: Path, protocol: str, data_format: str | None = None) -> DataSourceEntry:
    """The source ``data_format`` names, else the folder source, else the one for the suffix."""
    mine = {name: s for name, s in sorted(registry.data_sources.items()) if s.protocol == protocol}
    if data_format is not None:
        entry = registry.data_sources.get(data_format)
        if entry is None:
            raise UnknownNameError("data source", data_format, registry.data_sources)
        if entry.protocol != protocol:
            raise DataError(f"data source {data_format!r} reads {entry.protocol} data, not {protocol} data")
        return entry
    if path.exists() and not os.access(path, os.R_OK):
        raise DataError(f"{path}: permission denied")
    if path.is_dir():
        folders = [s for s in mine.values() if s.folder]
        if not folders:
            raise DataError(f"{path}: a folder, but no {protocol} data source reads folders; give a file")
        return folders[0]
    if not path.is_file():
        raise DataError(f"{path}: {why_unreadable(path)}")
    suffix = path.suffix.lower()
    for wanted in (suffix, "*"):
        for entry in mine.values():
            if wanted in entry.suffixes:
                return entry
    known = sorted({e for s in mine.values() for e in s.suffixes})
    raise DataError(
        f"{path}: no {protocol} data source reads {suffix or 'files without a suffix'}; "
        f"known: {', '.join(known) or '(none)'} (or set the trainer's data_format: {', '.join(mine) or 'none'})"
    )


def open_data(
    registry: Registry,
    path: str | Path,
    protocol: str,
    *,
    data_format: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Any:
    """Read ``path`` with its data source; `DataError` for anything wrong (naming the file)."""
    path = Path(path)
    entry = choose(registry, path, protocol, data_format)
    try:
        return entry.read(path, dict(options or {}))
    except ZooError:
        raise
    except Exception as err:  # a plugin's reader failed in a way it did not report
        raise DataError(
            f"{path}: data source {entry.name!r} ({entry.distribution} {entry.version}) failed: "
            f"{type(err).__name__}: {err}"
        ) from err
