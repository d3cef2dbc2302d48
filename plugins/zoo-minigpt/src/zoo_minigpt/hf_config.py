"""A Hugging Face GPT-2 or Llama ``config.json`` as MiniGPT fields (`zoo.protocols.HFImportable`):
plain dictionaries, no torch, so the spec can read a config without importing the model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import zoo

ACT_FROM_HF = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
}


class ConversionError(zoo.ZooError):
    """The architectures differ in a way the other side cannot represent."""


def spec_from_gpt2(config: Mapping[str, Any]) -> dict[str, Any]:
    problems = []
    act = ACT_FROM_HF.get(str(config.get("activation_function")))
    if act is None:
        problems.append(f"activation_function {config.get('activation_function')!r} has no MiniGPT equivalent")
    if config.get("scale_attn_by_inverse_layer_idx", False):
        problems.append("scale_attn_by_inverse_layer_idx = true (MiniGPT scales by 1/sqrt(head_dim) only)")
    if not config.get("scale_attn_weights", True):
        problems.append("scale_attn_weights = false")
    if problems:
        raise ConversionError("this GPT-2 cannot be expressed as MiniGPT: " + "; ".join(problems))
    width = _int(config, "n_embd")
    return {
        "type": "minigpt",
        "vocab_size": _int(config, "vocab_size"),
        "d_model": width,
        "n_layers": _int(config, "n_layer"),
        "n_heads": _int(config, "n_head"),
        "max_seq_len": _int(config, "n_positions"),
        "mlp_ratio": (config.get("n_inner") or 4 * width) / width,
        "activation": act,
        "dropout": 0.0,
        "norm": "layernorm",
        "norm_eps": config.get("layer_norm_epsilon", 1e-5),
        "bias": True,
        "tie_weights": bool(config.get("tie_word_embeddings", True)),
    }


def spec_from_llama(config: Mapping[str, Any]) -> dict[str, Any]:
    problems = []
    if config.get("hidden_act") != "silu":
        problems.append(f"hidden_act {config.get('hidden_act')!r} (MiniGPT's SwiGLU uses silu)")
    if config.get("attention_bias", False) or config.get("mlp_bias", False):
        problems.append("attention_bias / mlp_bias = true (Llama-shaped MiniGPT has no biases)")
    rope = config.get("rope_parameters") or {}
    if not isinstance(rope, Mapping) or rope.get("rope_type", "default") != "default":
        problems.append(f"rope_parameters {rope!r} (MiniGPT implements plain RoPE)")
    hidden, heads = _int(config, "hidden_size"), _int(config, "num_attention_heads")
    head_dim = config.get("head_dim") or hidden // max(heads, 1)
    if head_dim * heads != hidden:
        problems.append("head_dim x num_attention_heads != hidden_size")
    if problems:
        raise ConversionError("this Llama cannot be expressed as MiniGPT: " + "; ".join(problems))
    return {
        "type": "minigpt",
        "vocab_size": _int(config, "vocab_size"),
        "d_model": hidden,
        "n_layers": _int(config, "num_hidden_layers"),
        "n_heads": heads,
        "n_kv_heads": config.get("num_key_value_heads") or heads,
        "max_seq_len": _int(config, "max_position_embeddings"),
        "mlp": "swiglu",
        "mlp_hidden": _int(config, "intermediate_size"),
        "positions": "rope",
        "rope_theta": float(rope.get("rope_theta", 10000.0)) if isinstance(rope, Mapping) else 10000.0,
        "norm": "rmsnorm",
        "norm_eps": config.get("rms_norm_eps", 1e-6),
        "bias": False,
        "dropout": 0.0,
        "tie_weights": bool(config.get("tie_word_embeddings", False)),
    }


def from_hf_config(config: Mapping[str, Any]) -> dict[str, Any]:
    kind = config.get("model_type")
    if kind == "gpt2":
        return spec_from_gpt2(config)
    if kind == "llama":
        return spec_from_llama(config)
    raise ConversionError(f"model_type is {kind!r}; gpt2 and llama convert to MiniGPT")


def _int(config: Mapping[str, Any], key: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConversionError(f"config.json: {key} must be an integer, not {value!r}")
    return value
