"""Loggers and callbacks as plugin kinds: TensorBoard/CSV curves, early stopping, the best
checkpoint, ``--resume last|best|PATH``, and exact resume with callback state."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Literal

import pytest
import torch
from helpers import crash_sampling_at, make_module

import zoo
from zoo.cli import main
from zoo.runtime import Runtime
from zoo.trainers.classifier import ClassificationTask
from zoo.trainers.specs import ClassifierTrainerSpec
from zoo.trainers.telemetry import LogWindow, flops_per_unit, peak_for
from zoo.trainers.telemetry import postfix as _postfix

MODEL = {"type": "simplenet", "in_features": 8, "hidden": [32], "num_classes": 3, "dropout": 0.1}
BASE = {"batch_size": 16, "eval_every": 10, "log_every": 5, "checkpoint_every": 10, "progress": False, "lr": 1e-2}


def fit(out: Path, *, resume: bool | str | Path = False, config=None, **trainer):
    torch.manual_seed(0)
    model = zoo.build_model(MODEL, config=config)
    spec = ClassifierTrainerSpec(**{**BASE, "max_steps": 30, **trainer})
    result = spec.build().fit(model, Runtime(device="cpu", seed=3), out, resume=resume, config=config)
    return model, result


def records(out: Path, split: str) -> list[dict]:
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x["split"] == split]


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_tensorboard_and_csv_hold_what_metrics_jsonl_holds(tmp_path):
    fit(tmp_path / "r", loggers=["tensorboard", "csv"])
    train, val = records(tmp_path / "r", "train"), records(tmp_path / "r", "val")
    assert [r["step"] for r in train] == [5, 10, 15, 20, 25, 30] and [r["step"] for r in val] == [10, 20, 30]
    assert {"loss", "lr", "grad_norm", "examples_per_s"} <= set(train[0])
    tb = scalars(tmp_path / "r")
    for name in ("loss", "lr", "grad_norm", "examples_per_s"):
        assert tb[f"train/{name}"] == [(r["step"], pytest.approx(r[name], rel=1e-6)) for r in train]
    assert tb["val/val_accuracy"] == [(r["step"], pytest.approx(r["val_accuracy"], rel=1e-6)) for r in val]
    rows = table(tmp_path / "r" / "csv" / "train.csv")
    assert [(int(r["step"]), float(r["loss"]), float(r["grad_norm"])) for r in rows] == [
        (r["step"], r["loss"], r["grad_norm"]) for r in train
    ]
    assert [float(r["val_loss"]) for r in table(tmp_path / "r" / "csv" / "val.csv")] == [r["val_loss"] for r in val]


def test_resumed_run_logs_one_history_everywhere(tmp_path, monkeypatch):
    crash_sampling_at(monkeypatch, ClassificationTask, 17)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "r", loggers=["tensorboard", "csv"])
    monkeypatch.undo()
    fit(tmp_path / "r", resume=True, loggers=["tensorboard", "csv"])
    want = [5, 10, 15, 20, 25, 30]
    assert [r["step"] for r in records(tmp_path / "r", "train")] == want
    assert [step for step, _ in scalars(tmp_path / "r")["train/loss"]] == want  # purge_step dropped 15 of the crash
    assert [int(r["step"]) for r in table(tmp_path / "r" / "csv" / "train.csv")] == want


EARLY = {"type": "early-stopping", "metric": "val_loss", "patience": 2, "min_delta": 0.2}


def test_early_stopping_stops_with_a_checkpoint_and_resumes_exactly(tmp_path, monkeypatch):
    straight, result = fit(tmp_path / "a", max_steps=100, callbacks=[EARLY])
    # val_loss 0.98, 0.68, 0.50, 0.43, 0.36, 0.30: by more than 0.2 only at 20 and 40
    assert result.steps == 60
    (event,) = records(tmp_path / "a", "event")
    assert event["step"] == 60 and "val_loss has not improved for 2 evaluations" in event["reason"]
    assert (tmp_path / "a" / "checkpoints" / "step-00000060").is_dir()

    # killed after the checkpoint at 50, which holds one evaluation without improvement
    crash_sampling_at(monkeypatch, ClassificationTask, 57)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "b", max_steps=100, callbacks=[EARLY])
    monkeypatch.undo()
    resumed, result = fit(tmp_path / "b", resume=True, max_steps=100, callbacks=[EARLY])
    assert result.steps == 60, "the patience count must come back from the checkpoint"
    assert same_weights(straight, resumed)


def test_best_checkpoint_then_resume_best_or_a_path_continues_exactly(tmp_path):
    # mode "max" on val_loss makes the first evaluation the best one, so best sits behind the last
    best = [{"type": "best-checkpoint", "metric": "val_loss", "mode": "max"}]
    straight, _ = fit(tmp_path / "r", callbacks=best)
    ckpts = tmp_path / "r" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best", "step-00000020", "step-00000030"]
    state = json.loads((ckpts / "best" / "state.json").read_text())
    assert state["step"] == 10 and state["extra"]["callbacks"][0]["state"]["best_step"] == 10

    resumed, result = fit(tmp_path / "r", resume="best", callbacks=best)
    assert result.steps == 30 and same_weights(straight, resumed)  # 20 steps trained again from step 10
    assert sorted(p.name for p in (ckpts / "set-aside").iterdir()) == ["step-00000020", "step-00000030"]
    assert [r["step"] for r in records(tmp_path / "r", "val")] == [10, 20, 30]
    # the callback's state came back with the weights: steps 20 and 30 did not beat step 10's value
    state = json.loads((ckpts / "best" / "state.json").read_text())
    assert state["step"] == 10 and state["extra"]["callbacks"][0]["state"]["best_step"] == 10

    again, _ = fit(tmp_path / "r", resume=ckpts / "step-00000020", callbacks=best)
    assert same_weights(straight, again)
    # exactly the later ones were set aside: the one resumed from stays where it was
    assert sorted(p.name for p in ckpts.iterdir()) == ["best", "set-aside", "step-00000020", "step-00000030"]
    assert sorted(p.name for p in (ckpts / "set-aside").iterdir()) == ["step-00000020", "step-00000030"]


def test_resume_best_without_one_and_a_bad_logger_are_one_message(tmp_path, capsys):
    args = ["train", "--model", json.dumps(MODEL), "--device", "cpu"]
    trainer = {"type": "classifier", "max_steps": 5, "progress": False}
    assert main([*args, "--out", str(tmp_path / "r"), "--trainer", json.dumps(trainer)]) == 0
    before = (tmp_path / "r" / "run.json").read_text()
    assert main([*args, "--out", str(tmp_path / "r"), "--trainer", json.dumps(trainer), "--resume", "best"]) == 2
    assert "no best checkpoint" in capsys.readouterr().err
    assert (tmp_path / "r" / "run.json").read_text() == before
    bad = {**trainer, "loggers": ["jsonl", "tensorbord"]}
    assert main([*args, "--out", str(tmp_path / "new"), "--trainer", json.dumps(bad)]) == 2
    err = capsys.readouterr().err
    assert "loggers[1]" in err and "did you mean 'tensorboard'" in err and "Traceback" not in err
    assert not (tmp_path / "new").exists()


def test_a_plugin_registers_a_logger_and_a_stopping_callback(tmp_path, make_config):
    seen: list[dict] = []

    class ListLoggerSpec(zoo.LoggerSpec):
        """Keeps the records in a list."""

        type: Literal["list"] = "list"

        def build(self):
            class ListLogger:
                def start(self, out, step):
                    seen.append({"start": step})

                def log(self, record):
                    seen.append(dict(record))

                def close(self):
                    seen.append({"closed": True})

            return ListLogger()

    class StopAtSpec(zoo.CallbackSpec):
        """Stops at a given step."""

        type: Literal["stop-at"] = "stop-at"
        step: int = zoo.Field(7, gt=0, description="the step to stop at")

        def build(self):
            at = self.step

            class StopAt(zoo.Callback):
                def should_stop(self, run):
                    return f"asked to stop at {at}" if run.step >= at else None

            return StopAt()

    plugin = make_module(
        "extras",
        zoo_register_loggers=zoo.hookimpl(lambda register: register(ListLoggerSpec)),
        zoo_register_callbacks=zoo.hookimpl(lambda register: register(StopAtSpec)),
    )
    cfg = make_config({}, plugin)
    assert "stop-at" in cfg.names("callbacks") and "list" in cfg.names("loggers")
    _, result = fit(tmp_path / "r", config=cfg, loggers=["list"], callbacks=[{"type": "stop-at", "step": 7}])
    assert result.steps == 7
    assert seen[0] == {"start": 0} and seen[-1] == {"closed": True}
    assert [r.get("step") for r in seen if r.get("split") == "train"] == [5, 7]
    assert any(r.get("reason") == "asked to stop at 7" for r in seen)
    assert (tmp_path / "r" / "metrics.jsonl").is_file()  # the record is kept whatever else is named


def test_mfu_estimate_from_throughput_and_the_device_peak():
    assert peak_for("NVIDIA H200") == 989e12 and peak_for("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_for("NVIDIA A10G") == 125e12 and peak_for("Some CPU") is None
    model = torch.nn.Linear(10, 10)
    assert flops_per_unit(model, "tokens") == 6 * 110 and flops_per_unit(model, "examples") == 0
    window = LogWindow(flops_per_unit=6e6, peak=1e12)
    window.units, window.start = 1000, window.start - 1.0
    window.add(2.0)
    record = window.flush(Runtime(device="cpu"), 1, 1e-3, 0.5, "tokens")
    assert record["mfu"] == pytest.approx(record["tokens_per_s"] * 6e6 / 1e12)
    assert 0.005 < record["mfu"] < 0.0061  # ~1000 tokens/s x 6 MFLOP on a 1 TFLOP/s device
    assert {"loss", "lr", "gnorm", "tokens/s", "mfu"} == set(_postfix(record))  # the progress bar shows them
    assert "mfu" not in LogWindow().flush(Runtime(device="cpu"), 1, 1e-3, 0.5, "tokens")


def test_a_registry_file_naming_a_missing_logger_or_a_bad_callback_fails_zoo_check(tmp_path, capsys):
    (tmp_path / "registry.toml").write_text(
        '[trainers.watched]\nbase = "lm"\nloggers = ["jsonl", "tensorbord"]\n'
        'callbacks = [{ type = "early-stopping", patience = 0 }]\n'
    )
    assert main(["check", str(tmp_path / "registry.toml")]) == 2
    err = capsys.readouterr().err
    assert "trainers.watched.loggers[1]: unknown logger 'tensorbord'; did you mean 'tensorboard'?" in err
    assert "trainers.watched.callbacks[0]: early-stopping.patience: Input should be greater than or equal to 1" in err


def test_csv_tables_widen_for_a_new_figure_and_drop_rows_past_a_resumed_step(tmp_path):
    from zoo.trainers.loggers import CsvLogger

    logger = CsvLogger()
    logger.start(tmp_path, 0)
    logger.log({"step": 1, "split": "train", "loss": 2.0})
    logger.log({"step": 2, "split": "train", "loss": 1.5, "loss_scale": 1024.0})  # a figure that comes later
    logger.log({"step": 3, "split": "train", "loss": 1.25})
    logger.log({"step": 3, "split": "event", "event": "stopped"})  # events stay in metrics.jsonl
    logger.close()
    assert table(tmp_path / "csv" / "train.csv") == [
        {"step": "1", "loss": "2.0", "loss_scale": ""},
        {"step": "2", "loss": "1.5", "loss_scale": "1024.0"},
        {"step": "3", "loss": "1.25", "loss_scale": ""},
    ]
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == ["train.csv"]
    CsvLogger().start(tmp_path, 2)
    assert [r["step"] for r in table(tmp_path / "csv" / "train.csv")] == ["1", "2"]
