"""MiniGPT <-> Hugging Face GPT-2 and Llama: config fields and tensor names (no transformers here).

GPT-2's blocks are MiniGPT's with LayerNorm, biases, tied embeddings and Conv1D layers (weights
stored transposed). Llama's are a Llama-shaped MiniGPT's (RoPE in the rotate-half layout, SwiGLU,
RMSNorm, no biases, grouped-query attention) with q/k/v and gate/up stored as separate matrices.
Options the other side cannot express are refused with the field to change. zoo-hf's
``zoo export`` / ``zoo import`` call these through `zoo.protocols.HFExportable` / `HFImportable`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from zoo_minigpt.hf_config import ConversionError
from zoo_minigpt.spec import MiniGPTSpec

ACT_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}


def is_llama_shaped(spec: MiniGPTSpec) -> bool:
    return bool(spec.positions == "rope" or spec.mlp == "swiglu" or spec.norm == "rmsnorm")


def mismatches(spec: MiniGPTSpec, *rules: tuple[str, Any, str]) -> list[str]:
    """For each (field, wanted value, why) the spec breaks: what to set, and why."""
    return [
        f"{field} = {getattr(spec, field)!r} ({why}; set {field} = {want!r})"
        for field, want, why in rules
        if getattr(spec, field) != want
    ]


# --------------------------------------------------------------------------- GPT-2


def gpt2_config(spec: MiniGPTSpec) -> dict[str, Any]:
    problems = mismatches(
        spec,
        ("norm", "layernorm", "GPT-2 uses LayerNorm"),
        ("bias", True, "GPT-2 has biases in every linear and LayerNorm layer"),
        ("positions", "learned", "GPT-2 learns its position embeddings"),
        ("mlp", "standard", "GPT-2's MLP is one activation between two matrices"),
        ("qk_norm", False, "GPT-2 has no QK-norm"),
    )
    if spec.kv_heads != spec.n_heads:
        problems.append(f"n_kv_heads = {spec.kv_heads} (GPT-2 gives every head its keys; set n_kv_heads = null)")
    if problems:
        raise ConversionError("this MiniGPT cannot be expressed as GPT-2: " + "; ".join(problems))
    return {
        "model_type": "gpt2",
        "vocab_size": spec.vocab_size,
        "n_positions": spec.max_seq_len,
        "n_embd": spec.d_model,
        "n_layer": spec.n_layers,
        "n_head": spec.n_heads,
        "n_inner": spec.d_ff,
        "activation_function": ACT_TO_HF[spec.activation],
        "resid_pdrop": spec.dropout,
        "embd_pdrop": spec.dropout,
        "attn_pdrop": spec.dropout,
        "layer_norm_epsilon": spec.norm_eps,
        "tie_word_embeddings": spec.tie_weights,
        "bos_token_id": None,
        "eos_token_id": None,
    }


def gpt2_pairs(n_layers: int) -> list[tuple[str, str, bool]]:
    """(minigpt name, gpt2 name, transposed) for every tensor."""
    pairs = [("tok_emb.weight", "transformer.wte.weight", False), ("pos_emb.weight", "transformer.wpe.weight", False)]
    for i in range(n_layers):
        m, h = f"blocks.{i}.", f"transformer.h.{i}."
        for mine, theirs in (("ln1", "ln_1"), ("ln2", "ln_2")):
            pairs += [
                (f"{m}{mine}.weight", f"{h}{theirs}.weight", False),
                (f"{m}{mine}.bias", f"{h}{theirs}.bias", False),
            ]
        for mine, theirs in (
            ("attn.qkv", "attn.c_attn"),
            ("attn.proj", "attn.c_proj"),
            ("mlp.fc", "mlp.c_fc"),
            ("mlp.proj", "mlp.c_proj"),
        ):
            pairs += [
                (f"{m}{mine}.weight", f"{h}{theirs}.weight", True),
                (f"{m}{mine}.bias", f"{h}{theirs}.bias", False),
            ]
    pairs += [
        ("ln_f.weight", "transformer.ln_f.weight", False),
        ("ln_f.bias", "transformer.ln_f.bias", False),
        ("head.weight", "lm_head.weight", False),
    ]
    return pairs


# --------------------------------------------------------------------------- Llama


def llama_config(spec: MiniGPTSpec) -> dict[str, Any]:
    problems = mismatches(
        spec,
        ("positions", "rope", "Llama uses rotary positions"),
        ("mlp", "swiglu", "Llama's MLP is SwiGLU"),
        ("norm", "rmsnorm", "Llama uses RMSNorm"),
        ("bias", False, "Llama has no biases"),
        ("qk_norm", False, "Llama has no QK-norm"),
    )
    if problems:
        raise ConversionError("this MiniGPT cannot be expressed as Llama: " + "; ".join(problems))
    return {
        "model_type": "llama",
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.d_model,
        "intermediate_size": spec.d_ff,
        "num_hidden_layers": spec.n_layers,
        "num_attention_heads": spec.n_heads,
        "num_key_value_heads": spec.kv_heads,
        "head_dim": spec.head_dim,
        "max_position_embeddings": spec.max_seq_len,
        "rms_norm_eps": spec.norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": spec.rope_theta},
        "tie_word_embeddings": spec.tie_weights,
        "attention_bias": False,
        "mlp_bias": False,
        "hidden_act": "silu",
        "attention_dropout": spec.dropout,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
    }


def llama_split(spec: MiniGPTSpec) -> list[tuple[str, list[tuple[str, int]]]]:
    """(minigpt name, [(llama name, rows)]) for every tensor; a fused tensor splits by rows."""
    H, KV, D, F = spec.n_heads, spec.kv_heads, spec.head_dim, spec.d_ff
    pairs: list[tuple[str, list[tuple[str, int]]]] = [("tok_emb.weight", [("model.embed_tokens.weight", 0)])]
    for i in range(spec.n_layers):
        m, h = f"blocks.{i}.", f"model.layers.{i}."
        qkv = [(f"{h}self_attn.{p}_proj.weight", n) for p, n in (("q", H * D), ("k", KV * D), ("v", KV * D))]
        pairs += [
            (f"{m}ln1.weight", [(f"{h}input_layernorm.weight", 0)]),
            (f"{m}attn.qkv.weight", qkv),
            (f"{m}attn.proj.weight", [(f"{h}self_attn.o_proj.weight", 0)]),
            (f"{m}ln2.weight", [(f"{h}post_attention_layernorm.weight", 0)]),
            (f"{m}mlp.fc.weight", [(f"{h}mlp.gate_proj.weight", F), (f"{h}mlp.up_proj.weight", F)]),
            (f"{m}mlp.proj.weight", [(f"{h}mlp.down_proj.weight", 0)]),
        ]
    pairs += [("ln_f.weight", [("model.norm.weight", 0)]), ("head.weight", [("lm_head.weight", 0)])]
    return pairs


# --------------------------------------------------------------------------- both ways


def export(spec: MiniGPTSpec, state: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config.json fields, tensors under transformers' names), fp32 on the CPU."""
    mine = {k: v.detach().to("cpu", torch.float32) for k, v in state.items()}
    theirs: dict[str, torch.Tensor] = {}
    targets = (llama_config, gpt2_config) if is_llama_shaped(spec) else (gpt2_config, llama_config)
    problems = []
    for target in targets:
        try:
            config = target(spec)
            break
        except ConversionError as err:
            problems.append(str(err))
    else:
        raise ConversionError("; and ".join(problems))
    if config["model_type"] == "llama":
        for m, parts in llama_split(spec):
            pieces = mine[m].split([rows for _, rows in parts]) if len(parts) > 1 else (mine[m],)
            theirs.update((name, piece.clone()) for (name, _), piece in zip(parts, pieces, strict=True))
    else:
        for m, h, transposed in gpt2_pairs(spec.n_layers):
            theirs[h] = mine[m].t().contiguous() if transposed else mine[m].clone()
    if spec.tie_weights:
        theirs.pop("lm_head.weight")  # stored once, under the embedding
    return config, theirs


