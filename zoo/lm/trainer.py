"""The `causal-lm` trainer: next-token prediction on text through the training engine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from zoo.data.sources import open_data
from zoo.errors import DataError
from zoo.lm.records import from_sequence
from zoo.lm.specs import CausalLMTrainerSpec
from zoo.lm.text_data import IGNORE, DefaultCorpus, TokenData, Tokens, iter_texts, tokenize_to_file, windows
from zoo.lm.tokenizers import build_tokenizer, load_tokenizer
from zoo.protocols import CausalLM, TextSource, Tokenizer
from zoo.runtime import Runtime
from zoo.tags import attach, spec_of, tokenizer_of
from zoo.trainers.engine import Batch, EngineTrainer, as_path, data_key

EVAL_SEED = 1234  # the same validation windows at every evaluation, independent of training RNG


# Low-precision logits are scored this many elements at a time in fp32: the fp32 copy of a whole
# batch's logits (16 x 1024 x 50304 floats = 3.3 GB for GPT-2 small) is never materialised.
CE_CHUNK_ELEMENTS = 1 << 25


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over scored targets (0 when a batch has none); logits (B, T, V), targets (B, T).

    bf16/fp16 logits are upcast chunk by chunk; in training each chunk's fp32 copy is recomputed in
    the backward pass rather than kept (activation checkpointing), so its memory is one chunk's."""
    flat, rows = targets.flatten(), logits.flatten(0, 1)
    scored = (flat != IGNORE).sum().clamp(min=1)
    per_chunk = max(1, CE_CHUNK_ELEMENTS // max(1, rows.shape[-1]))
    if rows.dtype == torch.float32 or rows.shape[0] <= per_chunk:
        return _ce_sum(rows, flat) / scored
    pieces = zip(rows.split(per_chunk), flat.split(per_chunk), strict=True)  # split: one concatenated gradient
    if torch.is_grad_enabled() and rows.requires_grad:
        sums = [checkpoint(_ce_sum, r, t, use_reentrant=False) for r, t in pieces]
    else:
        sums = [_ce_sum(r, t) for r, t in pieces]
    return torch.stack(sums).sum() / scored


def _ce_sum(rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(rows.float(), targets, ignore_index=IGNORE, reduction="sum")


class CausalLMTask:
    unit = "tokens"

    def __init__(self, data: TokenData, context: int) -> None:
        self.summary: dict[str, float] = {}
        self.train_tokens, self.val_tokens = data.train(), data.val()
        self.context = context
        for name, (split, _) in (("training", self.train_tokens), ("validation", self.val_tokens)):
            if len(split) < context + 1:
                raise DataError(
                    f"the {name} split has {len(split)} tokens, fewer than context + 1 = {context + 1}; "
                    "use more text, a shorter context, or another val_fraction"
                )

    def _batch(self, split: Tokens, generator: torch.Generator, n: int) -> Batch:
        tokens, scored = split
        starts = torch.randint(0, len(tokens) - self.context, (n,), generator=generator)
        # every target of a text stream is a real token, the pad id included: a tokenizer whose pad id
        # equals its EOS id (common) must still learn to emit EOS; a chat scores the assistant's only
        return windows(tokens, starts, self.context, scored)

    def sample(self, generator: torch.Generator, batch_size: int) -> Batch:
        return self._batch(self.train_tokens, generator, batch_size)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        x, y = batch
        logits, _ = model(x)
        return lm_loss(logits, y)

    def count(self, batch: Batch) -> int:
        return int(batch[0].numel())

    def evaluate(self, model: nn.Module, runtime: Runtime, batches: int) -> dict[str, float]:
        g = torch.Generator().manual_seed(EVAL_SEED)
        total, scored = 0.0, 0
        for _ in range(batches):
            x, y = runtime.to_device(self._batch(self.val_tokens, g, 8))
            logits, _ = model(x)
            n = int((y != IGNORE).sum())
            total += float(lm_loss(logits, y)) * n
            scored += n
        loss = total / max(scored, 1)
        return {"val_loss": loss, "val_ppl": float(np.exp(min(loss, 50.0)))}


class CausalLMTrainer(EngineTrainer):
    spec: CausalLMTrainerSpec

    def __init__(self, spec: CausalLMTrainerSpec) -> None:
        super().__init__(spec)
        self.parts: dict[str, list[TextSource]] = {}  # what check_data opened, for make_task

    def text(self, data: Any) -> list[TextSource]:
        """The corpus: the default one, what the data source for a path returns, or the records of
        a dataset given from Python (texts, ``{"text"}`` or ``{"messages"}`` items)."""
        key = data_key(data)
        if key not in self.parts:
            parts = (
                [DefaultCorpus()]
                if data is None
                else from_sequence(data)
                if as_path(data) is None
                else open_data(
                    self.registry(),
                    data,
                    "causal-lm",
                    data_format=self.spec.data_format,
                    options=self.spec.data_options,
                )
            )
            if not parts or not all(isinstance(p, TextSource) for p in parts):
                raise DataError(f"{data}: the data source returned no text (a list of zoo.protocols.TextSource)")
            self.parts[key] = list(parts)
        return self.parts[key]

    def tokenizer(self, data: str | Path | None, folder: Path, resume: bool) -> Tokenizer:
        """Byte-level, or a BPE trained on the corpus once (a resumed run reuses it)."""
        saved = folder / "tokenizer.json"
        if self.spec.tokenizer.type == "bpe" and resume and os.path.lexists(saved):
            return load_tokenizer(folder, {"type": "bpe", "file": "tokenizer.json"})
        tok = build_tokenizer(self.spec.tokenizer, iter_texts(self.text(data)))
        if self.spec.tokenizer.type == "bpe":
            folder.mkdir(parents=True, exist_ok=True)
            if saved.is_symlink():  # never write through a planted link
                saved.unlink()
            tok.save(folder)
        return tok

    def check_data(self, model: nn.Module, data: str | Path | None) -> None:
        """Every part opens and starts as text (the rest is checked while tokenizing)."""
        for part in self.text(data):
            next(part.chunks(), None)

    def make_task(
        self, model: nn.Module, runtime: Runtime, data: str | Path | None, cache: Path, resume: bool
    ) -> CausalLMTask:
        """Tokenizer and token data (rank 0 writes the cache in ``cache``, the others read it)."""
        if not isinstance(model, CausalLM):
            raise DataError(f"{type(model).__name__} is not a causal LM (zoo.protocols.CausalLM)")
        tok: Tokenizer | None = tokenizer_of(model)  # a model may bring its own
        if tok is None:
            tok = self.tokenizer(data, cache, resume) if runtime.is_main else None
            runtime.dist.barrier()
            if tok is None:
                tok = self.tokenizer(data, cache, True)
        vocab = int(model.vocab_size)
        if tok.vocab_size > vocab:
            raise DataError(
                f"the tokenizer has {tok.vocab_size} tokens but the model's vocab_size is {vocab}; "
                f"set the model's vocab_size to at least {tok.vocab_size}"
            )
        max_len = int(model.max_seq_len)
        context = self.spec.context or max_len
        if context > max_len:
            raise DataError(f"context {context} exceeds the model's max_seq_len {max_len}")
        tokens = tokenize_to_file(self.text(data), tok, cache) if runtime.is_main else None
        runtime.dist.barrier()
        if tokens is None:
            tokens = tokenize_to_file(self.text(data), tok, cache)
        attach(model, spec_of(model), tokenizer=tok)  # saved with the artifact
        return CausalLMTask(TokenData(tokens[0], self.spec.val_fraction, tokens[1]), context)
