"""Saved models: a directory of ``spec.json`` + ``model.safetensors`` + ``manifest.json``.

Weights are only ever read with safetensors: no pickle from an artifact is ever loaded. Every
directory is written beside its destination and renamed into place, so a crash never leaves a
half-written artifact where a good one was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field
from torch import nn

from zoo.config import default_config
from zoo.errors import ArtifactError, SpecError, UnknownNameError, ZooError
from zoo.files import LENIENT, read_json, read_model
from zoo.lm.tokenizers import load_tokenizer
from zoo.model_folders import resolve_reference
from zoo.quantization import refuse_quantized
from zoo.specs import ModelSpec
from zoo.storage import (
    TensorInfo,
    Weights,
    atomic_dir,
    check_tensors,
    expand,
    refuse_pickles,
    sha256_file,
    tensor_info,
    unique_state,
    write_json,
    write_tensors,
)
from zoo.tags import attach, source_of, spec_of, tokenizer_of
from zoo.version import __version__

FORMAT_VERSION = 1
SPEC_FILE, WEIGHTS_FILE, MANIFEST_FILE = "spec.json", "model.safetensors", "manifest.json"


# --------------------------------------------------------------------------- atomic writes


class PluginRef(BaseModel):
    model_config = LENIENT
    distribution: str = Field("?", max_length=200)
    version: str = Field("?", max_length=200)


class TokenizerRef(BaseModel):
    """How an artifact's tokenizer is restored (``manifest.json`` -> ``tokenizer``)."""

    model_config = LENIENT
    type: str = Field(max_length=40)
    file: str = Field("tokenizer.json", pattern=r"^[A-Za-z0-9_.-]{1,100}$", description="its main file")
    dir: Literal["tokenizer", "."] = Field(
        "tokenizer", description="where its files are: the artifact itself (since 0.3), or tokenizer/ (before)"
    )
    vocab_size: int | None = Field(None, ge=1, le=1 << 24)
    eos_token: str | None = Field(None, max_length=200)
    pad_token: str | None = Field(None, max_length=200)


class Manifest(BaseModel):
    """``manifest.json``: only what `load` reads is checked; other keys are information."""

    model_config = LENIENT
    format_version: int
    weights_sha256: str = Field("", pattern=r"^([0-9a-f]{64})?$")
    aliases: dict[str, str] = Field(default_factory=dict)
    tokenizer: TokenizerRef | None = None
    plugin: PluginRef = Field(default_factory=PluginRef)
    parent: dict[str, Any] | None = None  # what the weights came from: {"path", "sha256"} (+ a hub's revision, files)


# --------------------------------------------------------------------------- tensors


def load_into(
    module: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    aliases: Mapping[str, str],
    where: str,
    *,
    assign: bool = False,
) -> None:
    """Load tensors, first checking that names, shapes and dtypes match; list every difference.
    ``assign`` makes the module's parameters the loaded tensors themselves (no copy)."""
    full = expand(tensors, aliases)
    check_tensors(tensor_info(module.state_dict()), tensor_info(full), where)
    module.load_state_dict(full, strict=True, assign=assign)


# --------------------------------------------------------------------------- save / load


def save(
    model: nn.Module,
    path: str | Path,
    *,
    spec: ModelSpec | None = None,
    tokenizer: Any = None,
    overwrite: bool = False,
    config: Any = None,
    parent: dict[str, Any] | None = None,
) -> Path:
    """Save a model built by zoo as an artifact directory; returns the path. ``parent``
    (``{"path", "sha256"}``) records the artifact a fine-tuned model started from; without one, a
    model opened from a hub reference records that (`zoo.source_of`)."""

    refuse_quantized(model, "saving")  # int8 packed weights are not the spec's tensors
    spec = spec or spec_of(model)
    config = config or default_config()
    entry = config.registry.entry("models", spec.type)
    tokenizer = tokenizer if tokenizer is not None else tokenizer_of(model)
    module = _unwrap(model)
    spec = spec.artifact_spec(module)
    tensors, aliases = unique_state(module)
    path = Path(path)
    if overwrite and path.is_dir() and any(path.iterdir()) and not (path / MANIFEST_FILE).is_file():
        raise ArtifactError(f"{path} is a folder that is not a zoo artifact; zoo replaces only its own artifacts")
    with atomic_dir(path, overwrite=overwrite) as tmp:
        write_json(tmp / SPEC_FILE, spec.model_dump(mode="json"))
        write_tensors(tmp / WEIGHTS_FILE, tensors, {"format": "pt"})
        tok_desc = None
        if tokenizer is not None:  # beside the weights, as transformers' AutoTokenizer looks for it
            tok_desc = {**tokenizer.save(tmp), "dir": "."}
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
                "parent": parent if parent is not None else source_of(model),
            },
        )
    return path


