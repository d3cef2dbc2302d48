"""zoo-hf's hooks: the HF model specs (spec.py), presets of well-known pretrained models, the ``hf``
export format, ``zoo import`` / ``zoo pull``, the ``hf:`` hub and the ``hf`` tokenizer kind. No
torch or transformers import here: `zoo list` stays fast."""

from __future__ import annotations

import zoo
from zoo_hf.spec import HFCausalLMSpec, HFClassifierSpec


@zoo.hookimpl
def zoo_register_models(register: zoo.Register) -> None:
    register(HFCausalLMSpec)
    register(HFClassifierSpec)


@zoo.hookimpl
def zoo_register_presets(register: zoo.RegisterPreset) -> None:
    gpt2 = {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 256, "n_positions": 128}
    llama = {
        "model_type": "llama",
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 256,
        "max_position_embeddings": 128,
    }
    register("models", "hf-gpt2-tiny", {"type": "hf-causal-lm", "config": gpt2}, description="a tiny HF GPT-2")
    register("models", "hf-llama-tiny", {"type": "hf-causal-lm", "config": llama}, description="a tiny HF Llama")
    # well-known small pretrained models, fetched on first use (the revision then resolved is recorded)
    for name, repo, what in PRETRAINED:
        register("models", name, {"type": "hf-causal-lm", "path": f"hf:{repo}"}, description=what)


PRETRAINED = (
    ("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2 135M, chat-tuned (270 MB, from the hub)"),
    ("smollm2-135m", "HuggingFaceTB/SmolLM2-135M", "SmolLM2 135M base model (270 MB, from the hub)"),
    ("smollm2-360m-instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", "SmolLM2 360M, chat-tuned (720 MB, from the hub)"),
    ("qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5 0.5B, chat-tuned (990 MB, from the hub)"),
)


@zoo.hookimpl
def zoo_register_exporters(register: zoo.RegisterExporter) -> None:
    register(
        "hf",
        zoo.lazy("zoo_hf.convert:write_hf"),
        description="a folder transformers loads (config.json, safetensors, tokenizer)",
    )


@zoo.hookimpl
def zoo_register_commands(register: zoo.RegisterCommand) -> None:
    register(
        "import",
        zoo.lazy("zoo_hf.commands:cmd_import"),
        help="import a Hugging Face folder as a zoo artifact (e.g. MiniGPT)",
        arguments=zoo.lazy("zoo_hf.commands:import_arguments"),
    )
    register(
        "pull",
        zoo.lazy("zoo_hf.commands:cmd_pull"),
        help="fetch a model from the Hugging Face Hub into the cache ahead of time (hf:ORG/NAME[@REVISION])",
        arguments=zoo.lazy("zoo_hf.commands:pull_arguments"),
    )


@zoo.hookimpl
def zoo_register_hubs(register: zoo.RegisterHub) -> None:
    register(
        "hf",
        zoo.lazy("zoo_hf.hub:resolve"),
        cached=zoo.lazy("zoo_hf.hub:cached"),
        describe=zoo.lazy("zoo_hf.hub:describe"),
        description="the Hugging Face Hub: hf:ORG/NAME[@REVISION], cached in HF_HOME",
    )


@zoo.hookimpl
def zoo_register_tokenizers(register: zoo.RegisterTokenizer) -> None:
    register("hf", zoo.lazy("zoo_hf.model:load_hf_tokenizer"))
