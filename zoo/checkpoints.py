"""Training checkpoints: model + optimizer + scaler + RNG + step, as safetensors and JSON only.

A checkpoint is a directory ``checkpoints/step-00000100`` written atomically, so the newest
directory that exists is always complete.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.artifacts import (
    atomic_dir,
    check_tensors,
    dedupe,
    expand,
    read_json,
    read_tensors,
    write_json,
    write_tensors,
)
from zoo.distributed import DistInfo
from zoo.errors import ArtifactError

STEP_DIR = re.compile(r"^step-(\d{8})$")


@dataclass
class TrainState:
    """Everything that must be restored for a resumed run to continue exactly."""

    step: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    data_rng: torch.Generator
    extra: dict[str, Any]


def clean_stale(out: Path) -> None:
    """Remove what a killed process left half-written: temporary and replaced directories."""
    for folder in (out, out / "checkpoints"):
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name):
                    shutil.rmtree(p, ignore_errors=True)


def checkpoint_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: p.name)


def latest(root: Path) -> Path | None:
    dirs = checkpoint_dirs(root)
    return dirs[-1] if dirs else None


def save_checkpoint(root: Path, state: TrainState, keep: int, dist: DistInfo) -> Path | None:
    """Gather the full state (a collective under FSDP) and write it on rank 0; returns its path there."""
    model_state, optim_state = dist.full_state(state.model, state.optimizer)
    if dist.rank != 0:
        return None
    path = root / f"step-{state.step:08d}"
    model_tensors, aliases = dedupe(model_state)
    opt_tensors, opt_meta = _flatten_optimizer(optim_state)
    rng = {"torch_cpu": torch.get_rng_state(), "data": state.data_rng.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng.update({f"torch_cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    with atomic_dir(path, overwrite=True) as tmp:
        write_tensors(tmp / "model.safetensors", model_tensors)
        write_tensors(tmp / "optimizer.safetensors", opt_tensors)
        write_tensors(tmp / "rng.safetensors", rng)
        write_json(
            tmp / "state.json",
            {
                "step": state.step,
                "aliases": aliases,
                "optimizer": opt_meta,
                "scaler": state.scaler.state_dict(),
                "extra": state.extra,
            },
        )
    for old in checkpoint_dirs(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(path: Path, state: TrainState, dist: DistInfo | None = None) -> None:
    """Restore ``state`` in place from a checkpoint directory (every rank reads it)."""
    dist = dist or DistInfo("none")
    meta = read_json(path / "state.json")
    try:
        full = expand(read_tensors(path / "model.safetensors"), meta["aliases"])
        check_tensors(state.model.state_dict(), full, str(path))
        optim = _unflatten_optimizer(read_tensors(path / "optimizer.safetensors"), meta["optimizer"])
        dist.load_full_state(state.model, state.optimizer, full, optim)
        rng = read_tensors(path / "rng.safetensors")
        if meta["scaler"]:
            state.scaler.load_state_dict(meta["scaler"])
        state.step = int(meta["step"])
        state.extra = dict(meta.get("extra", {}))
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{path}: checkpoint does not match this run ({type(err).__name__}: {err})") from None
    torch.set_rng_state(rng["torch_cpu"])
    state.data_rng.set_state(rng["data"])
    cuda = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


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


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    def key(idx: str) -> int | str:
        return int(idx) if idx.isdigit() else idx

    state: dict[int | str, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, _, field = name.rpartition(SEP)
        state.setdefault(key(idx), {})[field] = value
    for idx, values in meta["scalars"].items():
        state.setdefault(key(idx), {}).update(values)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}
