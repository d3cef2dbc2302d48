"""ONNX export through ``torch.onnx.export(..., dynamo=True)`` (``zoo export --format onnx``).

A classifier becomes ``model.onnx``: ``x`` (batch, *input_shape) -> ``logits``. A causal LM becomes
``model.onnx``: ``input_ids`` (batch, seq) -> ``logits``; when its KV cache can be given and taken as
tensors (a `zoo.PastTensors` model, or one whose cache is a `zoo.KVCache`) ``model.onnx`` also
returns ``present_key_<i>`` / ``present_value_<i>`` (batch, kv heads, seq, head dim), and
``decoder_with_past.onnx`` decodes one token from them: ``input_ids`` (batch, 1),
``attention_mask`` (batch, past + 1: 1 real, 0 padding), ``past_key_<i>`` / ``past_value_<i>`` ->
``logits`` and the presents grown by one position. Any other causal LM gets ``model.onnx`` with
logits only, and ``onnx.json`` says why (``note``). ``onnx.json`` lists every file with its inputs
and outputs. Every graph is traced in eval mode.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.errors import ZooError
from zoo.files import shorten
from zoo.lm.kv_cache import KVCache
from zoo.protocols import CausalLM, ClassifierSpec, PastTensors
from zoo.tags import spec_of, tokenizer_of

OPSET = 18
Layout = tuple[int, int, int]  # layers, kv heads, head dim


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


class KVCachePast(nn.Module):
    """`PastTensors` for a model whose cache is a `zoo.KVCache`: its layout is the cache's, and it
    runs on a `PastCache` (same interface) built from the tensors."""

    def __init__(self, model: nn.Module, template: KVCache) -> None:
        super().__init__()
        self.model = model
        _, heads, _, head_dim = template.k[0].shape
        self.layout = (len(template.k), int(heads), int(head_dim))

    def past_layout(self) -> Layout:
        return self.layout

    def forward_with_past(
        self,
        input_ids: torch.Tensor,
        past: Sequence[torch.Tensor],
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        cache = PastCache(list(past[0::2]), list(past[1::2]))
        logits, _ = self.model(input_ids, cache, attention_mask=attention_mask, position_ids=position_ids)
        return logits, cache.presents()


class Logits(nn.Module):
    """``input_ids`` -> logits (a causal LM returns (logits, cache))."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)[0]


class Prefill(nn.Module):
    """``input_ids`` -> logits and the keys/values of every layer."""

    def __init__(self, model: nn.Module, layout: Layout) -> None:
        super().__init__()
        self.model: Any = model  # a `PastTensors` module
        self.layout = layout

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        layers, heads, head_dim = self.layout
        empty = input_ids.new_zeros((input_ids.shape[0], heads, 0, head_dim), dtype=torch.float32)
        logits, presents = self.model.forward_with_past(input_ids, [empty] * (2 * layers))
        return (logits, *presents)


class WithPast(nn.Module):
    """New tokens after cached keys/values -> logits and the grown keys/values."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model: Any = model  # a `PastTensors` module

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, past: list[torch.Tensor]
    ) -> tuple[torch.Tensor, ...]:
        # positions of the new tokens, left padding aware; sliced by the (static) new length so
        # the traced shapes stay simple
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1] :]
        logits, presents = self.model.forward_with_past(
            input_ids, past, attention_mask=attention_mask, position_ids=positions
        )
        return (logits, *presents)


def export(model: nn.Module, folder: Path) -> str | None:
    """Write the ONNX files and ``onnx.json`` into ``folder``; returns a note for the user (why a
    causal LM got no ``decoder_with_past.onnx``), or None."""
    spec = spec_of(model)
    batch = torch.export.Dim("batch", min=1, max=1024)
    files: dict[str, dict[str, Any]] = {}
    note = None
    training = model.training
    model.eval()  # traced as it runs for inference (dropout off), and no training-mode warning
    try:
        if spec.protocol == "classifier":
            if not isinstance(spec, ClassifierSpec) or spec.input_kind == "tokens":
                raise ZooError(f"model type {spec.type!r}: ONNX export takes feature and image classifiers")
            shapes = {"x": {0: batch}}
            _export(model, (torch.rand(2, *spec.input_shape),), folder / "model.onnx", ["x"], ["logits"], shapes)
            files["model.onnx"] = {"inputs": {"x": ["batch", *spec.input_shape]}, "outputs": ["logits"]}
        else:
            if not isinstance(model, CausalLM):
                raise ZooError(f"model type {spec.type!r} is not a zoo.CausalLM")
            files, note = _export_lm(model, folder, batch)
            tokenizer = tokenizer_of(model)
            if tokenizer is not None:
                tokenizer.save(folder)
    finally:
        model.train(training)
    meta: dict[str, Any] = {"model_type": spec.type, "opset": OPSET, "files": files}
    if note is not None:
        meta["note"] = note
    (folder / "onnx.json").write_text(json.dumps(meta, indent=2) + "\n")
    return note


def export_onnx(model: Any, folder: Path, options: Mapping[str, Any]) -> None:
    """The ``onnx`` exporter that `zoo.plugin` registers (``zoo export --format onnx``)."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs both)
        import onnxscript  # noqa: F401
    except ImportError:
        raise ZooError("ONNX export needs onnx and onnxscript: pip install 'zoo[onnx]'") from None
    note = export(model, folder)
    if note is not None:
        print(f"note: {note} (onnx.json says so too)", file=sys.stderr)


