"""Saved models: a directory of ``spec.json`` + ``model.safetensors`` + ``manifest.json``.

Weights are only ever read with safetensors: no pickle from an artifact is ever loaded. Every
directory is written beside its destination and renamed into place, so a crash never leaves a
half-written artifact where a good one was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from zoo.errors import ArtifactError, SpecError, UnknownNameError, ZooError
from zoo.specs import ModelSpec

FORMAT_VERSION = 1
SPEC_FILE, WEIGHTS_FILE, MANIFEST_FILE, TOKENIZER_DIR = (
    "spec.json",
    "model.safetensors",
    "manifest.json",
    "tokenizer",
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``path`` only if the block succeeds."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ArtifactError(f"{path} already exists; choose another path or pass overwrite=True (--force)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    except OSError as err:
        raise ArtifactError(f"cannot write to {path.parent}: {err.strerror or err}") from None
    try:
        yield tmp
        _fsync_dir(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArtifactError(f"writing {path} failed: {err.strerror or err}; nothing was replaced") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_dir(folder: Path) -> None:
    for file in folder.rglob("*"):
        if file.is_file():
            with open(file, "rb") as fh:
                os.fsync(fh.fileno())


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path}: not valid JSON ({err})") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- tensors


def unique_state(module: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A module's state dict without duplicates (see `dedupe`)."""
    return dedupe(module.state_dict())


def dedupe(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tied tensors are stored once, the other names recorded as aliases (safetensors needs it)."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = tensor.detach().to("cpu").contiguous()
    return tensors, aliases


def write_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    save_file(dict(tensors), str(path), metadata=dict(metadata or {}))


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a truncated or corrupt file is an `ArtifactError` naming it."""
    if not path.is_file():
        raise ArtifactError(f"{path}: file is missing")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ArtifactError(f"{path}: not a readable safetensors file ({err}); it is truncated or corrupt") from None


def load_into(module: nn.Module, tensors: Mapping[str, torch.Tensor], aliases: Mapping[str, str], where: str) -> None:
    """Load tensors, first checking that names and shapes match; list every difference."""
    full = expand(tensors, aliases)
    check_tensors(module.state_dict(), full, where)
    module.load_state_dict(full, strict=True)


def expand(tensors: Mapping[str, torch.Tensor], aliases: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Undo `dedupe`: every alias name gets its tensor back."""
    full = dict(tensors)
    for alias, target in aliases.items():
        if target in full:
            full[alias] = full[target]
    return full


def check_tensors(expected: Mapping[str, torch.Tensor], full: Mapping[str, torch.Tensor], where: str) -> None:
    """Names and shapes must match the model's; the error lists missing, unexpected, mis-shaped."""
    missing = [n for n in expected if n not in full]
    unexpected = [n for n in full if n not in expected]
    misshaped = [
        f"{n} (file {tuple(full[n].shape)}, model {tuple(t.shape)})"
        for n, t in expected.items()
        if n in full and full[n].shape != t.shape
    ]
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if names:
            shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise ArtifactError(f"{where}: tensors do not match the spec; " + "; ".join(problems))


# --------------------------------------------------------------------------- save / load


def save(
    model: nn.Module,
    path: str | Path,
    *,
    spec: ModelSpec | None = None,
    tokenizer: Any = None,
    overwrite: bool = False,
    config: Any = None,
) -> Path:
    """Save a model built by zoo as an artifact directory; returns the path."""
    from zoo import __version__
    from zoo.api import default_config, spec_of

    spec = spec or spec_of(model)
    config = config or default_config()
    entry = config.registry.entry("models", spec.type)
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "zoo_tokenizer", None)
    module = _unwrap(model)
    spec = spec.artifact_spec(module)
    tensors, aliases = unique_state(module)
    path = Path(path)
    with atomic_dir(path, overwrite=overwrite) as tmp:
        write_json(tmp / SPEC_FILE, spec.model_dump(mode="json"))
        write_tensors(tmp / WEIGHTS_FILE, tensors, {"format": "pt"})
        tok_desc = None
        if tokenizer is not None:
            (tmp / TOKENIZER_DIR).mkdir()
            tok_desc = tokenizer.save(tmp / TOKENIZER_DIR)
        spec.write_artifact_files(module, tmp)
        write_json(
            tmp / MANIFEST_FILE,
            {
                "format_version": FORMAT_VERSION,
                "zoo_version": __version__,
                "plugin": {"distribution": entry.distribution, "version": entry.version},
                "torch_version": torch.__version__.split("+")[0],
                "parameters": sum(p.numel() for p in module.parameters()),
                "weights_sha256": sha256_file(tmp / WEIGHTS_FILE),
                "aliases": aliases,
                "tokenizer": tok_desc,
            },
        )
    return path


def load(path: str | Path, *, config: Any = None) -> nn.Module:
    """Rebuild a saved model through the registry and verify it; returns it on the CPU."""
    from zoo.api import attach, default_config

    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such artifact directory")
    if not (path / WEIGHTS_FILE).exists():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ArtifactError(
                f"{path}: holds {', '.join(pickles)} but no {WEIGHTS_FILE}; zoo never loads pickle "
                "files (they can run arbitrary code). Convert the weights to safetensors."
            )
    manifest = read_json(path / MANIFEST_FILE)
    spec_data = read_json(path / SPEC_FILE)
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path / MANIFEST_FILE}: unsupported format_version (expected {FORMAT_VERSION})")
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise ArtifactError(f"{weights}: file is missing")
    digest = sha256_file(weights)
    if digest != manifest.get("weights_sha256"):
        raise ArtifactError(
            f"{weights}: sha256 {digest[:12]}... does not match the manifest "
            f"({str(manifest.get('weights_sha256'))[:12]}...); the file is corrupt or was modified"
        )
    config = config or default_config()
    plugin = manifest.get("plugin") or {}
    try:
        spec = config.spec("models", spec_data)
    except (UnknownNameError, SpecError) as err:
        dist = plugin.get("distribution", "?")
        raise ArtifactError(
            f"{path / SPEC_FILE}: cannot rebuild the model ({err}); it was saved by plugin "
            f"{dist} {plugin.get('version', '?')}: install and enable it (pip install {dist})"
        ) from None
    model = spec.build()
    aliases = manifest.get("aliases") or {}
    load_into(model, read_tensors(weights), aliases, str(weights))
    tokenizer = None
    if manifest.get("tokenizer"):
        from zoo.tokenizers import load_tokenizer

        try:
            tokenizer = load_tokenizer(path / TOKENIZER_DIR, manifest["tokenizer"])
        except ZooError as err:
            raise ArtifactError(f"{path / TOKENIZER_DIR}: {err}") from None
    model.eval()
    return attach(model, spec, tokenizer=tokenizer)


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside torch.compile / DDP wrappers."""
    from torch.nn.parallel import DistributedDataParallel

    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model
