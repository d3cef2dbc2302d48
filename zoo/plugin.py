"""zoo's own trainers, samplers, data sources and commands, registered through the same hooks as any
third-party plugin. Implementations are imported when used (this module imports no torch).

This module is the core distribution's entry point in the group ``zoo`` (see pyproject.toml).
"""

from __future__ import annotations

from typing import Any

from zoo.hookspecs import (
    Register,
    RegisterCommand,
    RegisterDataSource,
    RegisterExporter,
    RegisterPreset,
    RegisterTokenizer,
    hookimpl,
    lazy,
)
from zoo.lm.specs import ALL, CausalLMTrainerSpec
from zoo.trainers.specs import (
    BestCheckpointSpec,
    ClassifierTrainerSpec,
    CsvLoggerSpec,
    EarlyStoppingSpec,
    EMASpec,
    JsonlLoggerSpec,
    MlflowLoggerSpec,
    TensorBoardLoggerSpec,
    WandbLoggerSpec,
)


@hookimpl
def zoo_register_trainers(register: Register) -> None:

    register(ClassifierTrainerSpec)
    register(CausalLMTrainerSpec)


@hookimpl
def zoo_register_loggers(register: Register) -> None:

    for spec in (JsonlLoggerSpec, TensorBoardLoggerSpec, CsvLoggerSpec, MlflowLoggerSpec, WandbLoggerSpec):
        register(spec)


@hookimpl
def zoo_register_callbacks(register: Register) -> None:

    register(EarlyStoppingSpec)
    register(BestCheckpointSpec)
    register(EMASpec)


@hookimpl
def zoo_register_optimizers(register: Register) -> None:
    from zoo.trainers.optimizers import OPTIMIZERS

    for spec in OPTIMIZERS:
        register(spec)


@hookimpl
def zoo_register_schedules(register: Register) -> None:
    from zoo.trainers.schedules import SCHEDULES

    for spec in SCHEDULES:
        register(spec)


@hookimpl
def zoo_register_samplers(register: Register) -> None:

    for spec in ALL:
        register(spec)


LM_OPTIM = {"type": "adamw", "weight_decay": 0.1, "betas": [0.9, 0.99]}
MUON_OPTIM = {**LM_OPTIM, "type": "muon", "muon_lr": 0.02, "ns_steps": 4}
LM_RUN = {"type": "causal-lm", "max_steps": 1000, "batch_size": 16, "eval_every": 100, "checkpoint_every": 250}

# The standard training recipes and sampling styles: (kind, name, fields, description). The
# trainers hold their optimizer and schedule tables inline, so that a registry file deriving one
# changes a field (optimizer = {ns_steps = 5}) without restating the rest.
PRESETS: tuple[tuple[str, str, dict[str, Any], str], ...] = (
    (
        "trainers",
        "classifier-quick",
        {
            "type": "classifier",
            "max_steps": 300,
            "batch_size": 64,
            "lr": 3e-3,
            "eval_every": 100,
            "checkpoint_every": 100,
            "schedule": {"type": "cosine", "warmup_steps": 20},
        },
        "a classifier in seconds on the CPU (synthetic data unless --data)",
    ),
    ("optimizers", "adamw-lm", LM_OPTIM, "the `lm` recipe's AdamW: weight decay 0.1, betas 0.9/0.99"),
    (
        "optimizers",
        "muon-lm",
        MUON_OPTIM,
        "the `lm-muon` recipe's optimizer: Muon at lr 0.02 with 4 Newton-Schulz steps, AdamW for the rest",
    ),
    (
        "schedules",
        "cosine-warmup",
        {"type": "cosine", "warmup_steps": 50, "min_lr_ratio": 0.1},
        "the `lm` recipe's schedule: 50 warmup steps, cosine down to 0.1 of lr",
    ),
    (
        "trainers",
        "lm",
        {
            **LM_RUN,
            "lr": 1e-3,
            "optimizer": LM_OPTIM,
            "schedule": {"type": "cosine", "warmup_steps": 50, "min_lr_ratio": 0.1},
        },
        "next-token training, 1000 steps",
    ),
    (
        "trainers",
        "lm-muon",
        {
            **LM_RUN,
            "lr": 3e-3,
            "optimizer": MUON_OPTIM,
            "schedule": {"type": "cosine", "warmup_steps": 50, "min_lr_ratio": 0.0},
            "grad_clip": None,  # Muon's updates are orthogonalised, AdamW's normalised: clipping changed nothing
        },
        "`lm` with Muon on the hidden matrices (lr 0.02, 4 Newton-Schulz steps) and AdamW at 3e-3 for the rest, "
        "cosine to 0, no clipping",
    ),
    (
        "trainers",
        "lm-demo",
        {
            **LM_RUN,
            "max_steps": 800,
            "context": 128,
            "lr": 3e-3,
            "eval_batches": 8,
            "checkpoint_every": 200,
            "optimizer": MUON_OPTIM,
            "schedule": {"type": "cosine", "warmup_steps": 40, "min_lr_ratio": 0.0},
            "grad_clip": None,
        },
        "`make demo`: lm-muon's recipe, 800 steps, about two minutes on a 2-core CPU",
    ),
    (
        "trainers",
        "lm-tiny",
        {
            "type": "causal-lm",
            "max_steps": 20,
            "batch_size": 4,
            "context": 32,
            "eval_every": 10,
            "eval_batches": 2,
            "progress": False,
        },
        "a smoke test: 20 steps",
    ),
    ("samplers", "creative", {"type": "top-p", "p": 0.9, "temperature": 0.8}, "varied text"),
    (
        "samplers",
        "precise",
        {"type": "sample", "temperature": 0.7, "top_k": 40, "repetition_penalty": 1.1},
        "focused text, fewer repeats",
    ),
)


