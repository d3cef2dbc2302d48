"""MiniGPT's registration hooks and presets (no torch import here): the spec beside the model, these on top."""

from __future__ import annotations

import zoo
from zoo_minigpt.spec import MiniGPTSpec


@zoo.hookimpl
def zoo_register_models(register: zoo.Register) -> None:
    register(MiniGPTSpec)


SIZES = {
    "minigpt-tiny": ({"d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 64}, "for tests: trains in seconds"),
    "minigpt-small": ({"d_model": 128, "n_layers": 4, "n_heads": 4, "max_seq_len": 128}, "the CPU demo (0.8M)"),
    "minigpt-gpt2": (
        {"vocab_size": 50304, "d_model": 768, "n_layers": 12, "n_heads": 12, "max_seq_len": 1024},
        "GPT-2 small's shape (124M; vocabulary padded to a multiple of 64), for a GPU",
    ),
    "minigpt-gpt2-medium": (
        {"vocab_size": 50304, "d_model": 1024, "n_layers": 24, "n_heads": 16, "max_seq_len": 1024},
        "GPT-2 medium's shape (350M), for a GPU",
    ),
}


LLAMA = {"positions": "rope", "mlp": "swiglu", "norm": "rmsnorm", "bias": False, "tie_weights": False}
LLAMA_SIZES = {
    "minigpt-llama-tiny": ({"d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 64}, "tests"),
    "minigpt-llama-small": (
        {"d_model": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 128},
        "Llama-shaped (RoPE, SwiGLU, RMSNorm, no biases, GQA): exports to HF LlamaForCausalLM",
    ),
}


@zoo.hookimpl
def zoo_register_presets(register: zoo.RegisterPreset) -> None:
    for name, (fields, description) in SIZES.items():
        gpt2 = {"activation": "gelu_tanh"} if "gpt2" in name else {}
        register("models", name, {"type": "minigpt", "vocab_size": 256, **gpt2, **fields}, description=description)
    register(
        "models",
        "minigpt-rope-small",
        {
            **SIZES["minigpt-small"][0],
            "type": "minigpt",
            "vocab_size": 256,
            "positions": "rope",
            "bias": False,
            "activation": "relu",
        },
        description="minigpt-small with rotary positions, ReLU MLPs and no biases: with the lm-muon recipe, "
        "val loss ~1.57 vs 1.87 on tiny Shakespeare in the same steps and time (bench/shakespeare.py)",
    )
    for name, (fields, description) in LLAMA_SIZES.items():
        register("models", name, {"type": "minigpt", "vocab_size": 256, **LLAMA, **fields}, description=description)
