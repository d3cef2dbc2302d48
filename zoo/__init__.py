"""zoo: a plugin-based model zoo for PyTorch.

Everything a plugin or a user needs is importable from here (``zoo.ModelSpec``, ``zoo.hookimpl``,
``zoo.CausalLM``, ``zoo.EngineTrainer``, ...); the submodules are zoo's own layout and may move.

``import zoo`` imports nothing heavy (not even pydantic): every public name is resolved from its
module on first use. That keeps ``zoo list`` fast and lets the command line treat Ctrl-C during
start-up like Ctrl-C anywhere else.
"""

from __future__ import annotations

import os
import sys


def _is_the_command_line() -> bool:
    """True while ``python -m zoo`` (``torchrun -m zoo``) or the ``zoo`` script starts: never when
    a program of the user's imports zoo."""
    argv = list(getattr(sys, "orig_argv", None) or [])
    if "-m" in argv:
        return argv[argv.index("-m") + 1 : argv.index("-m") + 2] == ["zoo"]
    script = (getattr(sys, "argv", None) or [""])[0]
    return os.path.basename(script) in ("zoo", "zoo.exe")


# The command line imports this package before its Ctrl-C guard exists: an interrupt that lands
# now is remembered, and `zoo.__main__.run` raises it once the guard is in place.
STARTUP_INTERRUPTS: list[int] = []


def remember_startup_interrupt(signum: int, frame: object) -> None:
    STARTUP_INTERRUPTS.append(signum)


if _is_the_command_line():
    import signal

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # an ignored SIGINT stays ignored
        signal.signal(signal.SIGINT, remember_startup_interrupt)

import importlib  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

if TYPE_CHECKING:
    from pydantic import Field

    from zoo.api import (
        attach,
        build_model,
        build_sampler,
        build_trainer,
        default_config,
        list_models,
        model_spec,
        parameter_estimate,
        read_data,
        source_of,
        spec_of,
        tokenizer_of,
    )
    from zoo.artifacts import (
        atomic_dir,
        check_tensors,
        load,
        read_tensors,
        refuse_pickles,
        save,
        tensor_info,
    )
    from zoo.config import (
        Config,
        config_from_args,
        load_config,
        spec_ref,
    )
    from zoo.data.examples import (
        Examples,
    )
    from zoo.errors import (
        ArtifactError,
        DataError,
        DataMismatch,
        PluginError,
        ProtocolError,
        RunDirError,
        RuntimeConfigError,
        SpecError,
        TrainingError,
        UnknownNameError,
        ZooError,
    )
    from zoo.evaluation import Score, evaluate
    from zoo.files import (
        read_json,
        shorten,
    )
    from zoo.finetune import artifact_folder, open_model
    from zoo.hookspecs import (
        Register,
        RegisterCommand,
        RegisterDataSource,
        RegisterExporter,
        RegisterHub,
        RegisterPreset,
        RegisterTokenizer,
        hookimpl,
        lazy,
    )
    from zoo.lm.generation import (
        chat_ids,
        generate,
        stream,
    )
    from zoo.lm.kv_cache import (
        KVCache,
        attention_mask_4d,
    )
    from zoo.lm.samplers import (
        Generators,
        draw,
    )
    from zoo.lm.tokenizers import ByteTokenizer, load_tokenizer
    from zoo.protocols import (
        Batch,
        CausalLM,
        ChatTemplate,
        Classifier,
        ClassifierSpec,
        FusedProjections,
        HFExportable,
        HFImportable,
        InputKind,
        Logger,
        LoraTarget,
        Sampler,
        SamplingDefaults,
        Schedule,
        ShardUnit,
        StaticDecoding,
        StopTokens,
        Task,
        TextSource,
        Tokenizer,
        Trainer,
        TrainingRun,
    )
    from zoo.registry import (
        Registry,
    )
    from zoo.rundir import check_out_path
    from zoo.runtime import (
        Runtime,
    )
    from zoo.specs import (
        CallbackSpec,
        LoggerSpec,
        ModelSpec,
        OptimizerSpec,
        RuntimeSpec,
        SamplerSpec,
        ScheduleSpec,
        Spec,
        TrainerSpec,
    )
    from zoo.trainers.callbacks import Callback
    from zoo.trainers.classifier import (
        ClassificationTask,
        ClassifierTrainer,
    )
    from zoo.trainers.engine import (
        EngineTrainer,
        FitResult,
    )
    from zoo.trainers.lora import lora_targets
    from zoo.trainers.param_groups import param_groups
    from zoo.trainers.specs import (
        ClassifierTrainerSpec,
        EngineSpec,
    )
    from zoo.trainers.training import (
        train,
    )

