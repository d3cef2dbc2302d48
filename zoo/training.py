"""Train from names: the path `zoo train` and `zoo.train` share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.api import attach, check_protocol
from zoo.config import Config
from zoo.engine import FitResult


def train_from_config(
    cfg: Config,
    model: Any,
    trainer: Any,
    out: str | Path,
    *,
    data: str | Path | None = None,
    resume: bool = False,
    force: bool = False,
) -> FitResult:
    """Build model and trainer from names/dicts/specs, train, and save the model in ``out/model``."""
    from zoo.artifacts import save
    from zoo.runtime import Runtime

    mspec = cfg.spec("models", model)
    tspec = cfg.spec("trainers", trainer)
    check_protocol(tspec, mspec)  # type: ignore[arg-type]
    runtime = Runtime(cfg.runtime)
    runtime.seed_everything()
    module = attach(mspec.build(), mspec)  # type: ignore[arg-type]
    run_info = {
        "model": mspec.model_dump(mode="json"),
        "trainer": tspec.model_dump(mode="json"),
        "runtime": cfg.runtime.model_dump(mode="json"),
        "data": str(data) if data is not None else None,
    }

    def save_artifact(path: Path, trained: Any) -> Path:
        return save(trained, path, overwrite=True, config=cfg)

    result: FitResult = tspec.build().fit(
        module,
        runtime,
        out,
        data=data,
        resume=resume,
        force=force,
        run_info=run_info,
        save_artifact=save_artifact,
        inputs=[("--registry", cfg.source)],
    )
    return result
