"""Train from names: the path `zoo train` and `zoo.train` share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo.adapters import write_adapter
from zoo.artifacts import save
from zoo.build import check_protocol
from zoo.config import Config, default_config, reference_problems
from zoo.errors import DataMismatch, PluginError, RunDirError, SpecError
from zoo.files import read_model
from zoo.finetune import artifact_folder, starting_point
from zoo.model_folders import reference_scheme
from zoo.protocols import Tokenizer, Trainer
from zoo.runtime import Runtime
from zoo.storage import atomic_dir
from zoo.tags import attach, spec_of
from zoo.trainers.engine import FitResult, RunInfo
from zoo.trainers.lora import add_adapters, merged
from zoo.trainers.specs import EngineSpec, LoraSpec


def train_from_config(
    cfg: Config,
    model: Any,
    trainer: Any,
    out: str | Path,
    *,
    data: Any = None,
    resume: bool | str | Path = False,
    force: bool = False,
    init_from: str | Path | None = None,
    lora: bool = False,
    tokenizer: Tokenizer | None = None,
) -> FitResult:
    """Build model and trainer from names/dicts/specs, train, and save the model in ``out/model``.

    ``lora`` trains low-rank adapters only (the trainer's ``lora`` settings, or the defaults): the
    checkpoints hold the adapters, ``out/adapter`` keeps them in peft's layout (``adapter_config.json``,
    ``adapter_model.safetensors``), and ``out/model`` has them merged.

    ``init_from`` (a zoo artifact, a run folder, a LoRA adapter folder or a local model folder) starts from trained
    weights; ``model`` may then be None (the source's spec) or a spec whose tensors match. A
    resumed fine-tune reuses the parent its run.json records (another ``init_from`` is refused).

    ``tokenizer`` replaces the model's own (and the trainer's); trained weights without one are
    refused unless their vocabulary is bytes.
    """

    tspec, adapters = _with_lora(cfg.spec("trainers", trainer), lora)
    problems = reference_problems(cfg, tspec)  # an inline trainer's too, before anything is touched
    if problems:
        raise SpecError([(f"trainer {tspec.type}.{where}", message) for where, message in problems])
    init_from = _parent_for(Path(out), init_from, bool(resume))
    if model is None and init_from is None:
        raise SpecError([("--model", "give a model (a preset, a type or an inline spec), or --init-from PATH")])
    runtime = Runtime(cfg.runtime)
    runtime.seed_everything()
    parent = None
    if init_from is not None:
        start = starting_point(init_from, cfg, model, tokenizer)
        module, parent = start.model, start.parent
        mspec = spec_of(module)
    else:
        mspec = cfg.spec("models", model)  # type: ignore[assignment]
        module = attach(mspec.build(), mspec, tokenizer=tokenizer)
    check_protocol(tspec, mspec)
    if adapters is not None:
        if runtime.dist.mode == "fsdp":
            raise SpecError([("lora", "LoRA runs on one process or under DDP, not FSDP; set runtime.distributed")])
        add_adapters(module, adapters)
    run_info = {
        "model": mspec.model_dump(mode="json"),
        "trainer": tspec.model_dump(mode="json"),
        "runtime": cfg.runtime.model_dump(mode="json"),
        "data": str(data) if isinstance(data, str | Path) else (type(data).__name__ if data is not None else None),
        "init_from": parent,
    }
    trainer_obj = tspec.build()
    if not isinstance(trainer_obj, Trainer):
        raise PluginError(
            f"trainer type {tspec.type!r}: build() must return an object with fit() (zoo.protocols.Trainer)"
        )
    try:
        result: FitResult = trainer_obj.fit(
            module,
            runtime,
            out,
            data=data,
            resume=resume,
            force=force,
            run_info=run_info,
            save_artifact=_artifact_writer(cfg, adapters, parent),
            inputs=[("--registry", cfg.source), ("--init-from", init_from)],
            config=cfg,
        )
    except DataMismatch as err:
        preset = model if isinstance(model, str) and model in cfg.presets["models"] else None
        raise err.for_model(preset, inline=model is not None and preset is None) from None
    return result


def _with_lora(tspec: Any, lora: bool) -> tuple[Any, LoraSpec | None]:
    """The trainer spec (with the default LoRA settings when ``--lora`` asks and it has none) and its adapters."""
    if lora and isinstance(tspec, EngineSpec) and tspec.lora is None:
        tspec = tspec.model_copy(update={"lora": LoraSpec()})
    adapters = tspec.lora if isinstance(tspec, EngineSpec) else None
    if lora and adapters is None:
        raise SpecError(
            [("--lora", f"trainer type {tspec.type!r} does not train on the engine; LoRA needs one that does")]
        )
    return tspec, adapters


def _artifact_writer(
    cfg: Config, adapters: LoraSpec | None, parent: dict[str, Any] | None
) -> Callable[[Path, Any], Path]:
    """How the engine saves ``RUN/model`` (and the models callbacks add): with LoRA, the adapters
    of ``RUN/model`` in peft's layout as ``RUN/adapter``, and every model with them merged."""

    def save_artifact(path: Path, trained: Any) -> Path:
        if adapters is not None:
            if path.name == "model":  # RUN/adapter holds what RUN/model was merged from, nothing else
                with atomic_dir(path.parent / "adapter", overwrite=True) as tmp:
                    write_adapter(tmp, trained, adapters, parent)
            trained = merged(trained)
        return save(trained, path, overwrite=True, config=cfg, parent=parent)

    return save_artifact


