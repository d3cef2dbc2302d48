"""zoo's optimizers, one spec type each (pure pydantic: importing this never imports torch).

A trainer names one in ``optimizer``: a type or preset name (``"muon"``), or an inline table
(``{type = "adamw", weight_decay = 0.1}``). ``lr`` lives on the trainer, so that ``--set
trainers.X.lr=...`` works whichever optimizer runs. ``build()`` keeps the parameter groups every
zoo optimizer has had (`zoo.trainers.param_groups`), each with its ``peak_lr``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from zoo.errors import PluginError
from zoo.specs import OptimizerSpec


class _DecaySplit(OptimizerSpec):
    """Fields shared by the optimizers that split parameters into decay / no_decay groups."""

    weight_decay: float = Field(0.0, ge=0.0, description="weight decay of the matrices")
    decay_norms_and_biases: bool = Field(
        False, description="apply weight decay to 1-D parameters (norm gains, biases) too"
    )

    def groups(self, model: Any, lr: float) -> list[dict[str, Any]]:
        from zoo.trainers.param_groups import param_groups

        params = [p for p in model.parameters() if p.requires_grad]
        return param_groups(params, lr, self.weight_decay, decay_norms_and_biases=self.decay_norms_and_biases)


class _Adam(_DecaySplit):
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam moment decay rates, each in [0, 1)")
    eps: float = Field(1e-8, gt=0.0, description="Adam denominator epsilon")

    @model_validator(mode="after")
    def _betas_range(self) -> Any:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must each be in [0, 1), got {self.betas}")
        return self


class AdamWSpec(_Adam):
    """AdamW (decoupled weight decay)."""

    type: Literal["adamw"] = "adamw"
    weight_decay: float = Field(0.0, ge=0.0, description="decoupled weight decay of the matrices")
    fused: bool | None = Field(None, description="torch's fused kernel; null: on CUDA, where it is fastest")

    def build(self, model: Any, lr: float, device: Any) -> Any:
        import torch

        fused = device.type == "cuda" if self.fused is None else self.fused
        return torch.optim.AdamW(self.groups(model, lr), lr=lr, betas=self.betas, eps=self.eps, fused=fused or None)


class AdamSpec(_Adam):
    """Adam (weight decay as an L2 term of the gradient)."""

    type: Literal["adam"] = "adam"
    weight_decay: float = Field(0.0, ge=0.0, description="L2 penalty of the matrices")
    fused: bool | None = Field(None, description="torch's fused kernel; null: on CUDA, where it is fastest")

    def build(self, model: Any, lr: float, device: Any) -> Any:
        import torch

        fused = device.type == "cuda" if self.fused is None else self.fused
        return torch.optim.Adam(self.groups(model, lr), lr=lr, betas=self.betas, eps=self.eps, fused=fused or None)


class SGDSpec(_DecaySplit):
    """SGD with momentum."""

    type: Literal["sgd"] = "sgd"
    weight_decay: float = Field(0.0, ge=0.0, description="L2 penalty of the matrices")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="momentum (0: plain SGD)")
    nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0)")

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> Any:
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov needs momentum > 0")
        return self

    def build(self, model: Any, lr: float, device: Any) -> Any:
        import torch

        return torch.optim.SGD(self.groups(model, lr), lr=lr, momentum=self.momentum, nesterov=self.nesterov)


class MuonSpec(_Adam):
    """zoo's Muon for the hidden weight matrices, AdamW for the rest.

    Newton-Schulz is batched over same-shape matrices and each row block of a fused projection is
    a matrix of its own; embeddings, the output head, norms and biases get AdamW at ``lr``."""

    type: Literal["muon"] = "muon"
    weight_decay: float = Field(0.0, ge=0.0, description="decoupled weight decay (Muon and AdamW groups)")
    muon_lr: float = Field(0.02, gt=0.0, description="peak learning rate of the Muon group (the rest use lr)")
    muon_momentum: float = Field(0.95, ge=0.0, lt=1.0, description="Nesterov momentum of the Muon group")
    ns_steps: int = Field(5, ge=1, le=10, description="Newton-Schulz iterations per update")

    def muon_groups(self, model: Any, lr: float) -> list[dict[str, Any]]:
        """The Muon group (hidden matrices at ``muon_lr``) first, then the AdamW groups."""
        from zoo.trainers.muon import muon_matrices
        from zoo.trainers.param_groups import param_groups

        params = [p for p in model.parameters() if p.requires_grad]
        ids = {id(p) for p in muon_matrices(model)}
        hidden = [p for p in params if id(p) in ids]  # in parameter order, as checkpoints index them
        rest = [p for p in params if id(p) not in ids]
        muon = {"params": hidden, "weight_decay": self.weight_decay, "name": "muon", "peak_lr": self.muon_lr}
        adamw = param_groups(rest, lr, self.weight_decay, decay_norms_and_biases=self.decay_norms_and_biases)
        groups = [g for g in (muon, *adamw) if g["params"]]
        for g in groups:
            g["algo"] = "muon" if g["name"] == "muon" else "adamw"
        return groups

    def settings(self, lr: float) -> dict[str, Any]:
        return {
            "lr": lr,
            "betas": self.betas,
            "eps": self.eps,
            "momentum": self.muon_momentum,
            "ns_steps": self.ns_steps,
        }

    def build(self, model: Any, lr: float, device: Any) -> Any:
        from zoo.trainers import muon

        return muon.MuonAdamW(self.muon_groups(model, lr), **self.settings(lr), row_blocks=muon.fused_row_blocks(model))


class TorchMuonSpec(MuonSpec):
    """torch.optim.Muon on the same hidden matrices, zoo's AdamW for the rest (for comparison).

    torch's Muon orthogonalises one matrix at a time and a fused projection (q|k|v) whole; it
    needs torch 2.9 or later."""

    type: Literal["torch-muon"] = "torch-muon"  # type: ignore[assignment]

    def build(self, model: Any, lr: float, device: Any) -> Any:
        import torch

        from zoo.trainers.muon import TorchMuonAdamW

        if not hasattr(torch.optim, "Muon"):
            raise PluginError(f"torch {torch.__version__} has no torch.optim.Muon (2.9 and later do); use 'muon'")
        return TorchMuonAdamW(self.muon_groups(model, lr), **self.settings(lr))


OPTIMIZERS: tuple[type[OptimizerSpec], ...] = (AdamWSpec, AdamSpec, SGDSpec, MuonSpec, TorchMuonSpec)
