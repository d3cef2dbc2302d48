"""LoRA (Hu et al., 2021): train a low-rank update ``B @ A`` beside frozen linear layers.

A model family may add adapters its own way (`zoo.LoraTarget`: zoo-hf uses peft); every other
model gets the wrapper below, which wraps ``nn.Linear`` (and transformers' ``Conv1D``, whose
weight is stored transposed) by module path. Only the adapters train;
checkpoints then hold only them (the frozen weights come back from ``--init-from``), and the
saved model has the update merged in, so it loads, generates and exports like any other.
"""

from __future__ import annotations

import fnmatch
import math

import torch
from torch import nn

from zoo.errors import SpecError
from zoo.protocols import LoraTarget
from zoo.trainers.specs import LoraSpec


def linear_dims(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) features of a layer LoRA can wrap, else None."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return int(weight.shape[0]), int(weight.shape[1])  # transformers' Conv1D stores (in, out)
    return None


class LoRALinear(nn.Module):
    """``base(x) + dropout(x) @ A.T @ B.T * alpha / r``; ``base`` stays frozen, B starts at zero."""

    def __init__(self, base: nn.Module, spec: LoraSpec) -> None:
        super().__init__()
        dims = linear_dims(base)
        assert dims is not None
        self.base, (n_in, n_out) = base, dims
        weight = next(base.parameters())
        self.lora_a = nn.Parameter(torch.empty(spec.rank, n_in, dtype=weight.dtype, device=weight.device))
        self.lora_b = nn.Parameter(torch.zeros(n_out, spec.rank, dtype=weight.dtype, device=weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = spec.alpha / spec.rank
        self.drop = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.drop(x) @ self.lora_a.t().to(x.dtype) @ self.lora_b.t().to(x.dtype)
        out: torch.Tensor = self.base(x)
        return out + update * self.scale

    def merged(self) -> nn.Module:
        """The base layer with the update added to its weight."""
        delta = (self.lora_b @ self.lora_a) * self.scale  # (out, in)
        weight: torch.Tensor = self.base.weight  # type: ignore[assignment]
        with torch.no_grad():
            weight.add_((delta if isinstance(self.base, nn.Linear) else delta.t()).to(weight.dtype))
        return self.base


def add_adapters(model: nn.Module, spec: LoraSpec) -> list[str]:
    """Adapters the model's own way (`zoo.LoraTarget`), else zoo's wrapper; the adapted layers."""
    return model.add_lora(spec) if isinstance(model, LoraTarget) else apply_lora(model, spec)


def merged(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its adapters folded into the weights (the model keeps training)."""
    import copy

    plain = copy.deepcopy(model)
    if isinstance(plain, LoraTarget):
        plain.merge_lora()
        return plain
    return merge_lora(plain)


def lora_targets(model: nn.Module, patterns: list[str]) -> list[str]:
    """Paths of the linear layers (``nn.Linear``, transformers' ``Conv1D``) the fnmatch
    ``patterns`` match; an error listing the layers when none do. A `zoo.LoraTarget` model
    adding adapters its own way chooses its layers with this too."""
    wrappable = [name for name, module in model.named_modules() if name and linear_dims(module) is not None]
    chosen = [n for n in wrappable if any(fnmatch.fnmatchcase(n, pattern) for pattern in patterns)]
    if not chosen:
        shown = ", ".join(wrappable[:8]) + (", ..." if len(wrappable) > 8 else "")
        raise SpecError([("lora.targets", f"{patterns} match no linear layer of this model; its layers: {shown}")])
    return chosen


def apply_lora(model: nn.Module, spec: LoraSpec) -> list[str]:
    """Freeze every parameter and wrap each linear layer whose path matches ``spec.targets``;
    returns the wrapped paths. A pattern list that matches nothing is an error listing what does."""
    chosen = lora_targets(model, spec.targets)
    for p in model.parameters():
        p.requires_grad_(False)
    for name in chosen:
        owner, _, attr = name.rpartition(".")
        parent = model.get_submodule(owner)
        setattr(parent, attr, LoRALinear(getattr(parent, attr), spec))
    return chosen


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every adapter by its base layer with the update merged in (in place)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, module.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors that train, by state-dict name (what a LoRA checkpoint and adapter file hold)."""
    return {
        k: v.detach().cpu()
        for k, v in model.state_dict(keep_vars=True).items()
        if isinstance(v, nn.Parameter) and v.requires_grad
    }
