"""MiniGPT: a decoder-only transformer in one file (after nanoGPT's and gpt-fast's model.py).

forward(input_ids (B, T), cache=None, attention_mask=None, position_ids=None) -> (logits (B, T, V), cache)

GPT-2-shaped by default (learned positions, GELU MLP, LayerNorm, biases); Llama-shaped with
rotary positions (HF's rotate-half layout, so weights map to LlamaForCausalLM unchanged),
SwiGLU, RMSNorm and no biases; optional QK-norm and grouped-query attention.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

import zoo
from zoo import KVCache, attention_mask_4d
from zoo_minigpt import hf_format
from zoo_minigpt.spec import MiniGPTSpec

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


Rope = tuple[torch.Tensor, torch.Tensor] | None  # cos, sin: (B or 1, T, 1, D)


def rope_table(spec: MiniGPTSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin of every position (max_seq_len, head_dim), fp32, in the rotate-half
    layout of HF Llama: angle i drives dimensions i and i + D/2; the sin's first half is negated
    so that rotation is ``x * cos + swap_halves(x) * sin``."""
    half = spec.head_dim // 2
    inv_freq = 1.0 / (spec.rope_theta ** (torch.arange(0, half, dtype=torch.float32) / half))
    angles = torch.arange(spec.max_seq_len, dtype=torch.float32)[:, None] * inv_freq[None, :]
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((cos, cos), -1), torch.cat((-sin, sin), -1)


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate (B, T, heads, D) by position: x * cos + [x2, x1] * [-sin, sin] (one copy, no negation)."""
    cos, sin = rope
    return torch.mul(x, cos.to(x.dtype)).addcmul_(x.roll(x.shape[-1] // 2, -1), sin.to(x.dtype))


class RotaryQKV(torch.autograd.Function):
    """q and k rotated, and v, of a fused (B, T, H + 2 KV, D) projection, as the (B, heads, T, D)
    views attention takes. Autograd through `apply_rope` and the splits would copy every gradient
    once more (a concatenation per split); here the backward pass rotates dq and dk back straight
    into one gradient buffer (the inverse rotation: the same with -sin)."""

    @staticmethod
    def forward(
        ctx: Any, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int, kv_heads: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cos, sin = cos.to(qkv.dtype), sin.to(qkv.dtype)
        qk = qkv[:, :, : heads + kv_heads]
        rotated = apply_rope(qk, (cos, sin))
        ctx.save_for_backward(cos, sin)
        q, k = rotated.transpose(1, 2).split([heads, kv_heads], dim=1)
        return q, k, qkv[:, :, heads + kv_heads :].transpose(1, 2)

    @staticmethod
    def backward(
        ctx: Any, dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor
    ) -> tuple[torch.Tensor, None, None, None, None]:
        cos, sin = ctx.saved_tensors
        (B, H, T, D), KV = dq.shape, dk.shape[1]
        grad = torch.empty(B, T, H + 2 * KV, D, dtype=dq.dtype, device=dq.device)
        for d, rows in ((dq, slice(0, H)), (dk, slice(H, H + KV))):
            d = d.transpose(1, 2)
            torch.mul(d, cos, out=grad[:, :, rows]).addcmul_(d.roll(D // 2, -1), sin, value=-1.0)
        grad[:, :, H + KV :] = dv.transpose(1, 2)
        return grad, None, None, None, None


class Attention(nn.Module):
    def __init__(self, spec: MiniGPTSpec, layer: int) -> None:
        super().__init__()
        self.layer, self.n_heads, self.n_kv, self.head_dim = layer, spec.n_heads, spec.kv_heads, spec.head_dim
        # fused q (H heads), k and v (KV heads each)
        self.qkv = nn.Linear(spec.d_model, (spec.n_heads + 2 * spec.kv_heads) * spec.head_dim, bias=spec.bias)
        # three linear maps in one matmul (`zoo.FusedProjections`): Muon orthogonalises each alone
        q_rows, kv_rows = spec.n_heads * spec.head_dim, spec.kv_heads * spec.head_dim
        self.qkv.zoo_fused_outputs = (q_rows, kv_rows, kv_rows)  # type: ignore[assignment]
        self.proj = nn.Linear(spec.d_model, spec.d_model, bias=spec.bias)
        self.proj.zoo_residual = True  # type: ignore[assignment]
        self.q_norm = nn.RMSNorm(spec.head_dim, eps=spec.norm_eps) if spec.qk_norm else None
        self.k_norm = nn.RMSNorm(spec.head_dim, eps=spec.norm_eps) if spec.qk_norm else None
        self.dropout = spec.dropout
        self.resid_drop = make_dropout(spec.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache_position: torch.Tensor | None = None,
        rope: Rope = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        H, KV, D = self.n_heads, self.n_kv, self.head_dim
        # `split`, not slicing: the backward pass gets one concatenated gradient for q, k and v
        # instead of a zero-filled buffer per slice. Norms and RoPE work in the projection's own
        # (B, T, heads, D) layout; attention sees (B, heads, T, D) views of it.
        qkv = self.qkv(x).view(B, T, H + 2 * KV, D)
        if self.q_norm is None and rope is None:  # fewest view ops: this runs per layer per token
            q, k, v = qkv.transpose(1, 2).split([H, KV, KV], dim=1)
        elif self.q_norm is None and rope is not None:
            q, k, v = RotaryQKV.apply(qkv, *rope, H, KV)
        else:
            qk, v = qkv.split([H + KV, KV], dim=2)
            if self.q_norm is not None and self.k_norm is not None:
                q, k = qk.split([H, KV], dim=2)
                qk = torch.cat((self.q_norm(q), self.k_norm(k)), dim=2)
            if rope is not None:  # queries and keys rotated together: half the small kernels
                qk = apply_rope(qk, rope)
            q, k = qk.transpose(1, 2).split([H, KV], dim=1)  # (B, H, T, D), (B, KV, T, D)
            v = v.transpose(1, 2)
        if cache is not None and cache_position is not None:  # static shapes: whole buffers, masked
            k, v = cache.write_at(self.layer, k, v, cache_position)  # (B, H, max_len, D)
            q = q.to(k.dtype)
        elif cache is not None:
            k, v = cache.update(self.layer, k, v)  # (B, H, S, D), S = past + T
            q = q.to(k.dtype)
        dropout = self.dropout if self.training else 0.0
        gqa = {"enable_gqa": True} if KV != H else {}
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout, **gqa)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, spec: MiniGPTSpec) -> None:
        super().__init__()
        self.swiglu = spec.mlp == "swiglu"
        width = 2 * spec.d_ff if self.swiglu else spec.d_ff  # swiglu: fused gate | up
        self.fc = nn.Linear(spec.d_model, width, bias=spec.bias)
        self.proj = nn.Linear(spec.d_ff, spec.d_model, bias=spec.bias)
        self.proj.zoo_residual = True  # type: ignore[assignment]
        self.act = ACTIVATIONS[spec.activation]
        self.drop = make_dropout(spec.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            gate, up = self.fc(x).chunk(2, dim=-1)
            return self.drop(self.proj(F.silu(gate) * up))
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
        rope: Rope = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, mask, is_causal, cache_position, rope)
        return x + self.mlp(self.ln2(x))


class MiniGPT(nn.Module):
    """A `zoo.protocols.CausalLM` with `StaticDecoding` and `HFExportable`; blocks are `ShardUnit`s."""

    rope_cos: torch.Tensor  # buffers with positions="rope"
    rope_sin: torch.Tensor

    def __init__(self, spec: MiniGPTSpec) -> None:
        super().__init__()
        self.spec = spec
        self.vocab_size, self.max_seq_len = spec.vocab_size, spec.max_seq_len
        self.tok_emb = nn.Embedding(spec.vocab_size, spec.d_model, padding_idx=spec.padding_idx)
        self.pos_emb = nn.Embedding(spec.max_seq_len, spec.d_model) if spec.positions == "learned" else None
        if spec.positions == "rope":  # not saved: derived from the spec
            cos, sin = rope_table(spec)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.drop = make_dropout(spec.dropout)
        self.blocks = nn.ModuleList(Block(spec, i) for i in range(spec.n_layers))
        self.ln_f = make_norm(spec)
        self.head = nn.Linear(spec.d_model, spec.vocab_size, bias=False)
        if spec.tie_weights:
            self.head.weight = self.tok_emb.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layers); with
        ``zero_init`` the residual projections (and an untied head) start at zero instead."""
        std = self.spec.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                residual = getattr(module, "zoo_residual", False)
                scale = 1 / math.sqrt(2 * self.spec.n_layers) if residual else 1.0
                nn.init.normal_(module.weight, mean=0.0, std=std * scale)
                if self.spec.zero_init and residual:
                    nn.init.zeros_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
        if self.spec.zero_init and not self.spec.tie_weights:
            nn.init.zeros_(self.head.weight)
        if self.spec.padding_idx is not None:
            with torch.no_grad():
                self.tok_emb.weight[self.spec.padding_idx].zero_()

    def hf_export(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """GPT-2 (or, Llama-shaped, Llama) config fields and tensors: `zoo.protocols.HFExportable`."""
        return hf_format.export(self.spec, self.state_dict())

    def hf_import(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return hf_format.import_tensors(self.spec, tensors)

    def new_cache(self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> KVCache:
        """A preallocated KV cache on this model's device (in the autocast dtype when decoding under it)."""
        weight = self.tok_emb.weight
        return KVCache(
            self.spec.n_layers,
            batch_size,
            self.spec.kv_heads,
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
        logits_to_keep: int = 0,
    ) -> tuple[torch.Tensor, KVCache | None]:
        """Logits (B, T, V), or of the last ``logits_to_keep`` positions (0: all, as transformers)."""
        T = input_ids.shape[1]
        past = cache.length if cache is not None else 0
        if past + T > self.max_seq_len:
            raise ValueError(f"sequence of {past + T} tokens exceeds max_seq_len={self.max_seq_len}")
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=input_ids.device).unsqueeze(0)  # (1, T)
        x, rope = self.embed(input_ids, position_ids)
        # Three cases: plain causal (training, prefill without padding) uses SDPA's fused path;
        # one new token without padding attends to everything cached (no mask); else a mask.
        is_causal = attention_mask is None and bool(past == 0)  # a plain bool when traced too
        mask = None
        if not is_causal and not (T == 1 and attention_mask is None):
            mask = attention_mask_4d(attention_mask, T, past, input_ids.device)
        for block in self.blocks:
            x = block(x, cache, mask, is_causal, None, rope)
        if cache is not None:
            cache.advance(T)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
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
        x, rope = self.embed(input_ids, position_ids)  # (B, 1, C)
        key_pos = torch.arange(cache.max_len, device=input_ids.device)
        visible = attention_mask.bool() & (key_pos <= cache_position)  # (B, max_len)
        mask = visible[:, None, None, :]  # (B, 1, 1, max_len)
        for block in self.blocks:
            x = block(x, cache, mask, False, cache_position, rope)
        return self.head(self.ln_f(x))  # (B, 1, V)

    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, Rope]:
        """Token embeddings (+ learned positions), and the rotary angles of ``position_ids`` (B|1, T)."""
        x = self.tok_emb(input_ids)  # (B, T, C)
        rope: Rope = None
        if self.pos_emb is not None:
            x = x + self.pos_emb(position_ids)
        else:
            rope = (self.rope_cos[position_ids][:, :, None], self.rope_sin[position_ids][:, :, None])  # (B|1, T, 1, D)
        return self.drop(x), rope


if TYPE_CHECKING:  # mypy checks MiniGPT against the protocols it claims

    def _conforms(m: MiniGPT, b: Block) -> tuple[zoo.CausalLM, zoo.StaticDecoding, zoo.HFExportable, zoo.ShardUnit]:
        return m, m, m, b
