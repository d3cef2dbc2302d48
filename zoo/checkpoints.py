"""One training checkpoint: model + optimizer + scaler + RNG + step, as safetensors and JSON only.

A checkpoint is a folder written atomically (it appears whole or not at all). Which checkpoints a
run keeps, and which one it resumes from, is `zoo.checkpointer`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field
from torch import nn

from zoo.distributed import DistInfo
from zoo.errors import ArtifactError
from zoo.files import LENIENT, read_model
from zoo.storage import (
    atomic_dir,
    check_tensors,
    dedupe,
    expand,
    publish_dir,
    read_header,
    read_tensors,
    tensor_info,
    write_json,
    write_tensors,
)

Scalar = float | int | bool | str | None


class OptimizerMeta(BaseModel):
    model_config = LENIENT
    param_groups: list[dict[str, Any]]
    scalars: dict[str, dict[str, Scalar]] = Field(default_factory=dict)


class CheckpointMeta(BaseModel):
    """``state.json`` of a checkpoint (its tensors are in the .safetensors files beside it)."""

    model_config = LENIENT
    step: int = Field(ge=0, le=1 << 40)
    aliases: dict[str, str] = Field(default_factory=dict)
    optimizer: OptimizerMeta
    scaler: dict[str, Scalar] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)
    sharded: bool = False  # FSDP: tensors in one shard-*.safetensors file per rank


CALLBACK_TENSORS = "callbacks.safetensors"


@dataclass
class TrainState:
    """Everything that must be restored for a resumed run to continue exactly."""

    step: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    data_rng: torch.Generator
    extra: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # callbacks' tensors: callbacks.safetensors


def save_checkpoint(path: Path, state: TrainState, dist: DistInfo) -> None:
    """Write the full state as the folder ``path`` (every rank calls it; see `zoo.checkpointer`).

    One process or DDP: rank 0 writes the state dicts. FSDP: every rank writes its own shards
    through `torch.distributed.checkpoint` (safetensors files with their offsets in the header,
    no pickle), so no rank ever gathers the whole model or optimizer. Either way the folder
    appears whole or not at all.
    """
    if dist.mode == "fsdp":
        _save_sharded(path, state, dist)
    elif dist.rank == 0:
        frozen = frozen_names(state.model)
        model_tensors, aliases = dedupe({k: v for k, v in state.model.state_dict().items() if k not in frozen})
        opt_tensors, opt_meta = _flatten_optimizer(state.optimizer.state_dict())
        with atomic_dir(path, overwrite=True) as tmp:
            write_tensors(tmp / "model.safetensors", model_tensors)
            write_tensors(tmp / "optimizer.safetensors", opt_tensors)
            _write_rest(tmp, state, opt_meta, aliases=aliases)


def _write_rest(folder: Path, state: TrainState, opt_meta: dict[str, Any], **meta: Any) -> None:
    """RNG states and ``state.json``: what every checkpoint holds beside its tensors."""
    rng = {"torch_cpu": torch.get_rng_state(), "data": state.data_rng.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng.update({f"torch_cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    write_tensors(folder / "rng.safetensors", rng)
    if state.tensors:
        write_tensors(folder / CALLBACK_TENSORS, state.tensors)
    scaler = state.scaler.state_dict()
    write_json(
        folder / "state.json",
        {"step": state.step, "optimizer": opt_meta, "scaler": scaler, "extra": state.extra, **meta},
    )


def _save_sharded(path: Path, state: TrainState, dist: DistInfo) -> None:
    from torch.distributed.checkpoint import HuggingFaceStorageWriter, save
    from torch.distributed.checkpoint.api import CheckpointException  # a BaseException

    tmp = path.with_name(f".{path.name}.tmp-shards")  # one name every rank knows; clean_stale removes it
    if dist.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    model_state, optim_state = dist.sharded_state(state.model, state.optimizer)
    model_state, aliases = _untied(model_state)
    opt_tensors, opt_meta = _flatten_optimizer(optim_state)
    try:
        save(
            _prefixed(model_state, opt_tensors),
            storage_writer=HuggingFaceStorageWriter(str(tmp), save_distributed=True),
        )
        if dist.rank == 0:
            _write_rest(tmp, state, opt_meta, aliases=aliases, sharded=True)
            publish_dir(tmp, path)
    except (CheckpointException, OSError, RuntimeError) as err:
        if dist.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise ArtifactError(f"writing {path} failed: {_first_failure(err)}; nothing was replaced") from None
    dist.barrier()


def _first_failure(err: BaseException) -> str:
    """One line for an error of `torch.distributed.checkpoint`, which wraps every rank's failure
    (exception and traceback) in one `CheckpointException`."""
    failures = getattr(err, "failures", None)  # {rank: (exception, traceback)}
    if isinstance(failures, dict) and failures:
        err = next(iter(failures.values()))[0]
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[-1][:300]}" if text else type(err).__name__


def _untied(model_state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A sharded state dict with each tied tensor once (safetensors stores no shared memory), and
    the other names as aliases of it."""
    kept: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    seen: dict[int, str] = {}
    for name, tensor in model_state.items():
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor  # a DTensor's own shard
        key = local.untyped_storage().data_ptr() if local.numel() else id(tensor)
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key], kept[name] = name, tensor
    return kept, aliases


