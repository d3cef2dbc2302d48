"""Loggers to the experiment trackers people already use: MLflow (a local tracking store) and
Weights & Biases (offline). Each library is imported when its logger starts, never by `zoo list`.

Both log the run's ``run.json`` (model, trainer, runtime, data, parent) as parameters / config,
and every train and validation figure as ``SPLIT/NAME`` at its step (``train/loss``,
``val/val_loss``), as the TensorBoard logger does. Neither reaches the network: MLflow writes to a
``sqlite:`` or ``file:`` store, W&B to ``RUN/wandb`` in offline mode (``wandb sync`` uploads it).
A resumed run continues the tracker's run recorded in ``RUN/trackers.json``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from zoo.errors import PluginError
from zoo.files import read_json
from zoo.rundir import RUN_FILE
from zoo.trainers.loggers import FIGURE_SPLITS, _own_file, scalars

TRACKERS_FILE = "trackers.json"  # each tracker's run id, so a resumed run continues it
MAX_PARAM = 6000  # MLflow's longest parameter value


def run_params(out: Path) -> dict[str, Any]:
    """``run.json`` (written before loggers start), or nothing when a run has none."""
    path = out / RUN_FILE
    data = read_json(path, PluginError) if path.is_file() else {}
    return data if isinstance(data, dict) else {}


def flat(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """``{"trainer": {"lr": 0.1}}`` -> ``("trainer.lr", "0.1")``; lists and null as JSON."""
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flat(value, f"{name}.")
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            yield name, text[:MAX_PARAM]


def figures(record: Mapping[str, Any]) -> tuple[int, dict[str, float]] | None:
    """A record's step and ``SPLIT/NAME`` figures, for the splits trackers draw (else None)."""
    split, step = record.get("split"), record.get("step")
    if split not in FIGURE_SPLITS or not isinstance(step, int):
        return None
    return step, {f"{split}/{name}": value for name, value in scalars(record).items()}


def recorded_id(out: Path, tracker: str, step: int) -> str | None:
    """The tracker's run id this run recorded, when it resumes (``step`` > 0)."""
    path = out / TRACKERS_FILE
    if step == 0 or not path.is_file():
        return None
    value = read_json(path, PluginError).get(tracker)
    return value if isinstance(value, str) else None


def record_id(out: Path, tracker: str, run_id: str) -> None:
    path = _own_file(out / TRACKERS_FILE)
    data = read_json(path, PluginError) if path.is_file() else {}
    path.write_text(json.dumps({**data, tracker: run_id}, indent=2) + "\n", encoding="utf-8")


class MlflowLogger:
    """Parameters and metric histories in an MLflow tracking store (``sqlite:`` or ``file:``;
    default ``sqlite:///RUN/mlflow.db``): ``mlflow ui --backend-store-uri URI`` shows them."""

    def __init__(self, tracking_uri: str | None, experiment: str, run_name: str | None) -> None:
        self.uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.client: Any = None
        self.run_id: str | None = None

    def start(self, out: Path, step: int) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = self.uri or f"sqlite:///{out.resolve() / 'mlflow.db'}"
        try:
            self.client = MlflowClient(tracking_uri=uri)
            self.run_id = recorded_id(out, "mlflow", step)
            if self.run_id is not None:  # params were logged when the run began; they cannot change
                self.client.update_run(self.run_id, status="RUNNING")
                return
            found = self.client.get_experiment_by_name(self.experiment)
            experiment = found.experiment_id if found else self.client.create_experiment(self.experiment)
            tags = {"zoo.run": str(out.resolve())}
            run = self.client.create_run(experiment, run_name=self.run_name or out.name, tags=tags)
            self.run_id = run.info.run_id
            self._params(run_params(out))
        except MlflowException as err:
            raise PluginError(f"mlflow logger ({uri}): {err.message}") from None
        record_id(out, "mlflow", self.run_id)

    def _params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flat(params)]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters a batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log(self, record: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        found = figures(record)
        if self.client is None or found is None:
            return
        step, values = found
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def close(self) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id)
        self.client = None


class WandbLogger:
    """A Weights & Biases run in offline mode under ``RUN/wandb`` (``wandb sync RUN/wandb/offline-run-*``
    uploads it): ``run.json`` as its config, figures as its history."""

    def __init__(self, project: str, run_name: str | None, tags: list[str]) -> None:
        self.project, self.run_name, self.tags = project, run_name, tags
        self.run: Any = None

    def start(self, out: Path, step: int) -> None:
        import wandb

        run_id = recorded_id(out, "wandb", step) or secrets.token_hex(4)  # W&B's ids: 8 lowercase characters
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, x_save_requirements=False)
        self.run = wandb.init(
            mode="offline",
            dir=str(out),
            project=self.project,
            name=self.run_name or out.name,
            tags=self.tags,
            id=run_id,
            resume="allow" if step else None,
            config=run_params(out),
            settings=settings,
            reinit="create_new",
        )
        record_id(out, "wandb", run_id)

    def log(self, record: Mapping[str, Any]) -> None:
        found = figures(record)
        if self.run is not None and found is not None:
            step, values = found
            self.run.log(values, step=step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
        self.run = None
