"""GRULM: forward(input_ids (B, T), cache=None, attention_mask=None, position_ids=None) -> (logits, cache)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

import zoo
from zoo_example.specs import GRULMSpec


class GRUState:
    """The recurrent state plays the KV cache's part: O(1) per new token."""

    def __init__(self, hidden: torch.Tensor) -> None:
        self.hidden = hidden  # (n_layers, B, C)
        self.length = 0


class GRULM(nn.Module):
    decode_limit: int | None = None  # a recurrent state has no positions to run out of: it decodes as long as asked

    def __init__(self, spec: GRULMSpec) -> None:
        super().__init__()
        self.vocab_size, self.max_seq_len = spec.vocab_size, spec.max_seq_len  # max_seq_len: the training window
        self.n_layers, self.d_model = spec.n_layers, spec.d_model
        self.emb = nn.Embedding(spec.vocab_size, spec.d_model)
        self.gru = nn.GRU(
            spec.d_model,
            spec.d_model,
            spec.n_layers,
            batch_first=True,
            dropout=spec.dropout if spec.n_layers > 1 else 0.0,
        )
        self.head = nn.Linear(spec.d_model, spec.vocab_size)

    def new_cache(self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> GRUState:
        weight = self.emb.weight
        return GRUState(torch.zeros(self.n_layers, batch_size, self.d_model, device=weight.device, dtype=weight.dtype))

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: GRUState | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, GRUState | None]:
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        h = cache.hidden if cache is not None else self.new_cache(B).hidden
        x = self.emb(input_ids)  # (B, T, C)
        if attention_mask is None:
            out, h = self.gru(x, h)
        else:  # padded positions must leave the state untouched: step by step
            keep = attention_mask[:, past : past + T].to(x.dtype)  # (B, T)
            outs = []
            for t in range(T):
                o, h_new = self.gru(x[:, t : t + 1], h)
                m = keep[:, t].view(1, B, 1)
                h = m * h_new + (1 - m) * h
                outs.append(o)
            out = torch.cat(outs, 1)
        if cache is not None:
            cache.hidden, cache.length = h, past + T
        return self.head(out), cache  # (B, T, V)


if TYPE_CHECKING:  # mypy checks the GRU against zoo's causal-LM protocol

    def _model(model: GRULM) -> tuple[zoo.CausalLM, zoo.DecodingLimit]:
        return model, model
