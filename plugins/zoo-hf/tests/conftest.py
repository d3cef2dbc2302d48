"""What the plugin's tests share: tiny Hugging Face model folders (offline: a BPE trained on a
small corpus, a randomly initialised model) and ``hub``, a Hugging Face Hub on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hubserver import hub  # the `hub` fixture: a Hugging Face Hub on 127.0.0.1 (see hubserver.py)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("c") / "c.txt"
    path.write_text("".join(f"{i}: how vexingly quick daft zebras jump!\n" for i in range(300)))
    return path


def write_llama(folder: Path, corpus: Path) -> Path:
    """A 2-layer Llama (grouped-query attention) with its own 300-token BPE tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "</s>"], show_progress=False)
    tok.train([str(corpus)], trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>")
    hf_tok.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=hf_tok.pad_token_id,
        eos_token_id=hf_tok.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def make_llama(corpus: Path) -> Callable[[Path], Path]:
    """``make_llama(folder)`` writes `write_llama`'s model and tokenizer into ``folder``."""
    return lambda folder: write_llama(folder, corpus)


__all__ = ["corpus", "hub", "make_llama", "write_llama"]


@pytest.fixture(autouse=True)
def _command_line_verbosity(monkeypatch: pytest.MonkeyPatch) -> None:
    """`main([...])` records --verbose in the environment (ZOO_VERBOSE); undone after each test."""
    monkeypatch.delenv("ZOO_VERBOSE", raising=False)
