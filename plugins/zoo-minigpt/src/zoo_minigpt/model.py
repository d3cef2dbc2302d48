"""MiniGPT: a decoder-only transformer in one file (after nanoGPT's and gpt-fast's model.py).

forward(input_ids (B, T), cache=None, attention_mask=None, position_ids=None) -> (logits (B, T, V), cache)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.lm import KVCache, attention_mask_4d
from zoo_minigpt.hooks import MiniGPTSpec

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "relu": F.relu,
}


def make_dropout(p: float) -> nn.Module:
    return nn.Dropout(p) if p > 0 else nn.Identity()  # no dropout kernel at all when off


def make_norm(spec: MiniGPTSpec) -> nn.Module:
    if spec.norm == "rmsnorm":
        return nn.RMSNorm(spec.d_model, eps=spec.norm_eps)
    return nn.LayerNorm(spec.d_model, eps=spec.norm_eps, bias=spec.bias)


class Attention(nn.Module):
    def __init__(self, spec: MiniGPTSpec, layer: int) -> None:
        super().__init__()
        self.layer, self.n_heads, self.head_dim = layer, spec.n_heads, spec.head_dim
        self.qkv = nn.Linear(spec.d_model, 3 * spec.d_model, bias=spec.bias)  # fused q, k, v
        self.proj = nn.Linear(spec.d_model, spec.d_model, bias=spec.bias)
        self.proj.zoo_residual = True  # type: ignore[assignment]
        self.dropout = spec.dropout
        self.resid_drop = make_dropout(spec.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache_position: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, D)
        if cache is not None and cache_position is not None:  # static shapes: whole buffers, masked
            k, v = cache.write_at(self.layer, k, v, cache_position)  # (B, H, max_len, D)
            q = q.to(k.dtype)
        elif cache is not None:
            k, v = cache.update(self.layer, k, v)  # (B, H, S, D), S = past + T
            q = q.to(k.dtype)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, spec: MiniGPTSpec) -> None:
        super().__init__()
        self.fc = nn.Linear(spec.d_model, spec.d_ff, bias=spec.bias)
        self.proj = nn.Linear(spec.d_ff, spec.d_model, bias=spec.bias)
        self.proj.zoo_residual = True  # type: ignore[assignment]
        self.act = ACTIVATIONS[spec.activation]
        self.drop = make_dropout(spec.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    zoo_shard_unit = True  # FSDP wraps each block on its own

    def __init__(self, spec: MiniGPTSpec, layer: int) -> None:
        super().__init__()
        self.ln1, self.attn = make_norm(spec), Attention(spec, layer)
        self.ln2, self.mlp = make_norm(spec), MLP(spec)

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache_position: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, mask, is_causal, cache_position)
        return x + self.mlp(self.ln2(x))


class MiniGPT(nn.Module):
    def __init__(self, spec: MiniGPTSpec) -> None:
        super().__init__()
        self.spec = spec
        self.vocab_size, self.max_seq_len = spec.vocab_size, spec.max_seq_len
        self.tok_emb = nn.Embedding(spec.vocab_size, spec.d_model, padding_idx=spec.padding_idx)
        self.pos_emb = nn.Embedding(spec.max_seq_len, spec.d_model)
        self.drop = make_dropout(spec.dropout)
        self.blocks = nn.ModuleList(Block(spec, i) for i in range(spec.n_layers))
        self.ln_f = make_norm(spec)
        self.head = nn.Linear(spec.d_model, spec.vocab_size, bias=False)
        if spec.tie_weights:
            self.head.weight = self.tok_emb.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layers)."""
        std = self.spec.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                scale = 1 / math.sqrt(2 * self.spec.n_layers) if getattr(module, "zoo_residual", False) else 1.0
                nn.init.normal_(module.weight, mean=0.0, std=std * scale)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
        if self.spec.padding_idx is not None:
            with torch.no_grad():
                self.tok_emb.weight[self.spec.padding_idx].zero_()

    def new_cache(self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> KVCache:
        """A preallocated KV cache on this model's device (in the autocast dtype when decoding under it)."""
        weight = self.tok_emb.weight
        return KVCache(
            self.spec.n_layers,
            batch_size,
            self.spec.n_heads,
            max_len or self.max_seq_len,
            self.spec.head_dim,
            device=weight.device,
            dtype=dtype or weight.dtype,
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: KVCache | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KVCache | None]:
        T = input_ids.shape[1]
        past = cache.length if cache is not None else 0
        if past + T > self.max_seq_len:
            raise ValueError(f"sequence of {past + T} tokens exceeds max_seq_len={self.max_seq_len}")
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=input_ids.device).unsqueeze(0)  # (1, T)
        x = self.drop(self.tok_emb(input_ids) + self.pos_emb(position_ids))  # (B, T, C)
        # Three cases: plain causal (training, prefill without padding) uses SDPA's fused path;
        # one new token without padding attends to everything cached (no mask); else a mask.
        is_causal = past == 0 and attention_mask is None
        mask = None
        if not is_causal and not (T == 1 and attention_mask is None):
            mask = attention_mask_4d(attention_mask, T, past, input_ids.device)
        for block in self.blocks:
            x = block(x, cache, mask, is_causal)
        if cache is not None:
            cache.advance(T)
        logits = self.head(self.ln_f(x))  # (B, T, V)
        return logits, cache

    def decode_step(
        self,
        input_ids: torch.Tensor,
        cache: KVCache,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache_position: torch.Tensor,
    ) -> torch.Tensor:
        """One token per sequence with static shapes, for torch.compile / CUDA graphs.

        ``attention_mask`` (B, max_len) marks real tokens over the whole cache; ``cache_position``
        (1,) is where this token goes. Keys past it are masked, so nothing depends on a Python
        integer that changes per step. The caller advances ``cache.length`` afterwards.
        """
        x = self.tok_emb(input_ids) + self.pos_emb(position_ids)  # (B, 1, C)
        key_pos = torch.arange(cache.max_len, device=input_ids.device)
        visible = attention_mask.bool() & (key_pos <= cache_position)  # (B, max_len)
        mask = visible[:, None, None, :]  # (B, 1, 1, max_len)
        for block in self.blocks:
            x = block(x, cache, mask, False, cache_position)
        return self.head(self.ln_f(x))  # (B, 1, V)
