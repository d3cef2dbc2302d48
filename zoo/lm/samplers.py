"""Logit processors and the standard samplers. All work on (B, V) tensors on any device."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty: for seen tokens, positive logits are divided by it, negative multiplied."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose cumulative probability reaches p."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs  # probability mass strictly ahead of each token
    drop_sorted = before >= p  # the first token always stays (before == 0 < p)
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def min_p(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    if threshold <= 0.0:
        return logits
    probs = logits.softmax(-1)
    limit = threshold * probs.max(dim=-1, keepdim=True).values
    return logits.masked_fill(probs < limit, float("-inf"))


Generators = Sequence[torch.Generator] | torch.Generator | None


def draw(probs: torch.Tensor, generator: Generators) -> torch.Tensor:
    """One token per row from ``probs`` (B, V): the exponential race ``argmax p / E``, E ~ Exp(1).

    Exactly the categorical distribution, in two kernels instead of multinomial's slower one.
    ``generator`` is what the decoding loop hands a sampler: one generator per row, so a row's
    draws never depend on the other rows of the batch (a single generator is accepted too).
    """
    if isinstance(generator, Sequence):
        if len(generator) != probs.shape[0]:
            raise ValueError(f"{len(generator)} generators for {probs.shape[0]} rows")
        row = probs.shape[-1]
        noise = torch.stack([probs.new_empty(row).exponential_(generator=g) for g in generator])
    else:
        noise = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / noise).argmax(-1)


class Greedy:
    def __init__(self, penalty: float = 1.0) -> None:
        self.penalty = penalty
        self.needs_seen = penalty != 1.0

    def select(self, logits: torch.Tensor, seen: torch.Tensor, generator: Generators) -> torch.Tensor:
        return repetition_penalty(logits, seen, self.penalty).argmax(-1)


class Sampling:
    """Repetition penalty -> temperature -> top-k -> top-p -> min-p -> a draw from the softmax."""

    def __init__(self, temperature: float, k: int | None, p: float, min_p_: float, penalty: float) -> None:
        self.temperature, self.k, self.p, self.min_p, self.penalty = temperature, k, p, min_p_, penalty
        self.needs_seen = penalty != 1.0

    def filter(self, logits: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        logits = repetition_penalty(logits, seen, self.penalty)
        if self.temperature != 1.0:
            logits = logits / self.temperature
        if self.k is not None:
            logits = top_k(logits, self.k)
        return min_p(top_p(logits, self.p), self.min_p)

    def select(self, logits: torch.Tensor, seen: torch.Tensor, generator: Generators) -> torch.Tensor:
        return draw(self.filter(logits, seen).softmax(-1), generator)
