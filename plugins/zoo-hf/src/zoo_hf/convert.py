"""MiniGPT <-> GPT-2 and MiniGPT <-> Llama weight conversion (`zoo export --format hf`,
`zoo import --as minigpt`).

GPT-2's blocks are MiniGPT's with LayerNorm, biases, tied embeddings and Conv1D layers (weights
stored transposed). Llama's are a Llama-shaped MiniGPT's (RoPE in the rotate-half layout, SwiGLU,
RMSNorm, no biases, grouped-query attention) with q/k/v and gate/up stored as separate matrices.
Options the other side cannot express are refused with the field to change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zoo.errors import ZooError

ACT_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}
ACT_FROM_HF = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
}


class ConversionError(ZooError):
    """The architectures differ in a way the other side cannot represent."""


def _check_minigpt(spec: Any) -> None:
    problems = []
    if spec.norm != "layernorm":
        problems.append(f"norm = {spec.norm!r} (GPT-2 uses LayerNorm; set norm = 'layernorm')")
    if not spec.bias:
        problems.append("bias = false (GPT-2 has biases in every linear and LayerNorm layer)")
    if problems:
        raise ConversionError("this MiniGPT cannot be expressed as GPT-2: " + "; ".join(problems))


def gpt2_config(spec: Any) -> Any:
    from transformers import GPT2Config

    _check_minigpt(spec)
    return GPT2Config(
        vocab_size=spec.vocab_size,
        n_positions=spec.max_seq_len,
        n_embd=spec.d_model,
        n_layer=spec.n_layers,
        n_head=spec.n_heads,
        n_inner=spec.d_ff,
        activation_function=ACT_TO_HF[spec.activation],
        resid_pdrop=spec.dropout,
        embd_pdrop=spec.dropout,
        attn_pdrop=spec.dropout,
        layer_norm_epsilon=spec.norm_eps,
        tie_word_embeddings=spec.tie_weights,
        bos_token_id=None,
        eos_token_id=None,
    )


def _pairs(n_layers: int) -> list[tuple[str, str, bool]]:
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


def minigpt_to_gpt2(model: Any) -> Any:
    """A transformers GPT2LMHeadModel with the same weights (fp32, on the CPU)."""
    from transformers import GPT2LMHeadModel

    spec = model.zoo_spec
    hf = GPT2LMHeadModel(gpt2_config(spec)).eval()
    mine = model.state_dict()
    theirs = {}
    for m, h, transposed in _pairs(spec.n_layers):
        t = mine[m].detach().to("cpu", torch.float32)
        theirs[h] = t.t().contiguous() if transposed else t.clone()
    missing, unexpected = hf.load_state_dict(theirs, strict=False)
    leftover = [k for k in missing if not k.endswith("attn.bias") and k != "lm_head.weight"]
    if leftover or unexpected:
        raise ConversionError(f"GPT-2 tensors not matched: missing {leftover}, unexpected {unexpected}")
    return hf


def is_llama_shaped(spec: Any) -> bool:
    return bool(spec.positions == "rope" or spec.mlp == "swiglu" or spec.norm == "rmsnorm")


def llama_config(spec: Any) -> Any:
    from transformers import LlamaConfig

    problems = []
    for field, want, why in (
        ("positions", "rope", "Llama uses rotary positions"),
        ("mlp", "swiglu", "Llama's MLP is SwiGLU"),
        ("norm", "rmsnorm", "Llama uses RMSNorm"),
        ("bias", False, "Llama has no biases"),
        ("qk_norm", False, "Llama has no QK-norm"),
    ):
        if getattr(spec, field) != want:
            problems.append(f"{field} = {getattr(spec, field)!r} ({why}; set {field} = {want!r})")
    if problems:
        raise ConversionError("this MiniGPT cannot be expressed as Llama: " + "; ".join(problems))
    return LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.d_model,
        intermediate_size=spec.d_ff,
        num_hidden_layers=spec.n_layers,
        num_attention_heads=spec.n_heads,
        num_key_value_heads=spec.kv_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_seq_len,
        rms_norm_eps=spec.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
        tie_word_embeddings=spec.tie_weights,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        attention_dropout=spec.dropout,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


def _llama_split(spec: Any) -> list[tuple[str, list[tuple[str, int]]]]:
    """(minigpt name, [(llama name, rows)]) for every tensor; a fused tensor splits by rows."""
    H, KV, D, F = spec.n_heads, spec.kv_heads, spec.head_dim, spec.d_ff
    pairs: list[tuple[str, list[tuple[str, int]]]] = [("tok_emb.weight", [("model.embed_tokens.weight", 0)])]
    for i in range(spec.n_layers):
        m, h = f"blocks.{i}.", f"model.layers.{i}."
        pairs += [
            (f"{m}ln1.weight", [(f"{h}input_layernorm.weight", 0)]),
            (
                f"{m}attn.qkv.weight",
                [
                    (f"{h}self_attn.q_proj.weight", H * D),
                    (f"{h}self_attn.k_proj.weight", KV * D),
                    (f"{h}self_attn.v_proj.weight", KV * D),
                ],
            ),
            (f"{m}attn.proj.weight", [(f"{h}self_attn.o_proj.weight", 0)]),
            (f"{m}ln2.weight", [(f"{h}post_attention_layernorm.weight", 0)]),
            (f"{m}mlp.fc.weight", [(f"{h}mlp.gate_proj.weight", F), (f"{h}mlp.up_proj.weight", F)]),
            (f"{m}mlp.proj.weight", [(f"{h}mlp.down_proj.weight", 0)]),
        ]
    pairs += [("ln_f.weight", [("model.norm.weight", 0)]), ("head.weight", [("lm_head.weight", 0)])]
    return pairs


def minigpt_to_llama(model: Any) -> Any:
    """A transformers LlamaForCausalLM with the same weights (fp32, on the CPU)."""
    from transformers import LlamaForCausalLM

    spec = model.zoo_spec
    hf = LlamaForCausalLM(llama_config(spec)).eval()
    mine = model.state_dict()
    theirs: dict[str, torch.Tensor] = {}
    for m, parts in _llama_split(spec):
        t = mine[m].detach().to("cpu", torch.float32)
        if len(parts) == 1:
            theirs[parts[0][0]] = t.clone()
        else:
            for (name, _), piece in zip(parts, t.split([rows for _, rows in parts]), strict=True):
                theirs[name] = piece.clone()
    missing, unexpected = hf.load_state_dict(theirs, strict=False)
    leftover = [k for k in missing if k != "lm_head.weight" or not spec.tie_weights]
    if leftover or unexpected:
        raise ConversionError(f"Llama tensors not matched: missing {leftover}, unexpected {unexpected}")
    return hf


def export_hf(model: Any, out: Path, tokenizer: Any = None) -> Path:
    """A folder transformers loads: Llama for a Llama-shaped MiniGPT, else GPT-2."""
    from zoo.artifacts import atomic_dir

    hf = minigpt_to_llama(model) if is_llama_shaped(model.zoo_spec) else minigpt_to_gpt2(model)
    with atomic_dir(out) as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None and hasattr(tokenizer, "save"):
            tokenizer.save(tmp)
    return out


def minigpt_spec_from_gpt2(config: Any) -> dict[str, Any]:
    problems = []
    if not isinstance(config.activation_function, str):
        raise ConversionError("activation_function must be a string")
    act = ACT_FROM_HF.get(config.activation_function)
    if act is None:
        problems.append(f"activation_function {config.activation_function!r} has no MiniGPT equivalent")
    if getattr(config, "scale_attn_by_inverse_layer_idx", False):
        problems.append("scale_attn_by_inverse_layer_idx = true (MiniGPT scales by 1/sqrt(head_dim) only)")
    if not getattr(config, "scale_attn_weights", True):
        problems.append("scale_attn_weights = false")
    if problems:
        raise ConversionError("this GPT-2 cannot be expressed as MiniGPT: " + "; ".join(problems))
    n_inner = config.n_inner or 4 * config.n_embd
    return {
        "type": "minigpt",
        "vocab_size": config.vocab_size,
        "d_model": config.n_embd,
        "n_layers": config.n_layer,
        "n_heads": config.n_head,
        "max_seq_len": config.n_positions,
        "mlp_ratio": n_inner / config.n_embd,
        "activation": act,
        "dropout": 0.0,
        "norm": "layernorm",
        "norm_eps": config.layer_norm_epsilon,
        "bias": True,
        "tie_weights": bool(getattr(config, "tie_word_embeddings", True)),
    }


def read_folder_tensors(folder: Path) -> dict[str, Any]:
    """Every tensor of a local HF folder's safetensors files, by name (never a pickle)."""
    from zoo.artifacts import read_tensors

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ConversionError(f"{folder}: no *.safetensors weights")
    tensors: dict[str, Any] = {}
    for file in files:
        tensors.update(read_tensors(file))
    return tensors


