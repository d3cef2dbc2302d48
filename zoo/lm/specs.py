"""Specs of the language-model components: the standard samplers and the causal-LM trainer (no torch).

The sampling family applies its steps in a fixed order:
1. repetition penalty (on raw logits, for tokens already in the sequence),
2. temperature, 3. top-k, 4. top-p (nucleus), 5. min-p, then a draw from the softmax.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from zoo.lm.tokenizers import ByteTokenizerSpec, TokenizerSpec
from zoo.specs import SamplerSpec
from zoo.trainers.specs import EngineSpec


class GreedySpec(SamplerSpec):
    """Always the most likely token (optionally after a repetition penalty)."""

    type: Literal["greedy"] = "greedy"
    repetition_penalty: float = Field(1.0, ge=1.0, description="> 1 discourages tokens already present")

    def build(self) -> Any:
        from zoo.lm.samplers import Greedy

        return Greedy(self.repetition_penalty)


class SampleSpec(SamplerSpec):
    """Draw from the softmax after every filter of the family (each off at its default)."""

    type: Literal["sample"] = "sample"
    temperature: float = Field(1.0, gt=0.0, description="divides the logits; < 1 sharpens, > 1 flattens")
    top_k: int | None = Field(None, ge=1, le=1 << 24, description="keep only the k most likely tokens")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="keep the smallest set with cumulative probability >= p")
    min_p: float = Field(0.0, ge=0.0, lt=1.0, description="drop tokens below min_p x the top probability")
    repetition_penalty: float = Field(1.0, ge=1.0, description="> 1 discourages tokens already present")

    def build(self) -> Any:
        from zoo.lm.samplers import Sampling

        return Sampling(self.temperature, self.top_k, self.top_p, self.min_p, self.repetition_penalty)


class TopKSpec(SamplerSpec):
    """Sample among the k most likely tokens."""

    type: Literal["top-k"] = "top-k"
    k: int = Field(40, ge=1, le=1 << 24, description="how many of the most likely tokens to keep")
    temperature: float = Field(1.0, gt=0.0, description="divides the logits before filtering")
    repetition_penalty: float = Field(1.0, ge=1.0, description="> 1 discourages tokens already present")

    def build(self) -> Any:
        from zoo.lm.samplers import Sampling

        return Sampling(self.temperature, self.k, 1.0, 0.0, self.repetition_penalty)


class TopPSpec(SamplerSpec):
    """Nucleus sampling: the smallest set of tokens whose probability sums to at least p."""

    type: Literal["top-p"] = "top-p"
    p: float = Field(0.9, gt=0.0, le=1.0, description="cumulative probability to keep")
    temperature: float = Field(1.0, gt=0.0, description="divides the logits before filtering")
    repetition_penalty: float = Field(1.0, ge=1.0, description="> 1 discourages tokens already present")

    def build(self) -> Any:
        from zoo.lm.samplers import Sampling

        return Sampling(self.temperature, None, self.p, 0.0, self.repetition_penalty)


class MinPSpec(SamplerSpec):
    """Keep tokens at least min_p times as likely as the most likely one."""

    type: Literal["min-p"] = "min-p"
    min_p: float = Field(0.1, gt=0.0, lt=1.0, description="threshold relative to the top probability")
    temperature: float = Field(1.0, gt=0.0, description="divides the logits before filtering")
    repetition_penalty: float = Field(1.0, ge=1.0, description="> 1 discourages tokens already present")

    def build(self) -> Any:
        from zoo.lm.samplers import Sampling

        return Sampling(self.temperature, None, 1.0, self.min_p, self.repetition_penalty)


ALL = (GreedySpec, SampleSpec, TopKSpec, TopPSpec, MinPSpec)


class CausalLMTrainerSpec(EngineSpec):
    """Next-token prediction on text, through the training engine."""

    type: Literal["causal-lm"] = "causal-lm"
    protocol = "causal-lm"
    metrics = ("val_loss", "val_ppl")
    lr: float = Field(1e-3, gt=0.0, description="peak learning rate")
    batch_size: int = Field(16, gt=0, le=1 << 24, description="sequences per optimizer step, over all processes")
    context: int | None = Field(
        None, gt=1, le=1 << 24, description="training window in tokens; null: the model's max_seq_len"
    )
    tokenizer: TokenizerSpec = Field(default_factory=ByteTokenizerSpec, description="byte | bpe")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of the corpus (its end) held out")

    builder = "zoo.lm.trainer:CausalLMTrainer"
