"""Files written so that a crash never leaves half of one, and tensors read and written as
safetensors only: the floor below artifacts, checkpoints and adapters.

A folder is written beside its destination and renamed into place (`atomic_dir`); a safetensors
file's header is checked (names, shapes, dtypes, offsets) before its bytes are read; a folder that
holds only pickles is refused, never loaded.
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
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from zoo.errors import ArtifactError
from zoo.files import parse_json, regular_file, shorten

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    # an empty metadata dict makes safetensors write an unreadable header for an empty mapping
    save_file(dict(tensors), str(path), metadata=dict(metadata) if metadata else None)


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


def refuse_pickles(folder: Path) -> None:
    """A folder with pickled weights and no safetensors is refused, saying how to convert it."""
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ArtifactError(
            f"{folder}: holds {', '.join(pickles[:5])} but no safetensors weights; zoo never loads pickle "
            "files (loading one can run arbitrary code). In an environment you trust, convert them: "
            "model = AutoModel.from_pretrained(folder); model.save_pretrained(folder, safe_serialization=True)"
        )