def import_hf(folder: Path, config_obj: Any = None) -> Any:
    """A MiniGPT (built through the registry) carrying the weights of a local GPT-2 or Llama folder.

    The folder is checked first (no remote code, no pickles); the tensors are read with
    safetensors and must have exactly the names, shapes and dtypes the MiniGPT needs.
    """
    from transformers import GPT2Config

    import zoo
    from zoo.artifacts import check_tensors, tensor_info
    from zoo_hf.model import SAFE, check_folder, rejected_by_transformers

    folder = Path(folder)
    raw = check_folder(folder)
    where = folder / "config.json"
    if raw.get("model_type") == "llama":
        return import_llama(folder, config_obj)
    if raw.get("model_type") != "gpt2":
        raise ConversionError(f"{folder}: model_type is {raw.get('model_type')!r}; gpt2 and llama convert to MiniGPT")
    with rejected_by_transformers(str(where), ConversionError):
        config = GPT2Config.from_pretrained(folder, **SAFE)
    for key in ("n_embd", "n_layer", "n_head", "n_positions", "vocab_size"):
        if not isinstance(getattr(config, key, None), int) or isinstance(getattr(config, key), bool):
            raise ConversionError(f"{where}: {key} must be an integer")
    try:
        model = zoo.build_model(minigpt_spec_from_gpt2(config), config=config_obj)
    except ZooError as err:
        raise ConversionError(f"{where}: {err}") from None
    theirs = {
        (name if name.startswith(("transformer.", "lm_head.")) else f"transformer.{name}"): t
        for name, t in read_folder_tensors(folder).items()
    }
    mine_state = model.state_dict()
    mine, expected = {}, tensor_info(mine_state)
    for m, h, transposed in _pairs(config.n_layer):
        if h == "lm_head.weight" and h not in theirs and model.zoo_spec.tie_weights:
            h = "transformer.wte.weight"  # tied: stored once, under the embedding
        if h not in theirs:
            continue
        t = theirs[h].float() if theirs[h].is_floating_point() else theirs[h]  # fp16/bf16 checkpoints
        mine[m] = t.t().contiguous() if transposed and t.dim() == 2 else t
    check_tensors(expected, tensor_info(mine), f"{folder} (as MiniGPT)")
    model.load_state_dict(mine, strict=True)
    return model.eval()