def with_past(model: Any) -> tuple[Any, Layout] | str:
    """The model as a `PastTensors` module and its layout, or why it has no export with past."""
    if int(model.max_seq_len) < 4:
        return "logits only: the context is under 4 positions"
    if isinstance(model, PastTensors):
        layout = model.past_layout()
        if layout is None:
            return "logits only: its KV cache is not one (key, value) pair per layer (past_layout() is None)"
        return model, layout
    template = model.new_cache(1, 2)
    if isinstance(template, KVCache):
        adapter = KVCachePast(model, template)
        return adapter, adapter.layout
    return (
        f"logits only: its cache ({type(template).__name__}) is neither a zoo.KVCache nor given as tensors "
        "(zoo.PastTensors)"
    )


def _export_lm(model: Any, folder: Path, batch: Any) -> tuple[dict[str, dict[str, Any]], str | None]:
    ctx, vocab = int(model.max_seq_len), int(model.vocab_size)
    ids = torch.randint(0, vocab, (2, min(4, ctx)))
    shapes = {"input_ids": {0: batch, 1: torch.export.Dim("seq", min=1, max=ctx)}}
    found = with_past(model)
    if isinstance(found, str):
        _export(Logits(model), (ids,), folder / "model.onnx", ["input_ids"], ["logits"], shapes)
        return {"model.onnx": {"inputs": {"input_ids": ["batch", "seq"]}, "outputs": ["logits"]}}, found
    past_model, layout = found
    _check_layout(past_model, layout, ids)
    kv_names = [f"{kind}_{i}" for i in range(layout[0]) for kind in ("key", "value")]
    presents = [f"present_{n}" for n in kv_names]
    _export(Prefill(past_model, layout), (ids,), folder / "model.onnx", ["input_ids"], ["logits", *presents], shapes)
    files = {"model.onnx": {"inputs": {"input_ids": ["batch", "seq"]}, "outputs": ["logits", *presents]}}
    files["decoder_with_past.onnx"] = _export_step(past_model, layout, ctx, folder, batch, ids, kv_names)
    return files, None


def _export_step(
    model: Any, layout: Layout, ctx: int, folder: Path, batch: Any, ids: torch.Tensor, kv_names: list[str]
) -> dict[str, Any]:
    """``decoder_with_past.onnx``: one new token per call (decoding), so the mask spans past + 1,
    which torch.export can express."""
    _, heads, head_dim = layout
    past = torch.export.Dim("past", min=1, max=ctx - 1)
    kv = [torch.randn(2, heads, 3, head_dim) for _ in kv_names]
    args = (ids[:, :1], torch.ones(2, 4, dtype=torch.long), kv)
    shapes = {
        "input_ids": {0: batch},
        "attention_mask": {0: batch, 1: past + 1},
        "past": [{0: batch, 2: past}] * len(kv),
    }
    names = ["input_ids", "attention_mask", *[f"past_{n}" for n in kv_names]]
    outputs = ["logits", *[f"present_{n}" for n in kv_names]]
    _export(WithPast(model), args, folder / "decoder_with_past.onnx", names, outputs, shapes)
    dims = ["batch", heads, "past", head_dim]
    inputs = {"input_ids": ["batch", 1], "attention_mask": ["batch", "past + 1"], **dict.fromkeys(names[2:], dims)}
    return {"inputs": inputs, "outputs": outputs}


def _check_layout(model: Any, layout: Layout, ids: torch.Tensor) -> None:
    """One eager prefill: the presents must be what ``past_layout()`` promised (a plugin's mistake
    named here, not deep inside torch.export)."""
    layers, heads, head_dim = layout
    empty = ids.new_zeros((ids.shape[0], heads, 0, head_dim), dtype=torch.float32)
    try:
        with torch.no_grad():
            _, presents = model.forward_with_past(ids, [empty] * (2 * layers))
    except ZooError:
        raise
    except Exception as err:  # the plugin's code: name it and what it said
        raise ZooError(f"ONNX export: forward_with_past failed ({type(err).__name__}: {shorten(str(err))})") from err
    want = (ids.shape[0], heads, ids.shape[1], head_dim)
    got = [tuple(t.shape) for t in presents]
    if len(got) != 2 * layers or any(shape != want for shape in got):
        raise ZooError(
            f"ONNX export: forward_with_past returned {len(got)} tensors shaped {sorted(set(got))}; "
            f"past_layout() {layout} promises {2 * layers} shaped {want}"
        )


def _export(
    module: nn.Module, args: tuple[Any, ...], path: Path, inputs: list[str], outputs: list[str], shapes: Any
) -> None:
    module.eval()  # a wrapper is made in training mode; torch.onnx warns about (and traces) that
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
