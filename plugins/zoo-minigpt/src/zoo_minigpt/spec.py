"""MiniGPT's spec: pure pydantic, no torch import (what `zoo list` reads)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

import zoo
from zoo_minigpt.hf_config import from_hf_config


class MiniGPTSpec(zoo.ModelSpec):
    """A GPT-style decoder: pre-norm blocks, fused-QKV SDPA attention, KV cache; GPT-2-shaped by
    default, Llama-shaped with positions="rope", mlp="swiglu", norm="rmsnorm", bias=false."""

    type: Literal["minigpt"] = "minigpt"
    protocol = "causal-lm"
    vocab_size: int = Field(256, gt=0, le=1 << 24, description="vocabulary size (256 for the byte tokenizer)")
    d_model: int = Field(128, gt=0, le=1 << 20, description="embedding width")
    n_layers: int = Field(4, gt=0, le=4096, description="transformer blocks")
    n_heads: int = Field(4, gt=0, le=1 << 16, description="attention heads (must divide d_model)")
    n_kv_heads: int | None = Field(
        None,
        gt=0,
        le=1 << 16,
        description="key/value heads (grouped-query attention; must divide n_heads); null: n_heads",
    )
    max_seq_len: int = Field(256, gt=0, le=1 << 24, description="context length (positions)")
    mlp_ratio: float = Field(4.0, gt=0.0, le=1024.0, description="MLP hidden width as a multiple of d_model")
    activation: Literal["gelu", "gelu_tanh", "silu", "relu"] = Field(
        "gelu", description="MLP activation of mlp='standard' (gelu_tanh is GPT-2's approximation)"
    )
    mlp: Literal["standard", "swiglu"] = Field(
        "standard", description="standard: fc -> activation -> proj; swiglu: proj(silu(gate) * up) (Llama)"
    )
    mlp_hidden: int | None = Field(
        None,
        gt=0,
        le=1 << 24,
        description="MLP hidden width; null: d_model x mlp_ratio (x 2/3 for swiglu, rounded up to 8)",
    )
    positions: Literal["learned", "rope"] = Field(
        "learned", description="learned absolute position embeddings (GPT-2) or rotary embeddings (RoPE)"
    )
    rope_theta: float = Field(10000.0, gt=0.0, le=1e12, description="RoPE base frequency")
    qk_norm: bool = Field(False, description="RMS-normalise queries and keys per head before attention")
    zero_init: bool = Field(
        False, description="zero-initialise residual output projections and, when untied, the output head"
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on embeddings, attention and residuals")
    norm: Literal["layernorm", "rmsnorm"] = Field("layernorm", description="normalisation layer")
    norm_eps: float = Field(1e-5, gt=0.0, description="epsilon of the normalisation layers")
    bias: bool = Field(True, description="biases in linear and LayerNorm layers")
    tie_weights: bool = Field(True, description="share the token embedding with the output head")
    padding_idx: int | None = Field(None, ge=0, description="token id whose embedding stays zero (padding)")
    init_std: float = Field(
        0.02, gt=0.0, description="std of the normal init; residual projections are scaled by depth"
    )

    @model_validator(mode="after")
    def _shapes(self) -> MiniGPTSpec:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.padding_idx is not None and self.padding_idx >= self.vocab_size:
            raise ValueError(f"padding_idx ({self.padding_idx}) must be below vocab_size ({self.vocab_size})")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_kv_heads ({self.kv_heads}) must divide n_heads ({self.n_heads})")
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"rope needs an even head_dim (d_model / n_heads = {self.head_dim})")
        return self

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def d_ff(self) -> int:
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        width = self.d_model * self.mlp_ratio
        if self.mlp == "swiglu":  # two input matrices: 2/3 of the width keeps the parameter count
            return -(-round(width * 2 / 3) // 8) * 8
        return round(width)

    builder = "zoo_minigpt.model:MiniGPT"  # imported (with torch) only when a model is built

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """A GPT-2 or Llama ``config.json`` as MiniGPT fields (`zoo.protocols.HFImportable`)."""
        return from_hf_config(config)
