"""Callbacks: the `Callback` base a plugin subclasses, and the standard early stopping and best
checkpoint.

The engine runs every callback on every process with the same figures (the evaluation is the
same on all of them), so a callback that saves a checkpoint, a collective, calls it everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from zoo.errors import TrainingError
from zoo.protocols import TrainingRun


class Callback:
    """Base of callbacks: every method does nothing; override the ones you need.

    State that must survive a resume goes in ``state_dict`` (JSON-able values); the engine stores
    it in every checkpoint and hands it back to ``load_state_dict``.
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
