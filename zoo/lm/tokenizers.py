"""Tokenizers: byte-level (the default: nothing to train or download) and BPE trained with HF
`tokenizers` on the corpus. Specs are pure pydantic; artifacts record which one a model needs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from zoo.config import default_config
from zoo.errors import ArtifactError, DataError, ZooError
from zoo.files import read_text, shorten
from zoo.protocols import CausalLM, Tokenizer
from zoo.specs import STRICT
from zoo.tags import tokenizer_of


class ByteTokenizerSpec(BaseModel):
    """UTF-8 bytes as tokens: vocabulary 256."""

    model_config = STRICT
    type: Literal["byte"] = "byte"


class BPETokenizerSpec(BaseModel):
    """Byte-level BPE trained on the training corpus with HF `tokenizers`, saved with the model."""

    model_config = STRICT
    type: Literal["bpe"] = "bpe"
    vocab_size: int = Field(1024, ge=260, le=65536, description="vocabulary size including special tokens")
    min_frequency: int = Field(2, ge=1, description="minimum pair frequency for a merge")


TokenizerSpec = Annotated[ByteTokenizerSpec | BPETokenizerSpec, Field(discriminator="type")]


class ByteTokenizer:
    vocab_size = 256
    eos_id: int | None = None
    pad_id = 0

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def save(self, folder: Path) -> dict[str, Any]:
        """The same byte-level tokenizer as transformers reads it (``AutoTokenizer`` encodes to
        the same ids), when the `tokenizers` package is installed; otherwise nothing to write."""
        try:
            tok = byte_level_tokenizer()
        except DataError:
            return self.describe()
        write_transformers_files(folder, tok.to_str())
        return self.describe()

    def describe(self) -> dict[str, Any]:
        return {"type": "byte", "vocab_size": 256}


def byte_level_tokenizer() -> Any:
    """A `tokenizers.Tokenizer` whose id for every byte is the byte (GPT-2's byte-to-character map,
    no merges): what `ByteTokenizer` does, in the format transformers loads."""
    tk = _require_tokenizers()
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    chars = {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}
    tok = tk.Tokenizer(tk.models.BPE(vocab={chars[b]: b for b in range(256)}, merges=[]))
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = tk.decoders.ByteLevel()
    return tok


def write_transformers_files(folder: Path, tokenizer_json: str, **specials: str | None) -> None:
    """``tokenizer.json`` with the ``tokenizer_config.json`` and ``special_tokens_map.json`` that
    transformers' ``AutoTokenizer.from_pretrained(folder)`` reads (written without transformers)."""
    named = {k: v for k, v in specials.items() if v is not None}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False, **named}
    (folder / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(named, indent=2) + "\n")


SPECIALS = ("<|pad|>", "<|endoftext|>")


