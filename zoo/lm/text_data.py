"""Text corpora for language models: the ``text`` data source (a file, a folder of .txt files) and
the default corpus.

The default corpus is the English documentation text that ships with every CPython
(`pydoc_data.topics`), so nothing is downloaded. Token ids are written once to a binary file and
memory-mapped, so corpora larger than memory train without loading them whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field

from zoo.errors import DataError, ZooError
from zoo.files import LENIENT, read_model, regular_file, why_unreadable
from zoo.lm.records import encode_record
from zoo.protocols import RecordSource, TextSource, Tokenizer

CHUNK_BYTES = 8 << 20
DEFAULT_CORPUS = "pydoc_data.topics"


@dataclass(frozen=True)
class TextFile:
    """A UTF-8 text file (a `zoo.protocols.TextSource`)."""

    name: str
    path: Path

    def fingerprint(self) -> list[Any]:
        stat = self.path.stat()
        return [str(self.path.resolve()), stat.st_size, stat.st_mtime_ns]

    def chunks(self) -> Iterator[str]:
        return iter_chunks(self.path)


@dataclass(frozen=True)
class DefaultCorpus:
    """The English documentation text of this Python (what a causal-LM trainer reads without --data)."""

    name: str = DEFAULT_CORPUS

    def fingerprint(self) -> list[Any]:
        import sys

        return [self.name, sys.version]

    def chunks(self) -> Iterator[str]:
        yield default_corpus_text()


def read_text_files(path: Path, options: Mapping[str, Any]) -> list[TextSource]:
    """The ``text`` data source: one text file, or every .txt file under a folder (sorted)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"{path}: folder holds no .txt files")
        return [TextFile(str(p), p) for p in files]
    if not path.is_file():
        raise DataError(f"{path}: {why_unreadable(path)}")
    return [TextFile(str(path), path)]


def default_corpus_text() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def iter_chunks(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """Decoded text of a file in chunks cut at line ends; bad files raise `DataError`."""
    offset, seen_any = 0, False
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed by the with below)
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from None
    with fh:
        pending = b""
        while True:
            block = fh.read(chunk_bytes)
            data = pending + block
            if not data:
                break
            if block:
                cut = _safe_cut(data)
                data, pending = data[:cut], data[cut:]
            else:
                pending = b""
            nul = data.find(b"\x00")
            if nul >= 0:
                raise DataError(f"{path}: NUL byte at offset {offset + nul}: a binary file, not text")
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}: not valid UTF-8 at byte {offset + err.start}; convert it (e.g. iconv -t utf-8)"
                ) from None
            offset += len(data)
            if text.strip():
                seen_any = True
            yield text
            if not block:
                break
    if not seen_any:
        raise DataError(f"{path}: file is empty (or only whitespace)")


def _safe_cut(data: bytes) -> int:
    """Where to end a chunk: after the last newline, else before a split UTF-8 sequence."""
    cut = data.rfind(b"\n") + 1
    if cut:
        return cut
    end = len(data)
    for back in range(1, min(4, end) + 1):
        byte = data[end - back]
        if byte < 0x80:  # ASCII: nothing split
            return end
        if byte >= 0xC0:  # lead byte: is its sequence complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return end if back >= need else end - back
    return end


def iter_texts(parts: Sequence[TextSource]) -> Iterator[str]:
    for part in parts:
        yield from part.chunks()


@dataclass
class TokenData:
    """Token ids of a corpus (memory-mapped) with a deterministic train/validation split, and for
    record corpora which targets are scored (chat: the assistant's tokens)."""

    tokens: np.ndarray
    val_fraction: float
    scored: np.ndarray | None = None  # uint8 per token, 1 = scored as a target; None: all are

    @property
    def boundary(self) -> int:
        return len(self.tokens) - int(len(self.tokens) * self.val_fraction)

    def train(self) -> tuple[np.ndarray, np.ndarray | None]:
        cut = self.boundary
        return self.tokens[:cut], None if self.scored is None else self.scored[:cut]

    def val(self) -> tuple[np.ndarray, np.ndarray | None]:
        cut = self.boundary
        return self.tokens[cut:], None if self.scored is None else self.scored[cut:]


Tokens = tuple[np.ndarray, np.ndarray | None]  # ids, and which are scored (None: all)
FORMAT = 2  # bump when the layout of tokens.bin / scored.bin changes


