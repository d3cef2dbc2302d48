"""``run.json``: what a run was started with, checked again when it resumes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from zoo.errors import RunDirError
from zoo.files import LENIENT, read_model
from zoo.runtime import Runtime


class RunInfo(BaseModel):
    """``run.json``: what a run was started with (a resume must match its model)."""

    model_config = LENIENT
    model: dict[str, Any] = Field(default_factory=dict)
    trainer: dict[str, Any] = Field(default_factory=dict)
    init_from: dict[str, Any] | None = None  # the parent of a fine-tune: {"path", "sha256"} (+ a hub's revision, files)


def check_run_info(path: Path, info: dict[str, Any], *, resume: bool, runtime: Runtime) -> None:
    """A resumed run must train the same model spec it started with.

    Every rank reads ``run.json`` before the main process rewrites it (a barrier in between), so
    no rank ever reads a half-written file, and all ranks fail alike on a mismatch.
    """
    if resume and path.exists():
        before = read_model(path, RunInfo)
        if (before.model or None) != (info.get("model") or None):
            raise RunDirError(
                f"{path.parent} was started with a different model spec; resume it with the same "
                "--model, or start a new run with another --out"
            )
    runtime.dist.barrier()
    if runtime.is_main:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(path)
