"""One KV cache for a batch whose rows come and go: the continuous batcher's memory.

Rows are right-aligned: every row's tokens end at the same position ``length`` and a row that
holds fewer tokens is left-padded (its mask is 0 there), exactly the layout `zoo.generate` uses for
prompts of different lengths. Positions are counted per row from the mask, so moving a row right
changes nothing it computes. A join or a leave rebuilds the buffers once (rows kept, newcomers
appended, columns that every row pads dropped); a decoding step writes one column.

Two cache kinds can be split into rows: zoo's own `KVCache` (buffers written in place) and a
model's plain per-layer tensors (`zoo.PastTensors`, e.g. Hugging Face models). Any other cache
(a recurrent state, say) serves one request at a time: `splittable` is False.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zoo.lm.generation import cache_dtype, last_logits_only
from zoo.lm.kv_cache import KVCache
from zoo.protocols import PastTensors
from zoo.runtime import Runtime


def cache_kind(model: nn.Module, runtime: Runtime) -> str:
    """ "kv" (zoo's KVCache), "past" (plain tensors through forward_with_past) or "opaque"."""
    probe = model.new_cache(1, 1, dtype=cache_dtype(model, runtime))  # type: ignore[operator]
    if isinstance(probe, KVCache):
        return "kv"
    if isinstance(model, PastTensors) and model.past_layout() is not None:
        return "past"
    return "opaque"


def width_of(mask: torch.Tensor) -> int:
    """The columns of a (B, S) mask that some row uses: S less the padding every row has on the left."""
    return int(mask.shape[1] - int((mask.cumsum(-1) == 0).sum(-1).min()))


class BatchCache:
    """Keys and values of the running rows, (B, H, S, D) per tensor, with their (B, S) mask."""

    def __init__(self, model: nn.Module, runtime: Runtime, kind: str) -> None:
        self.model, self.runtime, self.kind = model, runtime, kind
        self.dtype = cache_dtype(model, runtime)
        self.device = runtime.device
        self.tensors: list[torch.Tensor] = []  # k0, v0, k1, v1, ... each (B, H, length, D)
        self.opaque: Any = None  # the cache object itself, kind "opaque" (one row)
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)  # (B, length)
        self.room = 0  # decoding steps the buffers hold before the next rebuild (kind "kv")
        self.buffer: torch.Tensor | None = None  # after a rebuild: every tensor in one, (2 x layers, B, H, S, D)
        self._kv: KVCache | None = None

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    @property
    def splittable(self) -> bool:
        return self.kind != "opaque"

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, *, last_only: bool = False) -> torch.Tensor:
        """Run ``ids`` (B, T) after what the cache holds; ``mask`` (B, T) marks their real tokens.
        Returns the logits (B, T, V), or (B, 1, V) with ``last_only`` where the model can skip the
        others (`last_logits_only`), and keeps the new keys and values."""
        keep: dict[str, int] = {}
        if last_only and ids.shape[1] > 1:
            keep = last_logits_only(getattr(self.model, "forward_with_past" if self.kind == "past" else "forward"))
        if self.rows == 0:  # a fresh cache: the prompts' own padding is all it holds
            self.mask, self.tensors, self._kv, self.opaque, self.buffer = mask[:, :0], [], None, None, None
        elif self.kind == "kv" and self.room < ids.shape[1]:
            self.rebuild(range(self.rows), room=max(64, ids.shape[1]))
        full = torch.cat([self.mask, mask], dim=1)  # (B, length + T)
        positions = (full.cumsum(-1) - 1).clamp(min=0)[:, self.length :]
        padded = bool((full == 0).any())
        attention = full if padded else None  # no padding: the model's plain causal path, as generate takes
        if self.kind == "past":
            assert isinstance(self.model, PastTensors)
            logits, self.tensors = self.model.forward_with_past(
                ids, self.tensors, attention_mask=attention, position_ids=positions, **keep
            )
            self.buffer = None  # the model returned tensors of its own
        else:
            cache = self._kv if self.kind == "kv" else self.opaque
            if cache is None:
                cache = self.model.new_cache(ids.shape[0], ids.shape[1], dtype=self.dtype)  # type: ignore[operator]
                self.opaque = cache if self.kind == "opaque" else None
            logits, cache = self.model(ids, cache, attention_mask=attention, position_ids=positions, **keep)
            if self.kind == "kv":
                self._kv = cache
                self.tensors = [t for pair in zip(cache.k, cache.v, strict=True) for t in pair]
                self.room = cache.max_len - cache.length
            else:
                self.opaque = cache
        self.mask = full
        return logits

    def _held(self) -> torch.Tensor:
        """Every key and value tensor narrowed to the positions written so far, stacked:
        (2 x layers, B, H, length, D). A view of the buffers when they are one tensor already."""
        if self.buffer is not None:
            return self.buffer.narrow(3, 0, self.length)
        if self.kind == "kv":
            return torch.stack([t.narrow(2, 0, self.length) for t in self.tensors])
        return torch.stack(self.tensors)

    def rebuild(
        self, keep: Sequence[int], room: int, newcomers: BatchCache | None = None, joining: Sequence[int] = ()
    ) -> None:
        """Keep rows ``keep`` (in that order), append rows ``joining`` of ``newcomers`` after them,
        drop the columns every row pads, and leave buffer space for ``room`` more steps.
        All layers move in one copy per part (the buffers are one tensor), not one per layer."""
        if not self.splittable:  # one row at a time: it is either this cache's or the newcomer's
            if newcomers is not None and joining:
                self.opaque, self.mask = newcomers.opaque, newcomers.mask
            elif not keep:
                self.opaque, self.mask = None, self.mask[:0, :0]
            return
        parts = [(self, list(keep))] + ([(newcomers, list(joining))] if newcomers is not None else [])
        parts = [(cache, rows) for cache, rows in parts if rows and cache.tensors]
        whole = [rows == list(range(cache.rows)) for cache, rows in parts]  # every row, in order: no gather
        masks = [
            cache.mask if all_rows else cache.mask[rows] for (cache, rows), all_rows in zip(parts, whole, strict=True)
        ]
        length = max((width_of(mask) for mask in masks), default=0)  # the longest row sets the new length
        total = sum(len(rows) for _, rows in parts)
        new_mask = torch.zeros((total, length), dtype=torch.long, device=self.device)
        if not parts:
            self.mask, self.buffer, self.tensors = new_mask, None, []
            self._install(length)
            return
        first = parts[0][0].tensors[0]
        capacity = length + (room if self.kind == "kv" else 0)
        shape = (len(parts[0][0].tensors), total, first.shape[1], capacity, first.shape[3])
        out = torch.zeros(shape, dtype=self.dtype, device=self.device)
        at = 0
        for (cache, rows), mask, all_rows in zip(parts, masks, whole, strict=True):
            held = cache._held() if all_rows else cache._held().index_select(1, self._index(rows))
            n, width = len(rows), min(length, mask.shape[1])
            new_mask[at : at + n, length - width :] = mask[:, mask.shape[1] - width :]
            out[:, at : at + n, :, length - width : length] = held[:, :, :, held.shape[3] - width :]
            at += n
        self.mask, self.buffer = new_mask, out
        self.tensors = list(out.unbind(0))
        self._install(length)

    def place(self, slots: Sequence[int], newcomers: BatchCache, joining: Sequence[int]) -> bool:
        """Write rows ``joining`` of ``newcomers`` over rows ``slots`` (finished ones), right-aligned
        and left-padded to this cache's length; False (nothing written) when they are longer."""
        if not self.splittable or not self.tensors or not newcomers.tensors:
            return False
        mask = newcomers.mask[list(joining)]
        width = width_of(mask)
        length = self.length
        if width > length:
            return False
        held = newcomers._held().index_select(1, self._index(joining))
        held = held.narrow(3, held.shape[3] - width, width)
        rows = self._index(slots)
        pad = length - width
        if self.buffer is not None:  # every layer at once: (2 x layers, B, H, S, D)
            self.buffer[:, rows, :, :pad] = 0
            self.buffer[:, rows, :, pad:length] = held
        else:
            for target, source in zip(self.tensors, held.unbind(0), strict=True):  # (B, H, S, D) each
                target[rows, :, :pad] = 0
                target[rows, :, pad:length] = source
        self.mask[rows] = torch.cat([self.mask.new_zeros((len(slots), length - width)), mask[:, -width:]], dim=1)
        return True

    def _index(self, rows: Sequence[int]) -> torch.Tensor:
        return torch.tensor(list(rows), dtype=torch.long, device=self.device)

    def _install(self, length: int) -> None:
        if self.kind == "kv":
            kv = self._kv or KVCache(0, 0, 0, 0, 0, device=self.device, dtype=self.dtype)
            kv.k, kv.v = self.tensors[0::2], self.tensors[1::2]
            kv.max_len, kv.length = self.tensors[0].shape[2] if self.tensors else 0, length
            self._kv, self.room = kv, kv.max_len - length
