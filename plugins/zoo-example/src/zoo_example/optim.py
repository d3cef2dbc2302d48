"""Signum (Bernstein et al., 2018): each weight moves by lr times the sign of its momentum."""

from __future__ import annotations

from typing import Any

import torch


class Signum(torch.optim.Optimizer):
    def __init__(self, groups: list[dict[str, Any]], *, lr: float, momentum: float) -> None:
        super().__init__(groups, {"lr": lr, "momentum": momentum, "weight_decay": 0.0})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            lr = group["lr"]  # zoo sets it from the group's peak_lr and the schedule before each step
            for p in group["params"]:
                if p.grad is None:
                    continue
                momentum = self.state[p].setdefault("momentum", torch.zeros_like(p))  # kept in checkpoints
                momentum.lerp_(p.grad, 1 - group["momentum"])
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(momentum.sign(), alpha=-lr)
