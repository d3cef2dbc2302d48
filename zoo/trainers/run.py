"""What callbacks see of a run (`zoo.protocols.TrainingRun`): its figures, its model and optimizer,
the checkpoints they ask for, and the models they add at the end.

A callback's state goes into every checkpoint: JSON values in ``state.json``, tensors (an EMA's
weights) in ``callbacks.safetensors`` beside it, so a resumed run continues exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo import checkpoints
from zoo.checkpointer import Checkpointer, check_name
from zoo.errors import ArtifactError, TrainingError
from zoo.runtime import Runtime
from zoo.trainers.specs import EngineSpec
from zoo.trainers.telemetry import StepFigures

TENSOR = "$tensor"  # {"$tensor": KEY} stands in state.json for the tensor KEY of callbacks.safetensors


class Run:
    """The run callbacks watch, and how they save a checkpoint or add a model to what is saved."""

    def __init__(self, out: Path, state: checkpoints.TrainState, spec: EngineSpec, runtime: Runtime) -> None:
        self.out, self.state, self.spec, self.runtime = out, state, spec, runtime
        self.checkpointer = Checkpointer(out, spec.keep_checkpoints, runtime.dist)
        self.max_steps = spec.max_steps
        self.is_main = runtime.is_main
        self.figures: StepFigures | None = None
        self.metrics: dict[str, float] = {}
        self.callbacks: list[Any] = []
        self.pending: list[str] = []  # named checkpoints callbacks asked for during the current event
        self.added: dict[str, nn.Module] = {}  # models callbacks add at the end: RUN/NAME

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def model(self) -> nn.Module:
        """The model being trained (not wrapped for DDP or compiled): read or change its weights."""
        return self.state.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.state.optimizer

    @property
    def loss(self) -> float:
        """The last step's training loss on this process (read from the device when asked)."""
        if self.figures is None:
            return math.nan
        self.figures.check()
        return self.figures.last_loss

    def save_checkpoint(self, name: str) -> None:
        """Ask for the full state as ``checkpoints/NAME`` (replacing one of that name), written once
        every callback has seen the current event, so it holds their updated state too."""
        if not check_name(name):
            raise TrainingError(f"checkpoint name {name!r}: use letters, digits, '-' and '_' (e.g. 'best')")
        if name not in self.pending:
            self.pending.append(name)

    def add_model(self, name: str, model: nn.Module) -> None:
        """At ``on_train_end``: save ``model`` too, as the artifact ``RUN/NAME`` beside ``RUN/model``."""
        plain = name.replace("-", "").replace("_", "").isalnum() and name[:1].isalpha()
        if not plain or name in ("model", "checkpoints", "adapter", "data"):
            raise TrainingError(f"add_model({name!r}): use letters, digits, '-' and '_', not a name zoo uses")
        self.added[name] = model

    def notify(self, event: str, *args: Any) -> None:
        """Call ``callback.EVENT(run, *args)`` on every callback, then write the checkpoints they asked for."""
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)
        while self.pending:
            self.write_checkpoint(self.pending.pop(0))

    def write_checkpoint(self, name: str | None = None) -> Path | None:
        """The full state now, with every callback's: ``checkpoints/step-N`` (the last ``keep``
        are kept), or ``checkpoints/NAME``. A collective; returns the path on rank 0."""
        if self.figures is not None:  # never save weights a non-finite step has reached
            self.figures.check()
        saved, self.state.tensors = [], {}
        for i, cb in enumerate(self.callbacks):
            state = split_tensors(cb.state_dict(), f"{i}", self.state.tensors)
            saved.append({"type": type(cb).__name__, "state": state})
        self.state.extra["callbacks"] = saved
        path = self.checkpointer.write(self.state, name)  # every rank: under FSDP a collective
        self.runtime.dist.barrier()
        return path

    def restore_callbacks(self) -> None:
        saved = self.state.extra.get("callbacks", [])
        for i, cb in enumerate(self.callbacks):
            entry = saved[i] if isinstance(saved, list) and i < len(saved) else None
            if isinstance(entry, dict) and entry.get("type") == type(cb).__name__:
                where = f"callback {i} ({type(cb).__name__})"
                cb.load_state_dict(join_tensors(entry.get("state") or {}, self.state.tensors, where))

    def stop_reason(self) -> str | None:
        """Why a callback stops the run; every process stops when any does (else the others would hang)."""
        if not self.callbacks:
            return None
        why = next((why for cb in self.callbacks if (why := cb.should_stop(self))), None)
        if self.runtime.dist.any_failed(why is not None) and why is None:
            why = "a callback on another process asked to stop"
        return why


def split_tensors(state: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``state`` with each tensor replaced by ``{"$tensor": KEY}`` and put in ``tensors`` (on the CPU)."""
    if isinstance(state, torch.Tensor):
        tensors[key] = state.detach().to("cpu", copy=True).contiguous()
        return {TENSOR: key}
    if isinstance(state, Mapping):
        return {k: split_tensors(v, f"{key}.{k}", tensors) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return [split_tensors(v, f"{key}.{i}", tensors) for i, v in enumerate(state)]
    return state


def join_tensors(state: Any, tensors: Mapping[str, torch.Tensor], where: str) -> Any:
    """The inverse of `split_tensors`; a missing tensor is an `ArtifactError` naming the callback."""
    if isinstance(state, Mapping):
        if set(state) == {TENSOR}:
            key = state[TENSOR]
            if not isinstance(key, str) or key not in tensors:
                raise ArtifactError(f"{where}: its state names a tensor {key!r} the checkpoint does not hold")
            return tensors[key]
        return {k: join_tensors(v, tensors, where) for k, v in state.items()}
    if isinstance(state, list):
        return [join_tensors(v, tensors, where) for v in state]
    return state
