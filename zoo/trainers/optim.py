"""Optimizers and learning-rate schedules from their specs."""

from __future__ import annotations

import math

import torch
from torch import nn

from zoo.trainers.specs import OptimizerSpec, ScheduleSpec


def build_optimizer(spec: OptimizerSpec, model: nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """Two parameter groups: matrices get weight decay, 1-D tensors (norms, biases) only if asked."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2 or spec.decay_norms_and_biases]
    no_decay = [p for p in params if not (p.ndim >= 2 or spec.decay_norms_and_biases)]
    groups = [
        {"params": decay, "weight_decay": spec.weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
    groups = [g for g in groups if g["params"]]
    if spec.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=spec.momentum)
    fused = device.type == "cuda" if spec.fused is None else spec.fused
    cls = torch.optim.AdamW if spec.name == "adamw" else torch.optim.Adam
    return cls(groups, lr=lr, betas=spec.betas, eps=spec.eps, fused=fused or None)


def lr_factor(spec: ScheduleSpec, step: int, max_steps: int) -> float:
    """Multiplier of the peak lr for optimizer step ``step`` (0-based)."""
    if step < spec.warmup_steps:
        return (step + 1) / spec.warmup_steps
    if spec.name == "constant":
        return 1.0
    if spec.name == "step":
        return float(spec.gamma ** ((step - spec.warmup_steps) // spec.step_size))
    progress = (step - spec.warmup_steps) / max(1, max_steps - spec.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return spec.min_lr_ratio + (1.0 - spec.min_lr_ratio) * cosine
