"""zoo's own trainers, samplers, data sources and commands, registered through the same hooks as any
third-party plugin. Implementations are imported when used (this module imports no torch).

This module is the core distribution's entry point in the group ``zoo`` (see pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.hookspecs import (
    Register,
    RegisterCommand,
    RegisterDataSource,
    RegisterExporter,
    RegisterPreset,
    RegisterTokenizer,
    hookimpl,
)


@hookimpl
def zoo_register_trainers(register: Register) -> None:
    from zoo.lm.specs import CausalLMTrainerSpec
    from zoo.trainers.specs import ClassifierTrainerSpec

    register(ClassifierTrainerSpec)
    register(CausalLMTrainerSpec)


@hookimpl
def zoo_register_samplers(register: Register) -> None:
    from zoo.lm.specs import ALL

    for spec in ALL:
        register(spec)


@hookimpl
def zoo_register_presets(register: RegisterPreset) -> None:
    """The standard training recipes and sampling styles (override or derive them in registry.toml)."""
    register(
        "trainers",
        "classifier-quick",
        {
            "type": "classifier",
            "max_steps": 300,
            "batch_size": 64,
            "lr": 3e-3,
            "eval_every": 100,
            "checkpoint_every": 100,
            "schedule": {"name": "cosine", "warmup_steps": 20},
        },
        description="a classifier in seconds on the CPU (synthetic data unless --data)",
    )
    lm_optim = {"name": "adamw", "weight_decay": 0.1, "betas": [0.9, 0.99]}
    register(
        "trainers",
        "lm",
        {
            "type": "causal-lm",
            "max_steps": 1000,
            "batch_size": 16,
            "lr": 1e-3,
            "eval_every": 100,
            "checkpoint_every": 250,
            "optimizer": lm_optim,
            "schedule": {"name": "cosine", "warmup_steps": 50, "min_lr_ratio": 0.1},
        },
        description="next-token training, 1000 steps",
    )
    register(
        "trainers",
        "lm-muon",
        {
            "type": "causal-lm",
            "max_steps": 1000,
            "batch_size": 16,
            "lr": 3e-3,
            "eval_every": 100,
            "checkpoint_every": 250,
            "optimizer": {**lm_optim, "name": "muon", "muon_lr": 0.02},
            "schedule": {"name": "cosine", "warmup_steps": 50, "min_lr_ratio": 0.1},
        },
        description="`lm` with Muon on the hidden matrices (lr 0.02) and AdamW at 3e-3 for the rest",
    )
    register(
        "trainers",
        "lm-demo",
        {
            "type": "causal-lm",
            "max_steps": 800,
            "batch_size": 16,
            "context": 128,
            "lr": 2e-3,
            "eval_every": 100,
            "eval_batches": 8,
            "checkpoint_every": 200,
            "optimizer": lm_optim,
            "schedule": {"name": "cosine", "warmup_steps": 40, "min_lr_ratio": 0.1},
        },
        description="`make demo`: about two minutes on a 2-core CPU",
    )
    register(
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
        description="a smoke test: 20 steps",
    )
    register("samplers", "creative", {"type": "top-p", "p": 0.9, "temperature": 0.8}, description="varied text")
    register(
        "samplers",
        "precise",
        {"type": "sample", "temperature": 0.7, "top_k": 40, "repetition_penalty": 1.1},
        description="focused text, fewer repeats",
    )


# Data sources and commands import their implementation when called, not when registered.


def _npz(path: Path, options: dict[str, Any]) -> Any:
    from zoo.data.examples import read_npz

    return read_npz(path, options)


def _csv(path: Path, options: dict[str, Any]) -> Any:
    from zoo.data.examples import read_csv

    return read_csv(path, options)


def _images(path: Path, options: dict[str, Any]) -> Any:
    from zoo.data.images import read_image_folder

    return read_image_folder(path, options)


def _text(path: Path, options: dict[str, Any]) -> Any:
    from zoo.lm.text_data import read_text_files

    return read_text_files(path, options)


@hookimpl
def zoo_register_data_sources(register: RegisterDataSource) -> None:
    register(
        "npz", _npz, protocol="classifier", suffixes=[".npz"], description="arrays x (N, F) or (N, C, H, W), y (N,)"
    )
    register("csv", _csv, protocol="classifier", suffixes=[".csv"], description="numeric columns and a label column")
    register("images", _images, protocol="classifier", folder=True, description="class subfolders of PNG/JPEG images")
    register("text", _text, protocol="causal-lm", suffixes=["*"], folder=True, description="UTF-8 text, or .txt files")


def _byte(folder: Path, desc: dict[str, Any]) -> Any:
    from zoo.lm.tokenizers import load_byte

    return load_byte(folder, desc)


def _bpe(folder: Path, desc: dict[str, Any]) -> Any:
    from zoo.lm.tokenizers import load_bpe

    return load_bpe(folder, desc)


@hookimpl
def zoo_register_tokenizers(register: RegisterTokenizer) -> None:
    register("byte", _byte)
    register("bpe", _bpe)


def _generate(args: Any) -> int:
    from zoo.lm.commands import cmd_generate

    return cmd_generate(args)


def _generate_arguments(parser: Any) -> None:
    from zoo.lm.commands import generate_arguments

    generate_arguments(parser)


def _chat(args: Any) -> int:
    from zoo.lm.commands import cmd_chat

    return cmd_chat(args)


def _chat_arguments(parser: Any) -> None:
    from zoo.lm.commands import chat_arguments

    chat_arguments(parser)


def _plot(args: Any) -> int:
    from zoo.trainers.plot import cmd_plot

    return cmd_plot(args)


def _plot_arguments(parser: Any) -> None:
    from zoo.trainers.plot import plot_arguments

    plot_arguments(parser)


def _export(args: Any) -> int:
    from zoo.exporting import cmd_export

    return cmd_export(args)


def _export_arguments(parser: Any) -> None:
    from zoo.exporting import export_arguments

    export_arguments(parser)


def _onnx(model: Any, folder: Path, options: dict[str, Any]) -> None:
    from zoo.exporting import export_onnx

    export_onnx(model, folder, options)


@hookimpl
def zoo_register_exporters(register: RegisterExporter) -> None:
    register("onnx", _onnx, description="model.onnx (+ decoder_with_past.onnx for a causal LM with a KVCache)")


@hookimpl
def zoo_register_commands(register: RegisterCommand) -> None:
    register("export", _export, help="write a saved model in another format (--format)", arguments=_export_arguments)
    register("generate", _generate, help="generate text from a causal LM", arguments=_generate_arguments)
    register("chat", _chat, help="chat with a causal LM (its tokenizer's chat template)", arguments=_chat_arguments)
    register("plot", _plot, help="plot a run's loss curves to loss.png", arguments=_plot_arguments)