def _prefixed(model_state: dict[str, Any], opt_tensors: dict[str, Any]) -> dict[str, Any]:
    """One flat name space for a sharded checkpoint: ``model/NAME`` and ``optimizer/NAME/STATE``."""
    return {
        **{f"model{SEP}{k}": v for k, v in model_state.items()},
        **{f"optimizer{SEP}{k}": v for k, v in opt_tensors.items()},
    }


def load_checkpoint(path: Path, state: TrainState, dist: DistInfo | None = None) -> None:
    """Restore ``state`` in place from a checkpoint directory (every rank reads it).

    Everything is checked against the live run before anything is restored: the tensors' names,
    shapes and dtypes (from the file headers), the optimizer's groups and per-parameter state,
    the scaler's and RNG states. A checkpoint that does not fit is an `ArtifactError` naming it.
    A sharded (FSDP) checkpoint loads into FSDP on any number of processes: each reads the parts
    of the saved shards that overlap its own, straight into its live shards, so there a mismatch
    found later (optimizer, scaler, RNG) stops the run after the weights were read, before any step.
    """
    dist = dist or DistInfo("none")
    meta = read_model(path / "state.json", CheckpointMeta)
    if meta.sharded != (dist.mode == "fsdp"):
        saved, live = ("sharded (FSDP)", "without FSDP") if meta.sharded else ("unsharded", "under FSDP")
        raise ArtifactError(
            f"{path}: a {saved} checkpoint cannot resume a run {live}; keep runtime.distributed as it was"
        )
    frozen = frozen_names(state.model)
    if meta.sharded:
        model_state, optim = _read_sharded(path, state, dist, meta)
    else:
        model_file = path / "model.safetensors"
        expected = tensor_info({k: v for k, v in state.model.state_dict().items() if k not in frozen})
        check_tensors(expected, expand(read_header(model_file), meta.aliases), str(model_file))
        model_state = expand(read_tensors(model_file), meta.aliases)
        optim = _unflatten_optimizer(read_tensors(path / "optimizer.safetensors"), meta.optimizer)
    _check_optimizer(path, state, optim, dist)
    rng = read_tensors(path / "rng.safetensors")
    _check_rng(path, rng)
    scaler_live = state.scaler.state_dict()
    if meta.scaler and (set(meta.scaler) != set(scaler_live) or not _same_types(meta.scaler, scaler_live)):
        raise ArtifactError(f"{path}: the loss-scaler state does not match this run's precision")
    # the run's own hyperparameters (betas, eps, weight decay, ...: its spec, checked on resume)
    # stay; only the tensors and step counts come from the file, so no value in state.json reaches the math
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in state.optimizer.param_groups]
    try:
        dist.load_state(state.model, state.optimizer, model_state, optim, frozen=frozen)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ArtifactError(f"{path}: checkpoint does not match this run ({type(err).__name__}: {err})") from None
    for group, values in zip(state.optimizer.param_groups, hyper, strict=True):
        group.update(values)
    if meta.scaler:
        state.scaler.load_state_dict(meta.scaler)
    state.step = meta.step
    state.extra = dict(meta.extra)
    tensors = path / CALLBACK_TENSORS
    state.tensors = read_tensors(tensors) if tensors.exists() else {}
    torch.set_rng_state(rng["torch_cpu"])
    state.data_rng.set_state(rng["data"])
    cuda = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def _read_sharded(
    path: Path, state: TrainState, dist: DistInfo, meta: CheckpointMeta
) -> tuple[dict[str, Any], dict[str, Any]]:
    """This rank's shards, read into the live state's own layout (resharding from any process count)."""
    from torch.distributed.checkpoint import HuggingFaceStorageReader, load
    from torch.distributed.checkpoint.api import CheckpointException  # a BaseException

    shards = sorted(path.glob("shard-*.safetensors"))
    if not shards:
        raise ArtifactError(f"{path}: a sharded checkpoint without its shard-*.safetensors files")
    for shard in shards:  # zoo's own header checks first: a damaged file is named, not a DCP traceback
        read_header(shard)
    model_state, optim_state = dist.sharded_state(state.model, state.optimizer)
    opt_tensors, _ = _flatten_optimizer(optim_state)
    wanted = _prefixed({k: v for k, v in model_state.items() if k not in meta.aliases}, opt_tensors)
    try:  # the reader parses only safetensors headers (names, shapes, dtypes, offsets as JSON)
        load(wanted, storage_reader=HuggingFaceStorageReader(str(path)))
    except (CheckpointException, Exception) as err:
        raise ArtifactError(f"{path}: sharded checkpoint does not match this run ({_first_failure(err)})") from None
    prefix = f"optimizer{SEP}"
    loaded = {k[len(prefix) :]: v for k, v in wanted.items() if k.startswith(prefix)}
    for alias, name in meta.aliases.items():  # a tied tensor: the one it is tied to, loaded above
        if name not in model_state or alias not in model_state:
            raise ArtifactError(f"{path}: state.json ties {alias!r} to {name!r}, which this model does not have")
        model_state[alias] = model_state[name]
    return model_state, _unflatten_optimizer(loaded, meta.optimizer)


