"""zoo: a plugin-based model zoo for PyTorch.

Everything a plugin or a user needs is importable from here (``zoo.ModelSpec``, ``zoo.hookimpl``,
``zoo.CausalLM``, ``zoo.EngineTrainer``, ...); the submodules are zoo's own layout and may move.

``import zoo`` imports nothing heavy (not even pydantic): every public name is resolved from its
module on first use. That keeps ``zoo list`` fast and lets the command line treat Ctrl-C during
start-up like Ctrl-C anywhere else.
"""

from __future__ import annotations

from zoo.interrupts import guard_startup

guard_startup()  # only `zoo`/`python -m zoo` starting: Ctrl-C now is remembered (zoo.interrupts)

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
    from zoo.artifacts import load, save
    from zoo.config import (
        Config,
        config_from_args,
        load_config,
        spec_ref,
    )
    from zoo.console import verbose
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
    from zoo.interrupts import Stopped
    from zoo.lm.chat_templates import TemplateError, render_chat_template
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
        DecodingLimit,
        FusedProjections,
        HFExportable,
        HFImportable,
        InputKind,
        Logger,
        LoraTarget,
        PastTensors,
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
    from zoo.quantization import quantize
    from zoo.registry import (
        Registry,
    )
    from zoo.rundir import check_out_path
    from zoo.runtime import (
        Runtime,
    )
    from zoo.serving.server import serve
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
    from zoo.storage import atomic_dir, check_tensors, read_tensors, refuse_pickles, tensor_info
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
    from zoo.training import (
        train,
    )

from zoo.version import __version__  # noqa: E402


def _homes() -> dict[str, str]:
    """``name -> module`` of the public API, read from the ``TYPE_CHECKING`` imports above: the one
    list (type checkers read it as imports; `__getattr__` resolves each name from it on first use)."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", None) == "TYPE_CHECKING")
    return {
        alias.asname or alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }


def __getattr__(name: str) -> Any:
    if name in ("_HOME", "__all__"):  # computed once, when first asked for
        homes = _homes()
        globals().update(_HOME=homes, __all__=sorted([*homes, "__version__"]))
        return globals()[name]
    module = (globals().get("_HOME") or __getattr__("_HOME")).get(name)
    if module is None:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted([*__getattr__("__all__"), *globals()])
