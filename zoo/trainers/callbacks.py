"""Callbacks: the `Callback` base a plugin subclasses, and the standard early stopping, best
checkpoint and exponential moving average of the weights.

The engine runs every callback on every process with the same figures (the evaluation is the
same on all of them), so a callback that saves a checkpoint, a collective, calls it everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from zoo.errors import TrainingError
from zoo.protocols import TrainingRun


class Callback:
    """Base of callbacks: every method does nothing; override the ones you need.

    State that must survive a resume goes in ``state_dict`` (JSON-able values and tensors, nested
    in dicts and lists); the engine stores it in every checkpoint (the tensors as safetensors) and
    hands it back to ``load_state_dict``, tensors on the CPU.
    """

    def on_step_end(self, run: TrainingRun) -> None:
        """After each optimizer step (``run.step`` steps done, ``run.loss`` the step's loss)."""

    def on_eval(self, run: TrainingRun, metrics: Mapping[str, float]) -> None:
        """After each evaluation, with its figures (``val_loss``, ...)."""

    def on_checkpoint(self, run: TrainingRun, path: Path) -> None:
        """After each checkpoint the engine writes (``path`` is on the main process only)."""

    def should_stop(self, run: TrainingRun) -> str | None:
        """Why the run should stop now, or None to go on."""
        return None

    def on_train_end(self, run: TrainingRun) -> None:
        """After the last step, before ``RUN/model`` is saved: change ``run.model``'s weights to
        choose what is saved, or ``run.add_model(NAME, module)`` to save more."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class Watch:
    """The best value of one metric so far, by ``mode`` (lower or higher is better)."""

    def __init__(self, metric: str, mode: Literal["min", "max"], min_delta: float = 0.0) -> None:
        self.metric, self.mode, self.min_delta = metric, mode, min_delta
        self.best: float | None = None
        self.best_step = 0

    def value(self, metrics: Mapping[str, float], owner: str) -> float:
        if self.metric not in metrics:
            raise TrainingError(
                f"{owner}: the evaluation has no {self.metric!r} (it has {', '.join(sorted(metrics))}); "
                "set the callback's metric to one of those"
            )
        return float(metrics[self.metric])

    def improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        gain = self.best - value if self.mode == "min" else value - self.best
        return gain > self.min_delta

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step}

    def restore(self, state: Mapping[str, Any]) -> None:
        best = state.get("best")
        self.best = float(best) if isinstance(best, int | float) else None
        self.best_step = int(state.get("best_step", 0))


class EarlyStopping(Callback):
    """Stop when ``metric`` has not improved by more than ``min_delta`` for ``patience`` evaluations."""

    def __init__(self, metric: str, mode: Literal["min", "max"], patience: int, min_delta: float) -> None:
        self.watch = Watch(metric, mode, min_delta)
        self.patience = patience
        self.bad_evals = 0

    def on_eval(self, run: TrainingRun, metrics: Mapping[str, float]) -> None:
        value = self.watch.value(metrics, "early-stopping")
        if self.watch.improves(value):
            self.watch.best, self.watch.best_step, self.bad_evals = value, run.step, 0
        else:
            self.bad_evals += 1

    def should_stop(self, run: TrainingRun) -> str | None:
        if self.bad_evals < self.patience:
            return None
        w = self.watch
        return (
            f"early stopping: {w.metric} has not improved for {self.bad_evals} evaluation"
            f"{'s' if self.bad_evals != 1 else ''} "
            f"(best {w.best:.4f} at step {w.best_step})"
        )

    def state_dict(self) -> dict[str, Any]:
        return {**self.watch.state(), "bad_evals": self.bad_evals}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.watch.restore(state)
        self.bad_evals = int(state.get("bad_evals", 0))


class BestCheckpoint(Callback):
    """Keep the checkpoint with the best ``metric`` as ``checkpoints/best``, beside the last ones
    (``zoo train --resume best`` continues from it)."""

    def __init__(self, metric: str, mode: Literal["min", "max"]) -> None:
        self.watch = Watch(metric, mode)

    def on_eval(self, run: TrainingRun, metrics: Mapping[str, float]) -> None:
        value = self.watch.value(metrics, "best-checkpoint")
        if self.watch.improves(value):
            self.watch.best, self.watch.best_step = value, run.step
            run.save_checkpoint("best")  # after the update: the checkpoint holds this very state

    def state_dict(self) -> dict[str, Any]:
        return self.watch.state()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.watch.restore(state)


class EMA(Callback):
    """An exponential moving average of the weights, ``ema = decay * ema + (1 - decay) * w`` after
    every ``every`` optimizer steps from ``start_step`` on (kept in fp32 on the model's device).

    At the end, ``final="ema"`` saves the average as ``RUN/model`` and the trained weights as
    ``RUN/model-raw``; ``final="raw"`` keeps the trained weights as ``RUN/model`` and adds the
    average as ``RUN/model-ema``.
    """

    def __init__(self, decay: float, every: int, start_step: int, final: Literal["ema", "raw"]) -> None:
        self.decay, self.every, self.start_step, self.final = decay, every, start_step, final
        self.shadow: dict[str, torch.Tensor] = {}
        self.updates = 0

    def on_step_end(self, run: TrainingRun) -> None:
        if run.step < self.start_step or (run.step - self.start_step) % self.every:
            return
        weights = {k: v.detach() for k, v in run.model.state_dict().items() if v.is_floating_point()}
        if not self.shadow:
            self.shadow = {k: v.float().clone() for k, v in weights.items()}
        else:
            if self.shadow.keys() != weights.keys():
                raise TrainingError("ema: the model's weights are not the ones the average began with")
            names = list(self.shadow)
            if self.shadow[names[0]].device != weights[names[0]].device:  # resumed: the average comes back on the CPU
                self.shadow = {k: v.to(weights[k].device) for k, v in self.shadow.items()}
            shadow = [self.shadow[k] for k in names]
            current = [weights[k].float() for k in names]
            torch._foreach_lerp_(shadow, current, 1.0 - self.decay)  # a few kernels, not one per tensor
        self.updates += 1

    def on_train_end(self, run: TrainingRun) -> None:
        if not self.shadow:
            return
        import copy

        other = copy.deepcopy(run.model)
        if self.final == "ema":  # the average becomes RUN/model; the trained weights stay beside it
            run.add_model("model-raw", other)
            self._load_into(run.model)
        else:
            self._load_into(other)
            run.add_model("model-ema", other)

    def _load_into(self, model: torch.nn.Module) -> None:
        state = model.state_dict()
        with torch.no_grad():
            for name, avg in self.shadow.items():
                state[name].copy_(avg.to(state[name].device, state[name].dtype))

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.updates = int(state.get("updates", 0))
        shadow = state.get("shadow") or {}
        self.shadow = {str(k): v.float().clone() for k, v in shadow.items() if isinstance(v, torch.Tensor)}