def tokenize_to_file(parts: Sequence[TextSource], tokenizer: Tokenizer, folder: Path) -> Tokens:
    """Encode every part once into ``folder/tokens.bin`` (+ ``scored.bin`` for record sources) and
    memory-map them (reused while the parts and the tokenizer are unchanged)."""
    desc = tokenizer.describe()
    fingerprints = [p.fingerprint() for p in parts]
    key = hashlib.sha256(json.dumps([fingerprints, desc, FORMAT], default=str).encode()).hexdigest()
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    masked = any(isinstance(p, RecordSource) for p in parts)
    meta_path, bin_path, mask_path = folder / "tokens.json", folder / "tokens.bin", folder / "scored.bin"
    cached = _cached_tokens(meta_path, bin_path, mask_path, key)
    if cached is not None:
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    tmp, mask_tmp = bin_path.with_suffix(".bin.tmp"), mask_path.with_suffix(".bin.tmp")
    for stale in (
        tmp,
        mask_tmp,
        bin_path,
        mask_path,
        meta_path,
    ):  # never write through a planted link, or into a folder
        if stale.is_symlink():
            stale.unlink()
        elif stale.is_dir():
            shutil.rmtree(stale)
    n, n_scored = 0, 0
    with open(tmp, "wb") as fh, open(mask_tmp, "wb") if masked else contextlib.nullcontext() as mh:
        for ids, scored in _encoded(parts, tokenizer):
            fh.write(np.asarray(ids, dtype=dtype).tobytes())
            n += len(ids)
            if mh is not None:
                flags = np.ones(len(ids), np.uint8) if scored is None else np.asarray(scored, np.uint8)
                mh.write(flags.tobytes())
                n_scored += int(flags.sum())
    names = ", ".join(p.name for p in parts[:3])
    if n == 0 or (masked and n_scored == 0):
        tmp.unlink()
        mask_tmp.unlink(missing_ok=True)
        raise DataError(f"{names}: no tokens" + (" to score" if n else ""))
    tmp.replace(bin_path)
    if masked:
        mask_tmp.replace(mask_path)
    meta_path.write_text(json.dumps({"key": key, "dtype": np.dtype(dtype).name, "n_tokens": n, "masked": masked}))
    ids_map = np.memmap(bin_path, dtype=dtype, mode="r", shape=(n,))
    return ids_map, np.memmap(mask_path, dtype=np.uint8, mode="r", shape=(n,)) if masked else None


def _encoded(parts: Sequence[TextSource], tokenizer: Tokenizer) -> Iterator[tuple[list[int], list[bool] | None]]:
    """Token ids of every part in order; records also say which ids are scored."""

    for part in parts:
        if isinstance(part, RecordSource):
            for where, record in part.records():
                enc = encode_record(tokenizer, record, where)
                yield enc.ids, enc.scored
        else:
            for text in part.chunks():
                yield tokenizer.encode(text), None


class TokensMeta(BaseModel):
    """``tokens.json``: which corpus and tokenizer ``tokens.bin`` holds, and its layout."""

    model_config = LENIENT
    key: str = Field(max_length=64)
    dtype: Literal["uint16", "uint32"]
    n_tokens: int = Field(gt=0, le=1 << 40)
    masked: bool = False


def _cached_tokens(meta_path: Path, bin_path: Path, mask_path: Path, key: str) -> Tokens | None:
    """The token cache if it is intact and for this corpus; anything else (stale, edited, truncated,
    not a regular file) is rebuilt, since it is only a cache."""
    if not meta_path.exists():
        return None
    try:
        meta = read_model(meta_path, TokensMeta)
        size = regular_file(bin_path).st_size
        mask_size = regular_file(mask_path).st_size if meta.masked else meta.n_tokens
    except ZooError:
        return None
    if meta.key != key or size != meta.n_tokens * np.dtype(meta.dtype).itemsize or mask_size != meta.n_tokens:
        return None
    ids = np.memmap(bin_path, dtype=meta.dtype, mode="r", shape=(meta.n_tokens,))
    return ids, np.memmap(mask_path, dtype=np.uint8, mode="r", shape=(meta.n_tokens,)) if meta.masked else None


IGNORE = -100  # a target never scored


def windows(
    tokens: np.ndarray, starts: torch.Tensor, length: int, scored: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets (B, length) for windows starting at ``starts``; targets not
    scored (a chat's prompt tokens) are `IGNORE`."""
    rows = np.stack([np.asarray(tokens[s : s + length + 1], dtype=np.int64) for s in starts.tolist()])
    block = torch.from_numpy(rows)
    x, y = block[:, :-1], block[:, 1:].clone()
    if scored is not None:
        keep = np.stack([np.asarray(scored[s + 1 : s + length + 1], dtype=bool) for s in starts.tolist()])
        y[~torch.from_numpy(keep)] = IGNORE
    return x, y
