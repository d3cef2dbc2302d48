"""Locally typical sampling (Meister et al., 2022) as a zoo sampler."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

import zoo


class Typical:
    needs_seen = False

    def __init__(self, mass: float, temperature: float) -> None:
        self.mass, self.temperature = mass, temperature

    def select(self, logits: torch.Tensor, seen: torch.Tensor, generator: zoo.Generators) -> torch.Tensor:
        logp = (logits / self.temperature).log_softmax(-1)  # (B, V)
        probs = logp.exp()
        entropy = -(probs * logp).sum(-1, keepdim=True)
        order = (-logp - entropy).abs().argsort(-1)  # most typical first
        sorted_probs = probs.gather(-1, order)
        drop = (sorted_probs.cumsum(-1) - sorted_probs) >= self.mass  # keep the first always
        kept = sorted_probs.masked_fill(drop, 0.0)
        return order.gather(-1, zoo.draw(kept, generator)[:, None]).squeeze(-1)


if TYPE_CHECKING:  # mypy checks the sampler against zoo.Sampler

    def _sampler(sampler: Typical) -> zoo.Sampler:
        return sampler