def frozen_names(model: nn.Module) -> set[str]:
    """State-dict names of parameters that do not train (LoRA's base weights): a checkpoint leaves
    them out, since they come back from the run's starting point (``--init-from``) on resume."""
    return {
        k for k, v in model.state_dict(keep_vars=True).items() if isinstance(v, nn.Parameter) and not v.requires_grad
    }


def _same_types(loaded: dict[str, Any], live: dict[str, Any]) -> bool:
    """Each loaded value has the live value's type (ints may stand for floats)."""
    for key, value in live.items():
        got = loaded.get(key)
        if isinstance(value, bool) or value is None:
            ok = type(got) is type(value)
        elif isinstance(value, (int, float)):
            ok = isinstance(got, (int, float)) and not isinstance(got, bool)
        elif isinstance(value, (list, tuple)):
            ok = isinstance(got, (list, tuple)) and len(got) == len(value)
        else:
            ok = isinstance(got, type(value))
        if not ok:
            return False
    return True


def _check_optimizer(path: Path, state: TrainState, loaded: dict[str, Any], dist: DistInfo) -> None:
    where = path / "state.json"
    live_groups = state.optimizer.state_dict()["param_groups"]
    keys = _param_keys(state, dist)
    groups = loaded["param_groups"]
    if len(groups) != len(live_groups):
        raise ArtifactError(f"{where}: {len(groups)} optimizer parameter groups, this run has {len(live_groups)}")
    shapes: dict[Any, tuple[int, ...]] = {}
    for i, (got, want, group) in enumerate(zip(groups, live_groups, state.optimizer.param_groups, strict=True)):
        names = keys[i]
        same = set(got) == set(want) and _same_types({**got, "params": []}, {**want, "params": []})
        if not same or list(got["params"]) != names:
            raise ArtifactError(f"{where}: optimizer parameter group {i} does not match this run's optimizer")
        shapes.update({key: tuple(p.shape) for key, p in zip(names, group["params"], strict=True)})
    for key, values in loaded["state"].items():
        if key not in shapes:
            raise ArtifactError(f"{path}: optimizer state for an unknown parameter {str(key)[:80]!r}")
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                if value.numel() > 1 and tuple(value.shape) != shapes[key]:
                    raise ArtifactError(f"{path}: optimizer state {name!r} of parameter {key} has the wrong shape")
                if not value.is_floating_point():
                    raise ArtifactError(f"{path}: optimizer state {name!r} of parameter {key} is not floating point")
            elif not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ArtifactError(f"{path}: optimizer state {name!r} of parameter {key} is not a number")


def _param_keys(state: TrainState, dist: DistInfo) -> list[list[Any]]:
    """Per group, the keys a saved optimizer state uses: running indices, or names under FSDP."""
    if dist.mode == "fsdp":
        names = {id(p): n for n, p in state.model.named_parameters()}
        return [[names.get(id(p), "?") for p in g["params"]] for g in state.optimizer.param_groups]
    keys, index = [], 0
    for group in state.optimizer.param_groups:
        keys.append(list(range(index, index + len(group["params"]))))
        index += len(group["params"])
    return keys


def _check_rng(path: Path, rng: dict[str, torch.Tensor]) -> None:
    want = {"torch_cpu": torch.get_rng_state(), "data": torch.Generator().get_state()}
    for key, ref in want.items():
        got = rng.get(key)
        if got is None or got.dtype != torch.uint8 or got.shape != ref.shape:
            raise ArtifactError(f"{path / 'rng.safetensors'}: random-number state {key!r} is missing or malformed")


SEP = "/"  # between a parameter key (an index, or a dotted name under FSDP) and a state name


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in sd["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}{SEP}{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: OptimizerMeta) -> dict[str, Any]:
    def key(idx: str) -> int | str:
        return int(idx) if idx.isdigit() and len(idx) < 12 else idx

    state: dict[int | str, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, _, field = name.rpartition(SEP)
        state.setdefault(key(idx), {})[field] = value
    for idx, values in meta.scalars.items():
        state.setdefault(key(idx), {}).update(values)
    groups = [
        {k: (tuple(v) if k == "betas" and isinstance(v, list) else v) for k, v in g.items()} for g in meta.param_groups
    ]
    return {"state": state, "param_groups": groups}