def import_tensors(spec: MiniGPTSpec, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MiniGPT's state dict from tensors under transformers' names (missing ones are left out:
    the caller checks the result against the model)."""
    theirs = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}  # fp16/bf16 files
    mine: dict[str, torch.Tensor] = {}
    if is_llama_shaped(spec):
        if "lm_head.weight" not in theirs and spec.tie_weights and "model.embed_tokens.weight" in theirs:
            theirs["lm_head.weight"] = theirs["model.embed_tokens.weight"]
        for m, parts in llama_split(spec):
            pieces = [theirs.get(name) for name, _ in parts]
            found = [p for p in pieces if p is not None]
            if len(found) == len(pieces):
                mine[m] = found[0] if len(found) == 1 else torch.cat(found)
        return mine
    # GPT-2 checkpoints store names with or without the "transformer." prefix
    theirs = {(k if k.startswith(("transformer.", "lm_head.")) else f"transformer.{k}"): v for k, v in theirs.items()}
    if "lm_head.weight" not in theirs and spec.tie_weights and "transformer.wte.weight" in theirs:
        theirs["lm_head.weight"] = theirs["transformer.wte.weight"]
    for m, h, transposed in gpt2_pairs(spec.n_layers):
        if h in theirs:
            t = theirs[h]
            mine[m] = t.t().contiguous() if transposed and t.dim() == 2 else t
    return mine
