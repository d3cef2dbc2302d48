"""Reading files that come from other people: bounded in size and depth, validated, one message.

Every JSON or text file zoo reads (spec.json, manifest.json, run.json, state.json, tokens.json,
metrics.jsonl, registry.toml, HF config files) goes through here. A file that is not a regular
file, is too large, is not UTF-8, is not JSON, nests too deeply, holds integers too large to
parse, or does not fit its pydantic model is one `ZooError` naming the file, never a traceback.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from zoo.errors import ArtifactError, ZooError

MAX_JSON_BYTES = 64 << 20  # a config or manifest larger than this is not one zoo wrote
MAX_DEPTH = 48  # nesting deeper than this is never a real spec or config
QUOTE = 200  # characters of a bad value an error message shows

M = TypeVar("M", bound=BaseModel)
ErrorType = Callable[[str], ZooError]

# The models of files zoo writes itself: unknown keys are tolerated (newer versions may add some),
# but every key zoo reads has a type and a bound.
LENIENT = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False, protected_namespaces=())


def shorten(value: Any, limit: int = QUOTE) -> str:
    """``repr(value)`` (a string as it is, on one line) cut to about ``limit`` characters, for
    error messages."""
    try:
        text = " ".join(value.split()) if isinstance(value, str) else repr(value)
    except ValueError:  # an int past the digit limit has no repr
        text = f"<a very large {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of dicts and lists, counted without recursion; stops past ``limit``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list, tuple)):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, level + 1) for child in children)
    return deepest


def check_depth(value: Any, where: str, error: ErrorType = ArtifactError, limit: int = MAX_DEPTH) -> Any:
    if depth(value, limit) > limit:
        raise error(f"{where}: nested more than {limit} levels deep")
    return value


def regular_file(path: Path, error: ErrorType = ArtifactError, *, what: str = "file") -> os.stat_result:
    """``stat`` of a regular file (symlinks followed); anything else (missing, a folder, a FIFO,
    a device, a symlink loop) is an error naming it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: {what} is missing") from None
    except OSError as err:
        raise error(f"{path}: cannot read ({err.strerror or err})") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path}: not a regular file")
    return info


def why_unreadable(path: Path) -> str:
    """Why ``path`` is neither a regular file nor a folder, as the OS says it: missing, a device or
    FIFO, a name too long, a path through a file, no permission, a NUL byte."""
    try:
        info = os.stat(path)
    except ValueError:
        return "the path contains a NUL byte"
    except FileNotFoundError:
        return "no such file or folder"
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode):
        return "not readable" if not os.access(path, os.R_OK) else "readable"
    return "not a regular file or folder (a device, FIFO or socket)"


NAME_MAX, PATH_MAX = 255, 4095  # bytes: what Linux and macOS file systems take
IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".svgz", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".gif", ".eps", ".ps")


def check_path_name(path: str | Path, what: str, error: ErrorType = ZooError) -> Path:
    """A path the OS will take as a name: no NUL byte, no name past 255 bytes or path past 4095."""
    text = str(path)
    if "\0" in text:
        raise error(f"{what} {shorten(text)}: the path contains a NUL byte")
    for part in Path(text).parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise error(f"{what} {shorten(text, 80)}: a name longer than {NAME_MAX} bytes ({shorten(part, 40)})")
    if len(os.fsencode(text)) > PATH_MAX:
        raise error(f"{what} {shorten(text, 80)}: longer than {PATH_MAX} bytes")
    return Path(text)


def check_image_out(path: str | Path, what: str) -> Path:
    """A picture zoo is about to write: a format it can write, and a folder that takes the file;
    checked before any work is done."""
    out = check_path_name(path, what)
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise ZooError(
            f"{what} {out}: cannot write a {out.suffix or 'suffix-less'} picture; use {', '.join(IMAGE_SUFFIXES)}"
        )
    folder = out.parent
    if out.is_dir():
        raise ZooError(f"{what} {out}: a folder")
    if not folder.is_dir():
        why = "a file" if folder.exists() else why_unreadable(folder)
        raise ZooError(f"{what} {out}: {folder} is not a folder ({why})")
    if not os.access(folder, os.W_OK):
        raise ZooError(f"{what} {out}: {folder} is not writable")
    return out


def read_text(path: str | Path, error: ErrorType = ArtifactError, *, limit: int = MAX_JSON_BYTES) -> str:
    """A UTF-8 text file of at most ``limit`` bytes."""
    path = Path(path)
    regular_file(path, error)
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as err:
        raise error(f"{path}: cannot read ({err.strerror or err})") from None
    if len(data) > limit:
        raise error(f"{path}: larger than {limit >> 20} MiB; not a file zoo reads")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text (byte {err.start})") from None


def parse_json(text: str, where: str, error: ErrorType = ArtifactError) -> Any:
    """JSON text to Python values, bounded in depth; integers past Python's digit limit refused."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise error(f"{where}: nested too deeply to be valid") from None
    except ValueError as err:  # JSONDecodeError, and ints beyond sys.get_int_max_str_digits()
        raise error(f"{where}: not valid JSON ({shorten(str(err))})") from None
    return check_depth(value, where, error)


def read_json(path: str | Path, error: ErrorType = ArtifactError, *, limit: int = MAX_JSON_BYTES) -> Any:
    path = Path(path)
    return parse_json(read_text(path, error, limit=limit), str(path), error)


def validate_file_model(model: type[M], data: Any, where: str, error: ErrorType = ArtifactError) -> M:
    """``model.model_validate(data)``; the first problems name the file and the key path."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors(include_url=False)[:3]:
            loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
            problems.append(f"{loc}: {e['msg']}")
        raise error(f"{where}: unexpected content; " + "; ".join(problems)) from None
    except RecursionError:
        raise error(f"{where}: nested too deeply to be valid") from None


def read_model(path: str | Path, model: type[M], error: ErrorType = ArtifactError) -> M:
    """Read a JSON file and validate it with ``model``."""
    return validate_file_model(model, read_json(path, error), str(path), error)
