"""The MLflow and W&B loggers, read back with each library's own reader: MLflow's tracking client,
and W&B's reader of an offline run's transaction log (`wandb leet inspect --json`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import zoo

TRAINER = {"type": "classifier", "max_steps": 20, "log_every": 10, "eval_every": 10, "progress": False}


def metrics(run: Path, split: str, key: str) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in rows if r.get("split") == split and key in r}


def test_a_local_store_only(make_config):
    with pytest.raises(zoo.SpecError, match="zoo logs to a local store only"):
        zoo.default_config().spec("loggers", {"type": "mlflow", "tracking_uri": "http://tracker:5000"})


def mlflow_runs(store: str, experiment: str) -> tuple[object, list]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    return client, client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def test_mlflow_run_read_back_with_mlflow_and_continued_on_resume(tmp_path, monkeypatch):
    """In a `file:` store (fast to create; MLflow asks for MLFLOW_ALLOW_FILE_STORE to use one)."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run, store = tmp_path / "r", f"file:{tmp_path / 'mlruns'}"
    logger = {"type": "mlflow", "tracking_uri": store, "experiment": "e"}
    zoo.train({**TRAINER, "loggers": [logger]}, run, model="simplenet-small")
    client, (found,) = mlflow_runs(store, "e")
    params = found.data.params
    assert params["trainer.max_steps"] == "20" and params["model.type"] == "simplenet"
    assert params["runtime.precision"] == "auto" and found.info.run_name == "r"
    history = client.get_metric_history(found.info.run_id, "train/loss")
    assert {m.step: m.value for m in history} == pytest.approx(metrics(run, "train", "loss"))
    val = client.get_metric_history(found.info.run_id, "val/val_accuracy")
    assert {m.step: m.value for m in val} == pytest.approx(metrics(run, "val", "val_accuracy"))
    assert found.info.status == "FINISHED"

    zoo.train({**TRAINER, "max_steps": 30, "loggers": [logger]}, run, model="simplenet-small", resume=True)
    client, (again,) = mlflow_runs(store, "e")  # the same MLflow run, continued
    steps = [m.step for m in client.get_metric_history(again.info.run_id, "train/loss")]
    assert again.info.run_id == found.info.run_id and sorted(steps) == [10, 20, 30]


@pytest.mark.slow  # a new sqlite store runs MLflow's schema migrations: ~10 s here
def test_mlflow_default_store_is_sqlite_in_the_run(tmp_path):
    pytest.importorskip("mlflow")
    run = tmp_path / "r"
    zoo.train({**TRAINER, "max_steps": 10, "loggers": ["mlflow"]}, run, model="simplenet-small")
    client, (found,) = mlflow_runs(f"sqlite:///{run / 'mlflow.db'}", "zoo")
    assert [m.step for m in client.get_metric_history(found.info.run_id, "train/loss")] == [10]


def wandb_records(run: Path) -> list[dict]:
    """Every record of the run's offline transaction log, as W&B's own reader prints them."""
    (log,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    wandb = Path(sys.executable).with_name("wandb")
    out = subprocess.run(
        [str(wandb), "leet", "inspect", "--json", str(log)], capture_output=True, text=True, check=True
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_wandb_offline_run_read_back_with_wandb(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = tmp_path / "r"
    trainer = {**TRAINER, "loggers": [{"type": "wandb", "project": "zoo-test", "tags": ["t"]}]}
    zoo.train(trainer, run, model="simplenet-small")
    records = wandb_records(run)
    (started,) = [r["run"] for r in records if r["type"] == "run"]
    assert started["project"] == "zoo-test" and started["display_name"] == "r" and started["tags"] == ["t"]
    config = started["config"]["update"]
    assert config["trainer"]["max_steps"] == 20 and config["model"]["type"] == "simplenet"
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    loss = {h["_step"]: h["train/loss"] for h in history if "train/loss" in h}
    assert loss == pytest.approx(metrics(run, "train", "loss"))
    val = {h["_step"]: h["val/val_loss"] for h in history if "val/val_loss" in h}
    assert val == pytest.approx(metrics(run, "val", "val_loss"))
