"""ONNX export through ``torch.onnx.export(..., dynamo=True)`` (``zoo export --format onnx``).

A classifier becomes ``model.onnx``: ``x`` (batch, *input_shape) -> ``logits``. A causal LM becomes
``model.onnx``: ``input_ids`` (batch, seq) -> ``logits``; when its cache is a `zoo.KVCache` (its
layout is then known) ``model.onnx`` also returns ``present_key_<i>`` / ``present_value_<i>``
(batch, kv heads, seq, head dim), and ``decoder_with_past.onnx`` decodes one token from them:
``input_ids`` (batch, 1), ``attention_mask`` (batch, past + 1: 1 real, 0 padding),
``past_key_<i>`` / ``past_value_<i>`` -> ``logits`` and the presents grown by one position. ``onnx.json`` lists
every file with its inputs and outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.api import spec_of, tokenizer_of
from zoo.errors import ZooError
from zoo.lm.kv_cache import KVCache
from zoo.protocols import CausalLM, ClassifierSpec

OPSET = 18


class PastCache:
    """The KV-cache interface over tensors that grow by concatenation: what a traced graph can
    take as inputs and return as outputs (zoo's `KVCache` writes into preallocated buffers)."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        self.k, self.v = keys, values
        self.length = keys[0].shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k[layer] = torch.cat([self.k[layer], k.to(self.k[layer].dtype)], dim=2)
        self.v[layer] = torch.cat([self.v[layer], v.to(self.v[layer].dtype)], dim=2)
        return self.k[layer], self.v[layer]

    def advance(self, n: int) -> None:
        self.length += n

    def presents(self) -> list[torch.Tensor]:
        return [t for pair in zip(self.k, self.v, strict=True) for t in pair]


class Logits(nn.Module):
    """``input_ids`` -> logits (a causal LM returns (logits, cache))."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)[0]


class Prefill(nn.Module):
    """``input_ids`` -> logits and the keys/values of every layer."""

    def __init__(self, model: nn.Module, layers: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.model, self.layers, self.heads, self.head_dim = model, layers, heads, head_dim

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        empty = input_ids.new_zeros((input_ids.shape[0], self.heads, 0, self.head_dim), dtype=torch.float32)
        cache = PastCache([empty] * self.layers, [empty] * self.layers)
        logits, _ = self.model(input_ids, cache)
        return (logits, *cache.presents())


class WithPast(nn.Module):
    """New tokens after cached keys/values -> logits and the grown keys/values."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, past: list[torch.Tensor]
    ) -> tuple[torch.Tensor, ...]:
        cache = PastCache(list(past[0::2]), list(past[1::2]))
        start = past[0].shape[2]
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, start:]  # left padding aware
        logits, _ = self.model(input_ids, cache, attention_mask=attention_mask, position_ids=positions)
        return (logits, *cache.presents())


def export(model: nn.Module, folder: Path) -> None:
    spec = spec_of(model)
    batch = torch.export.Dim("batch", min=1, max=1024)
    files: dict[str, dict[str, Any]] = {}
    if spec.protocol == "classifier":
        if not isinstance(spec, ClassifierSpec) or spec.input_kind == "tokens":
            raise ZooError(f"model type {spec.type!r}: ONNX export takes feature and image classifiers")
        _export(model, (torch.rand(2, *spec.input_shape),), folder / "model.onnx", ["x"], ["logits"], {"x": {0: batch}})
        files["model.onnx"] = {"inputs": {"x": ["batch", *spec.input_shape]}, "outputs": ["logits"]}
    else:
        if not isinstance(model, CausalLM):
            raise ZooError(f"model type {spec.type!r} is not a zoo.CausalLM")
        files = _export_lm(model, folder, batch)
        tokenizer = tokenizer_of(model)
        if tokenizer is not None:
            tokenizer.save(folder)
    meta = {"model_type": spec.type, "opset": OPSET, "files": files}
    (folder / "onnx.json").write_text(json.dumps(meta, indent=2) + "\n")


def _export_lm(model: Any, folder: Path, batch: Any) -> dict[str, dict[str, Any]]:
    ctx, vocab = int(model.max_seq_len), int(model.vocab_size)
    template = model.new_cache(1, 2)
    ids = torch.randint(0, vocab, (2, min(4, ctx)))
    seq = torch.export.Dim("seq", min=1, max=ctx)
    if not isinstance(template, KVCache) or ctx < 4:
        _export(
            Logits(model), (ids,), folder / "model.onnx", ["input_ids"], ["logits"], {"input_ids": {0: batch, 1: seq}}
        )
        return {"model.onnx": {"inputs": {"input_ids": ["batch", "seq"]}, "outputs": ["logits"]}}
    layers, (_, heads, _, head_dim) = len(template.k), template.k[0].shape
    kv_names = [f"{kind}_{i}" for i in range(layers) for kind in ("key", "value")]
    presents = [f"present_{n}" for n in kv_names]
    prefill = Prefill(model, layers, heads, head_dim)
    _export(
        prefill, (ids,), folder / "model.onnx", ["input_ids"], ["logits", *presents], {"input_ids": {0: batch, 1: seq}}
    )
    # one new token per call (decoding): the mask then spans past + 1, which torch.export can express
    past = torch.export.Dim("past", min=1, max=ctx - 1)
    kv = [torch.randn(2, heads, 3, head_dim) for _ in kv_names]
    args = (ids[:, :1], torch.ones(2, 4, dtype=torch.long), kv)
    shapes = {
        "input_ids": {0: batch},
        "attention_mask": {0: batch, 1: past + 1},
        "past": [{0: batch, 2: past}] * len(kv),
    }
    names = ["input_ids", "attention_mask", *[f"past_{n}" for n in kv_names]]
    _export(WithPast(model), args, folder / "decoder_with_past.onnx", names, ["logits", *presents], shapes)
    dims = ["batch", int(heads), "past", int(head_dim)]
    inputs = {"input_ids": ["batch", 1], "attention_mask": ["batch", "past + 1"], **dict.fromkeys(names[2:], dims)}
    return {
        "model.onnx": {"inputs": {"input_ids": ["batch", "seq"]}, "outputs": ["logits", *presents]},
        "decoder_with_past.onnx": {"inputs": inputs, "outputs": ["logits", *presents]},
    }


def _export(
    module: nn.Module, args: tuple[Any, ...], path: Path, inputs: list[str], outputs: list[str], shapes: Any
) -> None:
    try:
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=True,
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=shapes,
            opset_version=OPSET,
            verbose=False,
        )
    except Exception as err:  # torch.export says what it could not trace: name the model and that
        text = str(err).strip()
        raise ZooError(
            f"ONNX export of {path.name} failed: {text.splitlines()[0] if text else type(err).__name__}"
        ) from err