@hookimpl
def zoo_register_presets(register: RegisterPreset) -> None:
    for kind, name, fields, description in PRESETS:
        register(kind, name, fields, description=description)


# Data sources, tokenizers, exporters and commands import their implementation when called
# (zoo.lazy), not when this module is imported.


@hookimpl
def zoo_register_data_sources(register: RegisterDataSource) -> None:
    examples = "zoo.data.examples"
    register(
        "npz",
        lazy(f"{examples}:read_npz"),
        protocol="classifier",
        suffixes=[".npz"],
        description="arrays x (N, F) or (N, C, H, W), y (N,)",
    )
    register(
        "csv",
        lazy(f"{examples}:read_csv"),
        protocol="classifier",
        suffixes=[".csv"],
        description="numeric columns and a label column",
    )
    register(
        "images",
        lazy("zoo.data.images:read_image_folder"),
        protocol="classifier",
        folder=True,
        description="class subfolders of PNG/JPEG images",
    )
    register(
        "text",
        lazy("zoo.lm.text_data:read_text_files"),
        protocol="causal-lm",
        suffixes=["*"],
        folder=True,
        description="UTF-8 text, or .txt files",
    )
    register(
        "jsonl",
        lazy("zoo.lm.records:read_jsonl"),
        protocol="causal-lm",
        suffixes=[".jsonl"],
        description='records {"text": ...} (packed with EOS) or {"messages": [...]} (chat: assistant tokens scored)',
    )
    register(
        "hf-datasets",
        lazy("zoo.lm.records:read_hf_dataset"),
        protocol="causal-lm",
        suffixes=[".parquet", ".arrow"],
        description="local files through Hugging Face datasets (data_format = 'hf-datasets' for json/csv/text)",
    )


@hookimpl
def zoo_register_tokenizers(register: RegisterTokenizer) -> None:
    register("byte", lazy("zoo.lm.tokenizers:load_byte"))
    register("bpe", lazy("zoo.lm.tokenizers:load_bpe"))


@hookimpl
def zoo_register_exporters(register: RegisterExporter) -> None:
    register(
        "onnx",
        lazy("zoo.onnx_export:export_onnx"),
        description="model.onnx (+ decoder_with_past.onnx for a causal LM with a KVCache)",
    )


@hookimpl
def zoo_register_commands(register: RegisterCommand) -> None:
    for name, home, help_ in (
        ("export", "zoo.commands.export", "write a saved model in another format (--format)"),
        ("generate", "zoo.commands.generate", "generate text from a causal LM"),
        ("chat", "zoo.commands.generate", "chat with a causal LM (its tokenizer's chat template)"),
        ("plot", "zoo.commands.plot", "plot a run's loss curves to loss.png"),
        ("eval", "zoo.commands.eval", "score models side by side on the same data (perplexity, bits/byte, accuracy)"),
        ("serve", "zoo.commands.serve", "serve causal LMs over an OpenAI-compatible HTTP API, with a chat page"),
    ):
        register(name, lazy(f"{home}:cmd_{name}"), help=help_, arguments=lazy(f"{home}:{name}_arguments"))