def load(path: str | Path, *, config: Any = None) -> nn.Module:
    """Rebuild a saved model through the registry and verify it; returns it on the CPU.

    Order matters: the checksum, then the spec, then the safetensors header against a build on
    the meta device (names, shapes, dtypes), and only then is memory spent on the weights. A hub
    reference (``hf:ORG/NAME``) loads the zoo artifact stored in that repo.
    """

    config = config or default_config()
    path = resolve_reference(path, config.registry) or Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such artifact directory")
    if not (path / WEIGHTS_FILE).exists():
        refuse_pickles(path)
    manifest = read_model(path / MANIFEST_FILE, Manifest)
    spec_data = read_json(path / SPEC_FILE)
    if manifest.format_version != FORMAT_VERSION:
        raise ArtifactError(f"{path / MANIFEST_FILE}: unsupported format_version (expected {FORMAT_VERSION})")
    if not manifest.weights_sha256:
        raise ArtifactError(f"{path / MANIFEST_FILE}: no weights_sha256; the artifact is incomplete")
    if not isinstance(spec_data, dict):
        raise ArtifactError(f"{path / SPEC_FILE}: expected a JSON object (a model spec)")
    weights = path / WEIGHTS_FILE
    data = Weights(weights)  # read once: the checksum and the tensors come from the same bytes
    digest = data.sha256
    if digest != manifest.weights_sha256:
        raise ArtifactError(
            f"{weights}: sha256 {digest[:12]}... does not match the manifest "
            f"({manifest.weights_sha256[:12]}...); the file is corrupt or was modified"
        )
    try:
        spec = config.spec("models", spec_data)
    except (UnknownNameError, SpecError) as err:
        dist = manifest.plugin.distribution
        raise ArtifactError(
            f"{path / SPEC_FILE}: cannot rebuild the model ({err}); it was saved by plugin "
            f"{dist} {manifest.plugin.version}: install and enable it (pip install {dist})"
        ) from None
    aliases = manifest.aliases
    empty = empty_model(spec)
    expected = tensor_info(empty.state_dict()) if empty is not None else meta_tensor_info(spec)
    if expected is not None:
        check_tensors(expected, expand(data.info(), aliases), str(weights))
    model = fill(spec, empty, data.tensors(), aliases, str(weights))
    tokenizer = None
    if manifest.tokenizer is not None:
        folder = path / manifest.tokenizer.dir
        try:
            tokenizer = load_tokenizer(folder, manifest.tokenizer.model_dump(), config=config)
        except ZooError as err:
            raise ArtifactError(f"{folder}: {err}") from None
    model.eval()
    return attach(model, spec, tokenizer=tokenizer)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Build modules with their parameters on the meta device and their buffers real: nothing is
    allocated or initialised that loaded weights will replace (non-persistent buffers, such as
    rotary tables, are still computed). Like accelerate's ``init_empty_weights``, it patches
    ``nn.Module.register_parameter`` while the block runs."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def empty_model(spec: ModelSpec) -> nn.Module | None:
    """The model of ``spec`` with meta parameters (see `parameters_on_meta`), or None for a family
    whose build does not survive them (e.g. one that computes with its own weights)."""
    try:
        with parameters_on_meta():
            model: nn.Module = spec.build()
    except ZooError:
        raise
    except Exception:
        return None
    return model


def fill(
    spec: ModelSpec,
    model: nn.Module | None,
    tensors: Mapping[str, torch.Tensor],
    aliases: Mapping[str, str],
    where: str,
) -> nn.Module:
    """``model`` (from `empty_model`) holding ``tensors``, assigned in place (no random
    initialisation, no copy) with tied parameters tied again; without one, or when something was
    left on the meta device, the model is built and loaded the ordinary way."""
    if model is not None:
        tied: dict[int, list[str]] = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            tied.setdefault(id(param), []).append(name)
        load_into(model, tensors, aliases, where, assign=True)
        for names in tied.values():
            first = model.get_parameter(names[0])
            for other in names[1:]:
                owner, _, attr = other.rpartition(".")
                setattr(model.get_submodule(owner), attr, first)
        if not any(t.is_meta for t in (*model.parameters(), *model.buffers())):
            return model
    model = spec.build()
    load_into(model, tensors, aliases, where)
    return model


def meta_tensor_info(spec: ModelSpec) -> dict[str, TensorInfo] | None:
    """Names, shapes and dtypes of the model a spec builds, from a build on the meta device
    (no memory); None for a model family that cannot build there."""
    try:
        with torch.device("meta"):
            module = spec.build()
    except ZooError:
        raise
    except Exception:  # e.g. a from_pretrained that reads weights: checked after the real build
        return None
    return tensor_info(module.state_dict())


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