class HFTokenizer:
    """A `tokenizers.Tokenizer` (trained BPE, or loaded from a local tokenizer.json)."""

    def __init__(self, tok: Any, eos_token: str | None = None, pad_token: str | None = None) -> None:
        self.tok = tok
        self.vocab_size = int(tok.get_vocab_size())
        self.eos_token, self.pad_token = eos_token or SPECIALS[1], pad_token or SPECIALS[0]
        self.eos_id = tok.token_to_id(self.eos_token)
        pad = tok.token_to_id(self.pad_token)
        self.pad_id = pad if pad is not None else (self.eos_id or 0)

    def encode(self, text: str) -> list[int]:
        with rust_panics("encode text"):
            return list(self.tok.encode(text).ids)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        with rust_panics("encode text"):
            return [e.ids for e in self.tok.encode_batch(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        return str(self.tok.decode([int(i) for i in ids], skip_special_tokens=True))

    def save(self, folder: Path) -> dict[str, Any]:
        write_transformers_files(folder, self.tok.to_str(), eos_token=self.eos_token, pad_token=self.pad_token)
        return self.describe()

    def describe(self) -> dict[str, Any]:
        return {
            "type": "bpe",
            "vocab_size": self.vocab_size,
            "file": "tokenizer.json",
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
        }


@contextlib.contextmanager
def rust_panics(what: str) -> Iterator[None]:
    """A crafted tokenizer.json can panic inside `tokenizers` (Rust) at encode time, as at load
    time (a pre-tokenizer regex past its backtracking limit): one message, not a traceback."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # pyo3's PanicException is a BaseException
        raise DataError(f"the tokenizer failed to {what} ({type(err).__name__}: {shorten(str(err))})") from None


def _require_tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise DataError("the BPE tokenizer needs the `tokenizers` package: pip install 'zoo[bpe]'") from None
    return tokenizers


def train_bpe(spec: BPETokenizerSpec, texts: Iterator[str]) -> HFTokenizer:
    tk = _require_tokenizers()
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=spec.min_frequency,
        special_tokens=list(SPECIALS),
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return HFTokenizer(tok)


def build_tokenizer(spec: ByteTokenizerSpec | BPETokenizerSpec, texts: Iterator[str] | None = None) -> Tokenizer:
    if isinstance(spec, ByteTokenizerSpec):
        return ByteTokenizer()
    if texts is None:
        raise DataError("a BPE tokenizer must be trained on a corpus")
    return train_bpe(spec, texts)


def load_tokenizer(folder: Path, desc: dict[str, Any], *, config: Any = None) -> Tokenizer:
    """Restore the tokenizer an artifact recorded in its manifest, through the plugin that
    registered its ``type`` (`zoo_register_tokenizers`: zoo's own are byte and bpe)."""
    kind = desc.get("type")
    known = (config or default_config()).registry.tokenizers
    entry = known.get(kind) if isinstance(kind, str) else None
    if entry is None:
        names = ", ".join(sorted(known)) or "none"
        raise ArtifactError(
            f"tokenizer type {shorten(repr(kind), 40)} is not registered (known: {names}); "
            "install the plugin that saved it (zoo-hf for 'hf')"
        )
    tokenizer = entry.load(folder, desc)
    if not isinstance(tokenizer, Tokenizer):
        raise ArtifactError(f"tokenizer type {kind!r} ({entry.distribution}) did not return a zoo.Tokenizer")
    return tokenizer


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")  # what transformers' save_pretrained writes


class MissingTokenizer(ZooError):
    """A model with a vocabulary other than bytes and no tokenizer, opened to read or write text."""


def text_tokenizer(model: Any, where: str | Path) -> Tokenizer:
    """The tokenizer that turns text into ``model``'s ids: the one it was saved or loaded with;
    with none, bytes when its vocabulary is the byte vocabulary (what zoo trains by default).
    A larger vocabulary without a tokenizer is refused: byte ids in a BPE model's vocabulary
    would give nonsense text, silently. ``where`` names the model in the message."""
    tokenizer = tokenizer_of(model)
    if tokenizer is not None:
        return tokenizer
    if not isinstance(model, CausalLM) or int(model.vocab_size) == ByteTokenizer.vocab_size:
        return ByteTokenizer()
    raise MissingTokenizer(
        f"{where}: the model has a {int(model.vocab_size):,}-token vocabulary but no tokenizer "
        f"({' and '.join(TOKENIZER_FILES)} are missing), so zoo cannot turn text into its ids (bytes cover "
        f"only {ByteTokenizer.vocab_size}). {_how_to_add(Path(where))}; or name one: --tokenizer PATH (a folder "
        "holding those files) or --tokenizer byte (in Python: pass the tokenizer)"
    )


def _how_to_add(folder: Path) -> str:
    if (folder / "manifest.json").is_file() or (folder / "model" / "manifest.json").is_file():
        # an artifact's tokenizer is the one its manifest records, never loose files beside it
        return "Save the artifact again with its tokenizer: zoo.save(model, PATH, tokenizer=...)"
    files = " and ".join(TOKENIZER_FILES)
    target = repr(str(folder)) if folder.is_dir() else "FOLDER"
    return (
        f"Put the tokenizer it was trained with beside its weights: copy {files} from the model's source, "
        f"or run AutoTokenizer.from_pretrained(SOURCE).save_pretrained({target})"
    )


def named_tokenizer(name: str | Path, *, config: Any = None) -> Tokenizer:
    """``--tokenizer``: ``byte``, or a folder with a tokenizer as transformers saves it (read by the
    ``hf`` kind when zoo-hf is installed, else as a plain tokenizer.json)."""
    if str(name) == "byte":
        return ByteTokenizer()
    folder = Path(name).expanduser()
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise MissingTokenizer(f"--tokenizer {name}: not 'byte' nor a folder with {' or '.join(TOKENIZER_FILES)}")
    kind = "hf" if "hf" in (config or default_config()).registry.tokenizers else "bpe"
    return load_tokenizer(folder, {"type": kind, "file": "tokenizer.json"}, config=config)


def tokenizer_argument(p: argparse.ArgumentParser) -> None:
    """``--tokenizer``, the same on every command that reads or writes a causal LM's text."""
    p.add_argument(
        "--tokenizer",
        metavar="PATH|byte",
        help="encode text with this tokenizer instead of the model's own: a folder with tokenizer.json "
        "(e.g. the model's source) or 'byte' (needed for a model with no tokenizer and a vocabulary other than bytes)",
    )


def load_byte(folder: Path, desc: dict[str, Any]) -> Tokenizer:
    return ByteTokenizer()


def load_bpe(folder: Path, desc: dict[str, Any]) -> Tokenizer:
    """A tokenizer.json, read with `tokenizers` (never code, never the network)."""
    path = folder / str(desc.get("file", "tokenizer.json"))
    text = read_text(path, limit=256 << 20)  # a regular UTF-8 file of sane size, or an error naming it
    tk = _require_tokenizers()
    try:
        return HFTokenizer(tk.Tokenizer.from_str(text), desc.get("eos_token"), desc.get("pad_token"))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # `tokenizers` raises, or panics (Rust), on a crafted file
        raise ArtifactError(f"{path}: unreadable tokenizer ({shorten(str(err))})") from None