__version__ = "0.2.0"

_HOME = {
    "load_tokenizer": "zoo.lm.tokenizers",
    "ByteTokenizer": "zoo.lm.tokenizers",
    "check_out_path": "zoo.rundir",
    "open_model": "zoo.finetune",
    "artifact_folder": "zoo.finetune",
    "Field": "pydantic",
    "attach": "zoo.api",
    "build_model": "zoo.api",
    "build_sampler": "zoo.api",
    "build_trainer": "zoo.api",
    "default_config": "zoo.api",
    "list_models": "zoo.api",
    "lora_targets": "zoo.trainers.lora",
    "model_spec": "zoo.api",
    "parameter_estimate": "zoo.api",
    "read_data": "zoo.api",
    "source_of": "zoo.api",
    "spec_of": "zoo.api",
    "tokenizer_of": "zoo.api",
    "atomic_dir": "zoo.artifacts",
    "check_tensors": "zoo.artifacts",
    "load": "zoo.artifacts",
    "read_tensors": "zoo.artifacts",
    "refuse_pickles": "zoo.artifacts",
    "save": "zoo.artifacts",
    "tensor_info": "zoo.artifacts",
    "Config": "zoo.config",
    "config_from_args": "zoo.config",
    "load_config": "zoo.config",
    "spec_ref": "zoo.config",
    "Examples": "zoo.data.examples",
    "ArtifactError": "zoo.errors",
    "DataError": "zoo.errors",
    "DataMismatch": "zoo.errors",
    "PluginError": "zoo.errors",
    "ProtocolError": "zoo.errors",
    "RunDirError": "zoo.errors",
    "RuntimeConfigError": "zoo.errors",
    "SpecError": "zoo.errors",
    "TrainingError": "zoo.errors",
    "UnknownNameError": "zoo.errors",
    "ZooError": "zoo.errors",
    "read_json": "zoo.files",
    "shorten": "zoo.files",
    "Register": "zoo.hookspecs",
    "RegisterCommand": "zoo.hookspecs",
    "RegisterDataSource": "zoo.hookspecs",
    "RegisterExporter": "zoo.hookspecs",
    "RegisterHub": "zoo.hookspecs",
    "RegisterPreset": "zoo.hookspecs",
    "RegisterTokenizer": "zoo.hookspecs",
    "hookimpl": "zoo.hookspecs",
    "lazy": "zoo.hookspecs",
    "chat_ids": "zoo.lm.generation",
    "generate": "zoo.lm.generation",
    "stream": "zoo.lm.generation",
    "KVCache": "zoo.lm.kv_cache",
    "attention_mask_4d": "zoo.lm.kv_cache",
    "Generators": "zoo.lm.samplers",
    "draw": "zoo.lm.samplers",
    "Batch": "zoo.protocols",
    "LoraTarget": "zoo.protocols",
    "SamplingDefaults": "zoo.protocols",
    "StopTokens": "zoo.protocols",
    "ChatTemplate": "zoo.protocols",
    "InputKind": "zoo.protocols",
    "CausalLM": "zoo.protocols",
    "Classifier": "zoo.protocols",
    "ClassifierSpec": "zoo.protocols",
    "FusedProjections": "zoo.protocols",
    "HFExportable": "zoo.protocols",
    "HFImportable": "zoo.protocols",
    "Sampler": "zoo.protocols",
    "ShardUnit": "zoo.protocols",
    "StaticDecoding": "zoo.protocols",
    "Task": "zoo.protocols",
    "TextSource": "zoo.protocols",
    "Tokenizer": "zoo.protocols",
    "Trainer": "zoo.protocols",
    "Registry": "zoo.registry",
    "Runtime": "zoo.runtime",
    "ModelSpec": "zoo.specs",
    "RuntimeSpec": "zoo.specs",
    "SamplerSpec": "zoo.specs",
    "Spec": "zoo.specs",
    "TrainerSpec": "zoo.specs",
    "ClassificationTask": "zoo.trainers.classifier",
    "ClassifierTrainer": "zoo.trainers.classifier",
    "EngineTrainer": "zoo.trainers.engine",
    "FitResult": "zoo.trainers.engine",
    "ClassifierTrainerSpec": "zoo.trainers.specs",
    "EngineSpec": "zoo.trainers.specs",
    "Logger": "zoo.protocols",
    "TrainingRun": "zoo.protocols",
    "LoggerSpec": "zoo.specs",
    "CallbackSpec": "zoo.specs",
    "Callback": "zoo.trainers.callbacks",
    "OptimizerSpec": "zoo.specs",
    "ScheduleSpec": "zoo.specs",
    "Schedule": "zoo.protocols",
    "param_groups": "zoo.trainers.param_groups",
    "evaluate": "zoo.evaluation",
    "Score": "zoo.evaluation",
    "train": "zoo.trainers.training",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ArtifactError",
    "Batch",
    "ByteTokenizer",
    "Callback",
    "CallbackSpec",
    "CausalLM",
    "ChatTemplate",
    "ClassificationTask",
    "Classifier",
    "ClassifierSpec",
    "ClassifierTrainer",
    "ClassifierTrainerSpec",
    "Config",
    "DataError",
    "DataMismatch",
    "EngineSpec",
    "EngineTrainer",
    "Examples",
    "Field",
    "FitResult",
    "FusedProjections",
    "Generators",
    "HFExportable",
    "HFImportable",
    "InputKind",
    "KVCache",
    "Logger",
    "LoggerSpec",
    "LoraTarget",
    "ModelSpec",
    "OptimizerSpec",
    "PluginError",
    "ProtocolError",
    "Register",
    "RegisterCommand",
    "RegisterDataSource",
    "RegisterExporter",
    "RegisterHub",
    "RegisterPreset",
    "RegisterTokenizer",
    "Registry",
    "RunDirError",
    "Runtime",
    "RuntimeConfigError",
    "RuntimeSpec",
    "Sampler",
    "SamplerSpec",
    "SamplingDefaults",
    "Schedule",
    "ScheduleSpec",
    "Score",
    "ShardUnit",
    "Spec",
    "SpecError",
    "StaticDecoding",
    "StopTokens",
    "Task",
    "TextSource",
    "Tokenizer",
    "Trainer",
    "TrainerSpec",
    "TrainingError",
    "TrainingRun",
    "UnknownNameError",
    "ZooError",
    "__version__",
    "artifact_folder",
    "atomic_dir",
    "attach",
    "attention_mask_4d",
    "build_model",
    "build_sampler",
    "build_trainer",
    "chat_ids",
    "check_out_path",
    "check_tensors",
    "config_from_args",
    "default_config",
    "draw",
    "evaluate",
    "generate",
    "hookimpl",
    "lazy",
    "list_models",
    "load",
    "load_config",
    "load_tokenizer",
    "lora_targets",
    "model_spec",
    "open_model",
    "param_groups",
    "parameter_estimate",
    "read_data",
    "read_json",
    "read_tensors",
    "refuse_pickles",
    "save",
    "shorten",
    "source_of",
    "spec_of",
    "spec_ref",
    "stream",
    "tensor_info",
    "tokenizer_of",
    "train",
]
