"""Optimizers and learning-rate schedules from their specs."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from zoo.trainers.specs import OptimizerSpec, ScheduleSpec


def build_optimizer(spec: OptimizerSpec, model: nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """Parameter groups: matrices get weight decay, 1-D tensors (norms, biases) only if asked; with
    ``muon``, the hidden weight matrices form a Muon group of their own (see `muon_matrices`).

    Each group carries its ``peak_lr``; the engine scales it by the schedule every step.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    hidden = {id(p) for p in muon_matrices(model)} if spec.name == "muon" else set()
    decay = [p for p in params if id(p) not in hidden and (p.ndim >= 2 or spec.decay_norms_and_biases)]
    no_decay = [p for p in params if id(p) not in hidden and not (p.ndim >= 2 or spec.decay_norms_and_biases)]
    groups = [
        {"params": [p for p in params if id(p) in hidden], "weight_decay": spec.weight_decay, "name": "muon"},
        {"params": decay, "weight_decay": spec.weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["peak_lr"] = spec.muon_lr if g["name"] == "muon" else lr
    if spec.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=spec.momentum)
    if spec.name == "muon":
        for g in groups:
            g["algo"] = "muon" if g["name"] == "muon" else "adamw"
        return MuonAdamW(
            groups, lr=lr, betas=spec.betas, eps=spec.eps, momentum=spec.muon_momentum, ns_steps=spec.ns_steps
        )
    fused = device.type == "cuda" if spec.fused is None else spec.fused
    cls = torch.optim.AdamW if spec.name == "adamw" else torch.optim.Adam
    return cls(groups, lr=lr, betas=spec.betas, eps=spec.eps, fused=fused or None)


def muon_matrices(model: nn.Module) -> list[torch.Tensor]:
    """The hidden weight matrices Muon orthogonalises: every ``nn.Linear`` weight except the last
    Linear (the output layer) and any weight shared with an embedding (tied heads)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return [m.weight for m in linears[:-1] if m.weight.requires_grad and id(m.weight) not in embedded]


NS_COEFFS = (3.4445, -4.7750, 2.0315)  # the quintic Newton-Schulz iteration of Muon (Jordan et al., 2024)


def orthogonalize(grads: torch.Tensor, steps: int) -> torch.Tensor:
    """Approximately U V^T of each matrix in a batch (N, m, n), by Newton-Schulz on the short side,
    in bf16 as Muon's authors run it (the iteration tolerates it; on this CPU too it is 2x faster)."""
    a, b, c = NS_COEFFS
    x = grads.to(torch.bfloat16)
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT  # (N, m, m), m the short side
        # a x + (b gram + c gram^2) x as two fused multiply-adds: on a CPU, bf16 element-wise ops
        # cost more than the matmuls, so this is ~3x faster than the plain expression
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, poly, x, beta=a, alpha=1.0)
    return (x.mT if tall else x).to(grads.dtype)


class MuonAdamW(torch.optim.Optimizer):
    """Muon for the groups with ``algo = "muon"`` (2-D weights), AdamW for the others.

    Muon: Nesterov momentum, then the update orthogonalised by Newton-Schulz, batched over
    matrices of the same shape (one batched matmul chain instead of one per matrix), scaled by
    sqrt(max(1, rows / cols)); weight decay is decoupled in both algorithms.
    """

    def __init__(
        self,
        groups: list[dict[str, Any]],
        *,
        lr: float,
        betas: tuple[float, float],
        eps: float,
        momentum: float,
        ns_steps: int,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "momentum": momentum, "ns_steps": ns_steps}
        super().__init__(groups, {**defaults, "weight_decay": 0.0, "algo": "adamw"})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [g for p in params if (g := p.grad) is not None]
            if not params:
                continue
            if group["algo"] == "muon":
                self._muon(group, params, grads)
            else:
                self._adamw(group, params, grads)

    def _muon(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        beta, lr, decay = group["momentum"], group["lr"], group["weight_decay"]
        # one multi-tensor op per stage, not a Python loop per matrix: fewer kernel launches on a
        # GPU (on the 2-core CPU it measured no faster)
        bufs = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p)) for p in params]
        torch._foreach_lerp_(bufs, grads, 1 - beta)
        nesterov = torch._foreach_lerp(grads, bufs, beta)
        # matrices batch by their shape with the short side first: (512, 128) joins (128, 512)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(params):
            by_shape.setdefault((min(p.shape), max(p.shape)), []).append(i)
        updates: list[torch.Tensor] = [torch.empty(0)] * len(params)
        for (short, long), index in by_shape.items():
            tall = [params[i].shape[0] > params[i].shape[1] for i in index]
            stacked = torch.stack([nesterov[i].mT if t else nesterov[i] for i, t in zip(index, tall, strict=True)])
            ortho = orthogonalize(stacked, group["ns_steps"])
            for i, t, update in zip(index, tall, ortho, strict=True):
                # sqrt(max(1, rows / cols)): tall matrices get larger steps
                updates[i] = update.mT.mul_((long / short) ** 0.5) if t else update
        torch._foreach_mul_(params, 1 - lr * decay)
        torch._foreach_add_(params, updates, alpha=-lr)

    def _adamw(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        (beta1, beta2), lr, eps, decay = group["betas"], group["lr"], group["eps"], group["weight_decay"]
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
        step = float(self.state[params[0]]["step"])  # a CPU counter: no device sync
        exp_avg = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sq = [self.state[p]["exp_avg_sq"] for p in params]
        torch._foreach_mul_(params, 1 - lr * decay)
        torch._foreach_lerp_(exp_avg, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sq)
        torch._foreach_div_(denom, math.sqrt(1 - beta2**step))
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avg, denom, value=-lr / (1 - beta1**step))


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
