"""The KV cache and attention mask a causal-LM plugin may use (the protocol is `zoo.protocols.CausalLM`).

`KVCache` below is a preallocated cache any plugin may use: decoding writes into fixed buffers, so
each new token costs O(context) and no memory is allocated per token.
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer in buffers of shape (B, H, max_len, D)."""

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_heads: int,
        max_len: int,
        head_dim: int,
        *,
        device: torch.device | str,
        dtype: torch.dtype,
    ) -> None:
        shape = (batch_size, n_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.max_len = max_len
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H, T, D) after the current length; return all keys/values so far."""
        start, n = self.length, k.shape[2]
        if start + n > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {start + n} requested")
        keys, values = self.k[layer], self.v[layer]
        # narrow + copy_ rather than slice assignment: this runs once per layer per token
        keys.narrow(2, start, n).copy_(k)
        values.narrow(2, start, n).copy_(v)
        return keys.narrow(2, 0, start + n), values.narrow(2, 0, start + n)

    def write_at(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Static-shape update for compiled / graph-captured decoding: store k, v (B, H, T, D) at
        ``positions`` (T,) and return the whole buffers (B, H, max_len, D); the caller masks the
        positions not yet written. No Python integer changes from step to step."""
        self.k[layer].index_copy_(2, positions, k)
        self.v[layer].index_copy_(2, positions, v)
        return self.k[layer], self.v[layer]

    def advance(self, n: int) -> None:
        """Called by the model once every layer has stored ``n`` new positions."""
        self.length += n

    def reset(self) -> None:
        self.length = 0


def attention_mask_4d(attention_mask: torch.Tensor | None, q_len: int, past: int, device: torch.device) -> torch.Tensor:
    """Boolean (B, 1, T, S) mask: causal over past + new positions, padding keys masked out."""
    total = past + q_len
    q_pos = torch.arange(past, total, device=device).unsqueeze(1)  # (T, 1)
    k_pos = torch.arange(total, device=device).unsqueeze(0)  # (1, S)
    mask = (k_pos <= q_pos)[None, None]  # (1, 1, T, S)
    if attention_mask is not None:
        keys = attention_mask[:, None, None, :total].to(torch.bool)  # (B, 1, 1, S)
        mask = mask & keys
        # a fully padded query row (left padding) would be all False -> NaN; let it see itself
        mask = mask | (k_pos == q_pos)[None, None]
    return mask
