"""The `causal-lm` trainer: next-token prediction on text through the training engine."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo.data.text import TokenData, iter_chunks, iter_texts, sources, tokenize_to_file, windows
from zoo.engine import Batch, EngineTrainer
from zoo.errors import DataError
from zoo.runtime import Runtime
from zoo.tokenizers import Tokenizer, build_tokenizer, load_tokenizer
from zoo.trainers.specs import CausalLMTrainerSpec

IGNORE = -100  # targets never scored (none here: windows of a token stream hold no padding)
EVAL_SEED = 1234  # the same validation windows at every evaluation, independent of training RNG


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over scored targets; logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


class CausalLMTask:
    unit = "tokens"

    def __init__(self, data: TokenData, context: int) -> None:
        self.train_tokens, self.val_tokens = data.train(), data.val()
        self.context = context
        for name, split in (("training", self.train_tokens), ("validation", self.val_tokens)):
            if len(split) < context + 1:
                raise DataError(
                    f"the {name} split has {len(split)} tokens, fewer than context + 1 = {context + 1}; "
                    "use more text, a shorter context, or another val_fraction"
                )

    def _batch(self, tokens: np.ndarray, generator: torch.Generator, n: int) -> Batch:
        starts = torch.randint(0, len(tokens) - self.context, (n,), generator=generator)
        # every target is a real token, the pad id included: a tokenizer whose pad id equals its EOS id
        # (common) must still learn to emit EOS
        return windows(tokens, starts, self.context)

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
        losses = []
        for _ in range(batches):
            x, y = runtime.to_device(self._batch(self.val_tokens, g, 8))
            logits, _ = model(x)
            losses.append(float(lm_loss(logits, y)))
        loss = sum(losses) / len(losses)
        return {"val_loss": loss, "val_ppl": float(np.exp(min(loss, 50.0)))}


class CausalLMTrainer(EngineTrainer):
    spec: CausalLMTrainerSpec

    def tokenizer(self, data: str | Path | None, folder: Path, resume: bool) -> Tokenizer:
        """Byte-level, or a BPE trained on the corpus once (a resumed run reuses it)."""
        saved = folder / "tokenizer.json"
        if self.spec.tokenizer.type == "bpe" and resume and os.path.lexists(saved):
            return load_tokenizer(folder, {"type": "bpe", "file": "tokenizer.json"})
        tok = build_tokenizer(self.spec.tokenizer, iter_texts(data))
        if self.spec.tokenizer.type == "bpe":
            folder.mkdir(parents=True, exist_ok=True)
            if saved.is_symlink():  # never write through a planted link
                saved.unlink()
            tok.save(folder)
        return tok

    def check_data(self, model: nn.Module, data: str | Path | None) -> None:
        """Every source exists and starts as UTF-8 text (the rest is checked while tokenizing)."""
        for source in sources(data):
            next(iter_chunks(source, 1 << 16), None)

    def make_task(
        self, model: nn.Module, runtime: Runtime, data: str | Path | None, cache: Path, resume: bool
    ) -> CausalLMTask:
        """Tokenizer and token data (rank 0 writes the cache in ``cache``, the others read it)."""
        tok: Tokenizer | None = getattr(model, "zoo_tokenizer", None)  # a model may bring its own
        if tok is None:
            tok = self.tokenizer(data, cache, resume) if runtime.is_main else None
            runtime.dist.barrier()
            if tok is None:
                tok = self.tokenizer(data, cache, True)
        vocab = int(getattr(model, "vocab_size", 0))
        if tok.vocab_size > vocab:
            raise DataError(
                f"the tokenizer has {tok.vocab_size} tokens but the model's vocab_size is {vocab}; "
                f"set the model's vocab_size to at least {tok.vocab_size}"
            )
        max_len = int(getattr(model, "max_seq_len", 0))
        context = self.spec.context or max_len
        if context > max_len:
            raise DataError(f"context {context} exceeds the model's max_seq_len {max_len}")
        tokens = tokenize_to_file(data, tok, cache) if runtime.is_main else None
        runtime.dist.barrier()
        if tokens is None:
            tokens = tokenize_to_file(data, tok, cache)
        setattr(model, "zoo_tokenizer", tok)  # noqa: B010  (saved with the artifact)
        return CausalLMTask(TokenData(tokens, self.spec.val_fraction), context)