def minigpt_spec_from_llama(config: Any) -> dict[str, Any]:
    problems = []
    if config.hidden_act != "silu":
        problems.append(f"hidden_act {config.hidden_act!r} (MiniGPT's SwiGLU uses silu)")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        problems.append("attention_bias / mlp_bias = true (Llama-shaped MiniGPT has no biases)")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        problems.append(f"rope_type {rope.get('rope_type')!r} (MiniGPT implements plain RoPE)")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head_dim * config.num_attention_heads != config.hidden_size:
        problems.append("head_dim x num_attention_heads != hidden_size")
    if problems:
        raise ConversionError("this Llama cannot be expressed as MiniGPT: " + "; ".join(problems))
    return {
        "type": "minigpt",
        "vocab_size": config.vocab_size,
        "d_model": config.hidden_size,
        "n_layers": config.num_hidden_layers,
        "n_heads": config.num_attention_heads,
        "n_kv_heads": config.num_key_value_heads or config.num_attention_heads,
        "max_seq_len": config.max_position_embeddings,
        "mlp": "swiglu",
        "mlp_hidden": config.intermediate_size,
        "positions": "rope",
        "rope_theta": float(rope.get("rope_theta", 10000.0)),
        "norm": "rmsnorm",
        "norm_eps": config.rms_norm_eps,
        "bias": False,
        "dropout": 0.0,
        "tie_weights": bool(getattr(config, "tie_word_embeddings", False)),
    }


def import_llama(folder: Path, config_obj: Any = None) -> Any:
    """A Llama-shaped MiniGPT carrying a local Llama folder's weights (safetensors only, checked)."""
    from transformers import LlamaConfig

    import zoo
    from zoo.artifacts import check_tensors, tensor_info
    from zoo_hf.model import SAFE, rejected_by_transformers

    where = folder / "config.json"
    with rejected_by_transformers(str(where), ConversionError):
        config = LlamaConfig.from_pretrained(folder, **SAFE)
    try:
        model = zoo.build_model(minigpt_spec_from_llama(config), config=config_obj)
    except ZooError as err:
        raise ConversionError(f"{where}: {err}") from None
    theirs = read_folder_tensors(folder)
    spec = model.zoo_spec
    if "lm_head.weight" not in theirs and spec.tie_weights:
        theirs["lm_head.weight"] = theirs.get("model.embed_tokens.weight")
    mine = {}
    for m, parts in _llama_split(spec):
        pieces = [theirs.get(name) for name, _ in parts]
        if any(p is None for p in pieces):
            continue
        tensors = [p.float() if p.is_floating_point() else p for p in pieces if p is not None]
        mine[m] = tensors[0] if len(tensors) == 1 else torch.cat(tensors)
    check_tensors(tensor_info(model.state_dict()), tensor_info(mine), f"{folder} (as MiniGPT)")
    model.load_state_dict(mine, strict=True)
    return model.eval()
