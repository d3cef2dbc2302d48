"""The parameter groups zoo's optimizers start from: what gets weight decay, at which peak lr."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def param_groups(
    params: Iterable[Any], lr: float, weight_decay: float, *, decay_norms_and_biases: bool = False
) -> list[dict[str, Any]]:
    """``decay`` (matrices, and 1-D tensors such as norm gains and biases only with
    ``decay_norms_and_biases``) at ``weight_decay``, and ``no_decay`` at 0; each group carries its
    ``name`` and its ``peak_lr`` (``lr``), which the engine scales by the schedule every step.
    Frozen parameters (``requires_grad=False``, e.g. around LoRA adapters) and empty groups are
    left out (torch refuses empty groups)."""
    params = [p for p in params if p.requires_grad]
    decayed = [p for p in params if p.ndim >= 2 or decay_norms_and_biases]
    kept = [p for p in params if not (p.ndim >= 2 or decay_norms_and_biases)]
    groups = [
        {"params": decayed, "weight_decay": weight_decay, "name": "decay", "peak_lr": lr},
        {"params": kept, "weight_decay": 0.0, "name": "no_decay", "peak_lr": lr},
    ]
    return [g for g in groups if g["params"]]
