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
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from zoo.config import default_config
from zoo.errors import ArtifactError, SpecError, UnknownNameError, ZooError
from zoo.files import LENIENT, parse_json, read_json, read_model, regular_file, shorten
from zoo.lm.tokenizers import load_tokenizer
from zoo.model_folders import resolve_reference
from zoo.quantization import refuse_quantized
from zoo.specs import ModelSpec
from zoo.tags import attach, source_of, spec_of, tokenizer_of
from zoo.version import __version__

FORMAT_VERSION = 1
SPEC_FILE, WEIGHTS_FILE, MANIFEST_FILE = "spec.json", "model.safetensors", "manifest.json"
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
        publish_dir(tmp, path)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArtifactError(f"writing {path} failed: {err.strerror or err}; nothing was replaced") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_dir(tmp: Path, path: Path) -> None:
    """Make the finished directory ``tmp`` appear as ``path`` in one rename (replacing it)."""
    _fsync_dir(tmp)
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def _fsync_dir(folder: Path) -> None:
    for file in folder.rglob("*"):
        if file.is_file():
            with open(file, "rb") as fh:
                os.fsync(fh.fileno())


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


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


DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
TensorInfo = tuple[tuple[int, ...], Any]  # (shape, torch.dtype or the file's unknown dtype code)


def _unreadable(path: Path, err: BaseException) -> ArtifactError:
    return ArtifactError(f"{path}: not a readable safetensors file ({shorten(str(err))}); it is truncated or corrupt")


