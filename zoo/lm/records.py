"""Text as records for causal LMs: documents and chat conversations, from JSON lines, Hugging Face
`datasets` local files, or any Python sequence (a ``torch.utils.data.Dataset`` included).

A document is packed into the token stream with the tokenizer's EOS after it; a conversation
(``{"messages": [{"role", "content"}, ...]}``) is formatted with the tokenizer's chat template,
and only the assistant's tokens (its closing token included) are scored. Every bad record is one
`DataError` naming the file and line (or row).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zoo.errors import DataError, ZooError
from zoo.files import parse_json, shorten
from zoo.protocols import ChatTemplate, Tokenizer

Record = str | list[dict[str, str]]  # a document, or a conversation


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(max_length=1 << 24)


class ChatRecord(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)  # other fields (ids, metadata) are ignored
    messages: list[Message] = Field(min_length=1)


def to_record(value: Any, where: str, text_field: str, messages_field: str) -> Record:
    """A document or a conversation from one record; `DataError` naming ``where`` for anything else."""
    if isinstance(value, str):
        return value
    if not isinstance(value, Mapping):
        raise DataError(f"{where}: a record is a JSON object (or text), got {type(value).__name__}")
    if messages_field in value:
        try:
            chat = ChatRecord.model_validate({"messages": value[messages_field]})
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(p) for p in (messages_field, *first["loc"][1:]))
            raise DataError(f"{where}: {loc}: {first['msg']} (a message is {{'role', 'content'}})") from None
        if not any(m.role == "assistant" for m in chat.messages):
            raise DataError(f"{where}: the conversation has no assistant message, so nothing in it would be trained")
        return [m.model_dump() for m in chat.messages]
    text = value.get(text_field)
    if isinstance(text, str):
        return text
    fields = ", ".join(sorted(map(str, value))[:8]) or "none"
    raise DataError(
        f"{where}: no {text_field!r} text or {messages_field!r} list (fields: {shorten(fields)}); "
        "set data_options text_field / messages_field"
    )


@dataclass
class Records:
    """Records from ``rows`` (``(where, value)`` pairs, read when iterated): a `zoo.RecordSource`."""

    name: str
    rows: Callable[[], Iterator[tuple[str, Any]]]  # (where, value) pairs, read afresh on each call
    key: list[Any]
    text_field: str = "text"
    messages_field: str = "messages"

    def fingerprint(self) -> list[Any]:
        return [*self.key, self.text_field, self.messages_field]

    def records(self) -> Iterator[tuple[str, Record]]:
        empty = True
        for where, value in self.rows():
            empty = False
            yield where, to_record(value, where, self.text_field, self.messages_field)
        if empty:
            raise DataError(f"{self.name}: no records")

    def chunks(self) -> Iterator[str]:
        """The records' text (documents, and every message's content), for tokenizer training."""
        for _, record in self.records():
            yield record if isinstance(record, str) else "\n".join(m["content"] for m in record)


def read_jsonl(path: Path, options: Mapping[str, Any]) -> list[Any]:
    """The ``jsonl`` data source: one JSON object per line, ``{"text": ...}`` or ``{"messages": [...]}``."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")

    def rows() -> Iterator[tuple[str, Any]]:
        with open(path, "rb") as fh:
            for n, raw in enumerate(fh, 1):
                where = f"{path}:{n}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise DataError(f"{where}: not valid UTF-8") from None
                if line.strip():
                    yield where, parse_json(line, where, DataError)

    stat = path.stat()
    return [Records(str(path), rows, [str(path.resolve()), stat.st_size, stat.st_mtime_ns], **_fields(options))]


BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


def read_hf_dataset(path: Path, options: Mapping[str, Any]) -> list[Any]:
    """The ``hf-datasets`` data source: a local file (or folder of them) read by Hugging Face
    `datasets` (text, json/jsonl, parquet, csv, arrow), offline; rows give documents or chats."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if not files or not path.exists():
        raise DataError(f"{path}: no such file, or an empty folder")
    builder = options.get("builder") or BUILDERS.get(files[0].suffix.lower())
    if builder not in set(BUILDERS.values()):
        raise DataError(
            f"{path}: `datasets` has no local reader for {files[0].suffix or 'files without a suffix'}; "
            f"set data_options.builder to one of {', '.join(sorted(set(BUILDERS.values())))}"
        )
    try:
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local files only: nothing reaches the network
        import datasets
    except ImportError:
        raise DataError("the hf-datasets data source needs `datasets`: pip install 'zoo[datasets]'") from None
    try:
        table = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
    except Exception as err:  # datasets raises many types for a bad file; one message naming it
        raise DataError(
            f"{path}: `datasets` could not read it as {builder}: {type(err).__name__}: {shorten(err)}"
        ) from None

    def rows() -> Iterator[tuple[str, Any]]:
        for i, row in enumerate(table):
            yield f"{path}: row {i + 1}", row

    key = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    return [Records(str(path), rows, [builder, key], **_fields(options))]


def from_sequence(items: Sequence[Any], name: str | None = None) -> list[Any]:
    """Records from any indexable collection (a ``torch.utils.data.Dataset``, a list): texts or
    ``{"text"}`` / ``{"messages"}`` dicts. It is tokenized again by every run (it has no file to key a cache on)."""
    try:
        n = len(items)
    except TypeError:
        raise DataError(f"{type(items).__name__}: a dataset given from Python needs len() and indexing") from None
    label = name or type(items).__name__

    def rows() -> Iterator[tuple[str, Any]]:
        for i in range(n):
            yield f"{label}[{i}]", items[i]

    return [Records(label, rows, [label, n, uuid.uuid4().hex])]


def _fields(options: Mapping[str, Any]) -> dict[str, str]:
    known = {"text_field", "messages_field", "builder"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise DataError(f"data_options: unknown {', '.join(unknown)} (this source takes {', '.join(sorted(known))})")
    return {k: str(options[k]) for k in ("text_field", "messages_field") if k in options}


@dataclass
class Encoded:
    """Token ids of one record and which of them are scored as targets."""

    ids: list[int]
    scored: list[bool] = field(default_factory=list)


def encode_record(tokenizer: Tokenizer, record: Record, where: str) -> Encoded:
    """A document with EOS after it (all scored), or a conversation scored on the assistant only."""
    if isinstance(record, str):
        end = [tokenizer.eos_id] if tokenizer.eos_id is not None else tokenizer.encode("\n\n")
        ids = tokenizer.encode(record) + end
        return Encoded(ids, [True] * len(ids))
    if not isinstance(tokenizer, ChatTemplate):
        raise DataError(
            f"{where}: a conversation needs a tokenizer with a chat template ({type(tokenizer).__name__} has "
            "none); fine-tune a model that has one (e.g. --init-from a Hugging Face folder)"
        )
    try:
        full = tokenizer.apply_chat_template(record, add_generation_prompt=False)
        scored = [False] * len(full)
        for k, message in enumerate(record):
            if message["role"] != "assistant":
                continue
            start = len(tokenizer.apply_chat_template(record[:k], add_generation_prompt=True))
            upto = tokenizer.apply_chat_template(record[: k + 1], add_generation_prompt=False)
            if full[: len(upto)] != upto or start > len(upto):
                raise DataError(
                    f"{where}: the chat template does not write this conversation turn by turn (a later turn "
                    "changes earlier tokens), so the assistant's tokens cannot be told apart"
                )
            scored[start : len(upto)] = [True] * (len(upto) - start)
    except DataError:  # already names the record
        raise
    except ZooError as err:
        raise DataError(f"{where}: {err}") from None
    return Encoded(full, scored)
