"""zoo's learning-rate schedules, one spec type each: a factor of the peak lr at every step, after
an optional linear warmup. Pure Python: the spec is its own `zoo.protocols.Schedule`.

A trainer names one in ``schedule``: a type or preset name (``"cosine"``) or an inline table
(``{type = "cosine", warmup_steps = 100}``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from zoo.specs import ScheduleSpec


class WarmupSchedule(ScheduleSpec):
    """A linear warmup from 0 to the peak lr, then `after_warmup` (a base: not registered itself)."""

    warmup_steps: int = Field(0, ge=0, description="linear warmup from 0 to lr over this many steps")

    def check_steps(self, max_steps: int) -> None:
        if self.warmup_steps >= max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below max_steps ({max_steps})")

    def warmup_limit(self, max_steps: int) -> int:
        """The longest warmup a run of ``max_steps`` takes: all but its last step."""
        return max(0, max_steps - 1)

    def for_steps(self, max_steps: int) -> tuple[ScheduleSpec, str | None]:
        limit = self.warmup_limit(max_steps)
        if self.warmup_steps <= limit:
            return self, None
        note = (
            f"schedule {self.type!r}: warmup_steps {self.warmup_steps} does not fit a run of {max_steps} steps; "
            f"warming up over {limit}"
        )
        return self.model_copy(update={"warmup_steps": limit}), note

    def build(self) -> Any:
        return self

    def factor(self, step: int, max_steps: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return self.after_warmup(step, max_steps)

    def after_warmup(self, step: int, max_steps: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def progress(self, step: int, max_steps: int) -> float:
        """How far past the warmup ``step`` is, from 0 to 1 at ``max_steps``."""
        return min(1.0, (step - self.warmup_steps) / max(1, max_steps - self.warmup_steps))


class ConstantSchedule(WarmupSchedule):
    """The peak lr throughout (after the warmup)."""

    type: Literal["constant"] = "constant"

    def after_warmup(self, step: int, max_steps: int) -> float:
        return 1.0


class StepSchedule(WarmupSchedule):
    """The lr multiplied by ``gamma`` every ``step_size`` steps."""

    type: Literal["step"] = "step"
    step_size: int = Field(100, gt=0, description="multiply lr by gamma every step_size steps")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="decay factor")

    def after_warmup(self, step: int, max_steps: int) -> float:
        return float(self.gamma ** ((step - self.warmup_steps) // self.step_size))


class CosineSchedule(WarmupSchedule):
    """Half a cosine from the peak lr down to ``min_lr_ratio`` of it at the last step."""

    type: Literal["cosine"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="final lr as a fraction of lr")

    def after_warmup(self, step: int, max_steps: int) -> float:
        cosine = 0.5 * (1.0 + math.cos(math.pi * self.progress(step, max_steps)))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine


class LinearSchedule(WarmupSchedule):
    """A straight line from the peak lr down to ``min_lr_ratio`` of it at the last step."""

    type: Literal["linear"] = "linear"
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="final lr as a fraction of lr")

    def after_warmup(self, step: int, max_steps: int) -> float:
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * (1.0 - self.progress(step, max_steps))


class WarmupStableDecaySchedule(WarmupSchedule):
    """Warmup-stable-decay: the peak lr, then a straight line down over the last decay_fraction.

    The decay ends at ``min_lr_ratio`` of the peak; a run can be extended from a checkpoint taken
    before the decay starts."""

    type: Literal["warmup-stable-decay"] = "warmup-stable-decay"
    decay_fraction: float = Field(0.2, gt=0.0, le=1.0, description="share of max_steps spent decaying, at the end")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="final lr as a fraction of lr")

    def decay_start(self, max_steps: int) -> int:
        """The first step of the decay."""
        return max_steps - max(1, round(self.decay_fraction * max_steps))

    def warmup_limit(self, max_steps: int) -> int:
        return min(super().warmup_limit(max_steps), self.decay_start(max_steps))

    def check_steps(self, max_steps: int) -> None:
        super().check_steps(max_steps)
        start = self.decay_start(max_steps)
        if self.warmup_steps > start:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must end before the decay starts at step {start} "
                f"(the last decay_fraction {self.decay_fraction} of max_steps {max_steps})"
            )

    def after_warmup(self, step: int, max_steps: int) -> float:
        start = self.decay_start(max_steps)
        if step < start:
            return 1.0
        done = min(1.0, (step - start) / (max_steps - start))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * (1.0 - done)


SCHEDULES: tuple[type[ScheduleSpec], ...] = (
    ConstantSchedule,
    StepSchedule,
    CosineSchedule,
    LinearSchedule,
    WarmupStableDecaySchedule,
)