def _guarded(path: Path, read: Any) -> Any:
    """Run ``read()``; any failure of the safetensors reader (a Rust panic included) names the file."""
    regular_file(path)
    try:
        return read()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # pyo3's PanicException derives from BaseException
        raise _unreadable(path, err) from None


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Shape and dtype of every tensor in a safetensors file, from its header (no data is read)."""

    def read() -> dict[str, TensorInfo]:
        with safe_open(str(path), framework="pt") as fh:
            out: dict[str, TensorInfo] = {}
            for name in fh.keys():  # noqa: SIM118
                part = fh.get_slice(name)
                code = part.get_dtype()
                out[name] = (tuple(int(d) for d in part.get_shape()), DTYPES.get(code, code))
            return out

    info: dict[str, TensorInfo] = _guarded(path, read)
    return info


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a truncated or corrupt file is an `ArtifactError` naming it."""

    def read() -> dict[str, torch.Tensor]:
        with safe_open(str(path), framework="pt") as fh:
            return {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118

    tensors: dict[str, torch.Tensor] = _guarded(path, read)
    return tensors


class Weights:
    """A safetensors file read once into memory: its sha256 is of these very bytes, and its tensors
    are views of them (no second read, no copy). The header is parsed here, every field checked,
    so a hostile file is an `ArtifactError` naming it and never reaches memory it does not own."""

    HEADER_LIMIT = 100 << 20

    def __init__(self, path: Path) -> None:
        size = regular_file(path).st_size
        self.path, self.data = path, bytearray(size)
        with open(path, "rb") as fh:
            if fh.readinto(self.data) != size:
                raise ArtifactError(f"{path}: changed while being read")
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.entries = self._parse()

    def _bad(self, why: str) -> ArtifactError:
        return ArtifactError(f"{self.path}: not a readable safetensors file ({why}); it is truncated or corrupt")

    def _parse(self) -> dict[str, tuple[tuple[int, ...], Any, int, int]]:
        if len(self.data) < 8:
            raise self._bad("shorter than its header length")
        n = int.from_bytes(self.data[:8], "little")
        if n > min(self.HEADER_LIMIT, len(self.data) - 8):
            raise self._bad(f"header of {n} bytes in a file of {len(self.data)}")

        try:
            header = parse_json(bytes(self.data[8 : 8 + n]).decode("utf-8", "replace"), "header", ArtifactError)
        except ArtifactError as err:
            raise self._bad(shorten(str(err))) from None
        if not isinstance(header, dict):
            raise self._bad("the header is not a JSON object")
        base, body = 8 + n, len(self.data) - 8 - n
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            ok = (
                isinstance(info, dict)
                and isinstance(info.get("shape"), list)
                and isinstance(info.get("data_offsets"), list)
            )
            shape, offsets = (info.get("shape"), info.get("data_offsets")) if ok else ([], [])
            dims_ok = ok and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            offs_ok = len(offsets) == 2 and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            dtype = DTYPES.get(info.get("dtype")) if ok else None
            if not (dims_ok and offs_ok and dtype is not None):
                raise self._bad(f"tensor {shorten(name, 80)}: shape, dtype or offsets malformed")
            start, end = offsets
            count = 1
            for d in shape:
                count *= d
            itemsize = torch.empty((), dtype=dtype).element_size()
            if not 0 <= start <= end <= body or end - start != count * itemsize:
                raise self._bad(f"tensor {shorten(name, 80)}: data offsets do not fit its shape and dtype")
            out[name] = (tuple(shape), dtype, base + start, count)
        return out

    def info(self) -> dict[str, TensorInfo]:
        return {name: (shape, dtype) for name, (shape, dtype, _, _) in self.entries.items()}

    def tensors(self) -> dict[str, torch.Tensor]:
        """Views of the bytes read (nothing copied); they keep the buffer alive."""
        out = {}
        for name, (shape, dtype, offset, count) in self.entries.items():
            if not count:
                out[name] = torch.empty(shape, dtype=dtype)
                continue
            itemsize = torch.empty((), dtype=dtype).element_size()
            # a view needs its offset aligned to the element size (safetensors aligns; others may not)
            source = self.data if offset % itemsize == 0 else bytearray(self.data[offset : offset + count * itemsize])
            start = offset if source is self.data else 0
            out[name] = torch.frombuffer(source, dtype=dtype, count=count, offset=start).view(shape)
        return out


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


def tensor_info(state: Mapping[str, torch.Tensor]) -> dict[str, TensorInfo]:
    return {name: (tuple(t.shape), t.dtype) for name, t in state.items()}


def expand(tensors: Mapping[str, Any], aliases: Mapping[str, str]) -> dict[str, Any]:
    """Undo `dedupe`: every alias name gets its tensor (or its header entry) back."""
    full = dict(tensors)
    for alias, target in aliases.items():
        if target in full:
            full[alias] = full[target]
    return full


def check_tensors(expected: Mapping[str, TensorInfo], found: Mapping[str, TensorInfo], where: str) -> None:
    """Names, shapes and dtypes (`tensor_info`, `read_header`) must match the model's; the error
    lists the missing, unexpected, mis-shaped and mis-typed tensors."""
    missing = [n for n in expected if n not in found]
    unexpected = [shorten(n, 80) for n in found if n not in expected]
    misshaped = [
        f"{n} (file {found[n][0]}, model {shape})"
        for n, (shape, _) in expected.items()
        if n in found and found[n][0] != shape
    ]
    mistyped = [
        f"{n} (file {found[n][1]}, model {dtype})"
        for n, (shape, dtype) in expected.items()
        if n in found and found[n][0] == shape and found[n][1] != dtype
    ]
    problems = []
    for label, names in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", misshaped),
        ("wrong dtype", mistyped),
    ):
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


def refuse_pickles(folder: Path) -> None:
    """A folder with pickled weights and no safetensors is refused, saying how to convert it."""
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ArtifactError(
            f"{folder}: holds {', '.join(pickles[:5])} but no safetensors weights; zoo never loads pickle "
            "files (loading one can run arbitrary code). In an environment you trust, convert them: "
            "model = AutoModel.from_pretrained(folder); model.save_pretrained(folder, safe_serialization=True)"
        )


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