def _parent_for(out: Path, init_from: str | Path | None, resume: bool) -> str | Path | None:
    """On resume, the parent the run recorded; a different ``init_from`` is refused."""

    if not (resume and (out / "run.json").is_file()):
        return init_from
    recorded = read_model(out / "run.json", RunInfo).init_from
    if recorded is None:
        if init_from is not None:
            raise RunDirError(f"{out} was not started with --init-from; resume it without one, or use another --out")
        return None
    if init_from is not None and not _same_parent(init_from, recorded["path"]):
        raise RunDirError(
            f"{out} was started with --init-from {recorded['path']}; resume it with that (or none), "
            "or start a new run with another --out"
        )
    return recorded["path"]


def _same_parent(given: str | Path, recorded: str) -> bool:
    """A resume's ``init_from`` names the recorded parent: the same folder, or the same hub repo
    (unpinned, or at the recorded revision)."""

    if reference_scheme(recorded) is not None:
        return str(given) == recorded or recorded.startswith(f"{given}@")
    return (artifact_folder(Path(given)) or Path(given)).resolve() == Path(recorded).resolve()


def train(
    trainer: Any,
    out: str | Path,
    *,
    model: Any = None,
    init_from: str | Path | None = None,
    lora: bool = False,
    data: Any = None,
    resume: bool | str | Path = False,
    force: bool = False,
    config: Config | None = None,
    tokenizer: Tokenizer | None = None,
) -> FitResult:
    """``zoo.train("lm", "runs/x", model="minigpt-small")`` or ``init_from="runs/parent"``: what
    ``zoo train`` does, from Python (the default configuration unless ``config`` is given).

    ``data`` is a file or folder, or a dataset object: ``(x, y)`` items for a classifier (any
    ``torch.utils.data.Dataset``), texts or ``{"text"}`` / ``{"messages"}`` items for a causal LM.
    ``tokenizer`` (a `zoo.Tokenizer`) replaces the model's own, as ``zoo train --tokenizer`` does.
    """

    cfg = config or default_config()
    return train_from_config(
        cfg,
        model,
        trainer,
        out,
        data=data,
        resume=resume,
        force=force,
        init_from=init_from,
        lora=lora,
        tokenizer=tokenizer,
    )
