"""Specs of the standard trainers (pure pydantic: importing this never imports torch)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from zoo.errors import PluginError
from zoo.protocols import InputKind
from zoo.specs import MAX_SEED, STRICT, CallbackSpec, Kind, LoggerSpec, ScheduleSpec, Spec, TrainerSpec


class LoraSpec(BaseModel):
    """`lora` of a trainer: which layers get an adapter, and its size."""

    model_config = STRICT

    rank: int = Field(8, ge=1, le=1024, description="rank r of the update B (out x r) @ A (r x in)")
    alpha: float = Field(16.0, gt=0.0, description="the update is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the adapter's input")
    targets: list[str] = Field(
        default_factory=lambda: ["*attn*", "*mlp*"],
        min_length=1,
        description="fnmatch patterns on module paths (e.g. 'blocks.*.attn.qkv'); linear layers that match get one",
    )


class JsonlLoggerSpec(LoggerSpec):
    """``RUN/metrics.jsonl``, one JSON record per line: the record every run keeps."""

    type: Literal["jsonl"] = "jsonl"

    def build(self) -> Any:
        from zoo.trainers.loggers import JsonlLogger

        return JsonlLogger()


class TensorBoardLoggerSpec(LoggerSpec):
    """TensorBoard event files in ``RUN/tensorboard`` (``tensorboard --logdir RUN``)."""

    type: Literal["tensorboard"] = "tensorboard"

    def build(self) -> Any:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise PluginError("the tensorboard logger needs the tensorboard package: pip install 'zoo[tensorboard]'")
        from zoo.trainers.loggers import TensorBoardLogger

        return TensorBoardLogger()


class CsvLoggerSpec(LoggerSpec):
    """One CSV table per split: ``RUN/csv/train.csv``, ``RUN/csv/val.csv``."""

    type: Literal["csv"] = "csv"

    def build(self) -> Any:
        from zoo.trainers.loggers import CsvLogger

        return CsvLogger()


def _library(module: str, extra: str) -> None:
    """A logger's library must be installed: checked when the trainer is built, before the run folder."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise PluginError(f"the {extra} logger needs the {module} package: pip install 'zoo[{extra}]'")


class MlflowLoggerSpec(LoggerSpec):
    """MLflow: parameters (run.json) and metric histories in a local tracking store (``zoo[mlflow]``)."""

    type: Literal["mlflow"] = "mlflow"
    tracking_uri: str | None = Field(
        None,
        description="a local store: sqlite:///PATH.db (MLflow's default backend) or file:PATH (MLflow refuses "
        "its file store unless MLFLOW_ALLOW_FILE_STORE=true); null: sqlite:///RUN/mlflow.db",
    )
    experiment: str = Field("zoo", min_length=1, max_length=500, description="the MLflow experiment's name")
    run_name: str | None = Field(None, max_length=250, description="the MLflow run's name; null: the run folder's")

    @field_validator("tracking_uri")
    @classmethod
    def _local(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite:", "file:")):
            raise ValueError(
                f"{value!r}: zoo logs to a local store only (sqlite:///PATH.db or file:PATH); "
                "a tracking server is reached over the network"
            )
        return value

    def build(self) -> Any:
        _library("mlflow", "mlflow")
        from zoo.trainers.trackers import MlflowLogger

        return MlflowLogger(self.tracking_uri, self.experiment, self.run_name)


class WandbLoggerSpec(LoggerSpec):
    """Weights & Biases in offline mode: RUN/wandb, uploaded later with ``wandb sync`` (``zoo[wandb]``)."""

    type: Literal["wandb"] = "wandb"
    project: str = Field("zoo", min_length=1, max_length=128, description="the W&B project")
    run_name: str | None = Field(None, max_length=128, description="the W&B run's name; null: the run folder's")
    tags: list[str] = Field(default_factory=list, max_length=64, description="W&B tags of the run")

    def build(self) -> Any:
        _library("wandb", "wandb")
        from zoo.trainers.trackers import WandbLogger

        return WandbLogger(self.project, self.run_name, self.tags)


class WatchSpec(CallbackSpec):
    """A callback that watches one evaluation figure (a base: not registered itself)."""

    metric: str = Field("val_loss", min_length=1, description="an evaluation figure, e.g. val_loss or val_accuracy")
    mode: Literal["min", "max"] = Field("min", description="min: lower is better; max: higher is better")


class EarlyStoppingSpec(WatchSpec):
    """Stop training when a metric stops improving (checked at each evaluation)."""

    type: Literal["early-stopping"] = "early-stopping"
    patience: int = Field(3, ge=1, le=1 << 40, description="evaluations without improvement before stopping")
    min_delta: float = Field(0.0, ge=0.0, description="a smaller change does not count as an improvement")

    def build(self) -> Any:
        from zoo.trainers.callbacks import EarlyStopping

        return EarlyStopping(self.metric, self.mode, self.patience, self.min_delta)


class BestCheckpointSpec(WatchSpec):
    """Keep the checkpoint with the best metric as ``checkpoints/best`` (``--resume best``)."""

    type: Literal["best-checkpoint"] = "best-checkpoint"

    def build(self) -> Any:
        from zoo.trainers.callbacks import BestCheckpoint

        return BestCheckpoint(self.metric, self.mode)


class EMASpec(CallbackSpec):
    """An exponential moving average of the weights, saved as the run's model (or beside it)."""

    type: Literal["ema"] = "ema"
    decay: float = Field(0.999, gt=0.0, lt=1.0, description="ema = decay * ema + (1 - decay) * weights")
    every: int = Field(1, ge=1, le=1 << 40, description="update the average every N optimizer steps")
    start_step: int = Field(0, ge=0, le=1 << 40, description="the first step the average takes in")
    final: Literal["ema", "raw"] = Field(
        "ema", description="ema: RUN/model is the average (RUN/model-raw the trained weights); raw: the reverse"
    )

    def build(self) -> Any:
        from zoo.trainers.callbacks import EMA

        return EMA(self.decay, self.every, self.start_step, self.final)


Ref = str | dict[str, Any]  # a preset or type name, or an inline spec table
DEFAULT_TYPES = {"optimizer": "adamw", "schedule": "constant"}  # of a table that names no type


class EngineSpec(TrainerSpec):
    """Fields every trainer built on the training engine shares."""

    max_steps: int = Field(1000, gt=0, le=1 << 40, description="optimizer steps to run")
    batch_size: int = Field(32, gt=0, le=1 << 24, description="examples per optimizer step, over all processes")
    grad_accum: int = Field(1, ge=1, le=1 << 24, description="micro-batches per optimizer step (divides batch_size)")
    lr: float = Field(1e-3, gt=0.0, description="peak learning rate")
    optimizer: Ref = Field(
        "adamw",
        description="adamw | adam | sgd | muon | a plugin's or a preset (zoo list optimizers), or a table "
        "such as {type = 'adamw', weight_decay = 0.1}",
    )
    schedule: Ref = Field(
        "constant",
        description="constant | step | cosine | linear | warmup-stable-decay | a plugin's or a preset "
        "(zoo list schedules), or a table such as {type = 'cosine', warmup_steps = 100}",
    )
    grad_clip: float | None = Field(1.0, gt=0.0, description="clip the global gradient norm; null disables")
    eval_every: int = Field(100, ge=0, le=1 << 40, description="evaluate every N steps (0: only at the end)")
    eval_batches: int = Field(10, gt=0, le=1 << 24, description="validation batches per evaluation")
    log_every: int = Field(10, gt=0, le=1 << 40, description="append training metrics every N steps")
    checkpoint_every: int = Field(0, ge=0, le=1 << 40, description="checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = Field(2, ge=1, le=1 << 20, description="how many recent checkpoints to keep")
    progress: bool = Field(True, description="show a progress bar with the live loss")
    data: str | None = Field(None, description="data file or folder (--data overrides); null: the trainer's default")
    data_format: str | None = Field(
        None, description="the data source that reads `data` (zoo plugins lists them); null: by folder or suffix"
    )
    lora: LoraSpec | None = Field(
        None, description="train low-rank adapters only (zoo train --lora); null trains every parameter"
    )
    loggers: list[Ref] = Field(
        default_factory=lambda: list[Ref](["jsonl"]),
        description="where metrics go: jsonl | tensorboard | csv | mlflow | wandb | a plugin's "
        "(metrics.jsonl is always written)",
    )
    callbacks: list[Ref] = Field(
        default_factory=list,
        description="e.g. ['best-checkpoint', {type = 'early-stopping', patience = 5}] (zoo list callbacks)",
    )
    data_options: dict[str, str | int | float | bool | list[int]] = Field(
        default_factory=dict, description="options for the data source, e.g. {label_column = 'species'}"
    )

    def references(self) -> list[tuple[Kind, str, str | dict[str, Any]]]:
        listed: list[tuple[Kind, list[Ref]]] = [("loggers", self.loggers), ("callbacks", self.callbacks)]
        refs: list[tuple[Kind, str, Ref]] = [(k, f"{k}[{i}]", r) for k, named in listed for i, r in enumerate(named)]
        return [*refs, ("optimizers", "optimizer", self.optimizer), ("schedules", "schedule", self.schedule)]

    # the figures this trainer's evaluation reports (None: not declared, watched metrics unchecked)
    metrics: ClassVar[tuple[str, ...] | None] = None

    def check_reference(self, named: Spec) -> None:
        if isinstance(named, ScheduleSpec):
            named.for_steps(self.max_steps)[0].check_steps(self.max_steps)
        if isinstance(named, WatchSpec) and self.metrics is not None and named.metric not in self.metrics:
            raise ValueError(
                f"{named.type} watches {named.metric!r}, which a {self.type} trainer's evaluation never reports "
                f"(it reports {', '.join(self.metrics)})"
            )

    @field_validator("optimizer", "schedule", mode="before")
    @classmethod
    def _typed_table(cls, value: Any, info: ValidationInfo) -> Any:
        """A table names its type in ``type``. ``name`` is read as ``type`` (its spelling when
        optimizers and schedules were one table of every setting), and a table naming neither is
        the default type with the fields given, so registry files from then keep working."""
        if not isinstance(value, Mapping):
            return value
        table = dict(value)
        if "name" in table and table.get("type", table["name"]) == table["name"]:
            table["type"] = table.pop("name")
        table.setdefault("type", DEFAULT_TYPES[info.field_name or ""])
        if not _finite(table):  # checked here too: the spec must survive its JSON round trip (run.json)
            raise ValueError("numbers in the table must be finite (an infinite or NaN setting is a mistake)")
        return table

    @model_validator(mode="after")
    def _consistent(self) -> Any:
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size ({self.batch_size}) must be divisible by grad_accum ({self.grad_accum})")
        return self


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True


class SyntheticSpec(BaseModel):
    """A classification set with a known reachable accuracy (labels from a random linear teacher)."""

    model_config = STRICT

    n_samples: int = Field(4096, ge=16, le=1 << 28, description="examples (train + validation)")
    label_noise: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of labels replaced at random")
    seed: int = Field(1234, ge=0, le=MAX_SEED, description="seed of the generated data (independent of runtime.seed)")


class ClassifierTrainerSpec(EngineSpec):
    """Cross-entropy training of a classifier on features or images (.npz, .csv, an image folder)."""

    type: Literal["classifier"] = "classifier"
    protocol = "classifier"
    metrics = ("val_loss", "val_accuracy")
    input_kinds: ClassVar[tuple[InputKind, ...]] = ("features", "images")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of examples held out for validation")
    synthetic: SyntheticSpec = Field(default_factory=SyntheticSpec, description="synthetic data settings")

    builder = "zoo.trainers.classifier:ClassifierTrainer"
