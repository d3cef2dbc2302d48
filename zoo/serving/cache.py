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

from zoo.lm.generation import cache_dtype
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

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Run ``ids`` (B, T) after what the cache holds; ``mask`` (B, T) marks their real tokens.
        Returns the logits (B, T, V) and keeps the new keys and values."""
        if self.rows == 0:  # a fresh cache: the prompts' own padding is all it holds
            self.mask, self.tensors, self._kv, self.opaque = mask[:, :0], [], None, None
        elif self.kind == "kv" and self.room < ids.shape[1]:
            self.rebuild(range(self.rows), room=max(64, ids.shape[1]))
        full = torch.cat([self.mask, mask], dim=1)  # (B, length + T)
        positions = (full.cumsum(-1) - 1).clamp(min=0)[:, self.length :]
        padded = bool((full == 0).any())
        attention = full if padded else None  # no padding: the model's plain causal path, as generate takes
        if self.kind == "past":
            assert isinstance(self.model, PastTensors)
            logits, self.tensors = self.model.forward_with_past(
                ids, self.tensors, attention_mask=attention, position_ids=positions
            )
        else:
            cache = self._kv if self.kind == "kv" else self.opaque
            if cache is None:
                cache = self.model.new_cache(ids.shape[0], ids.shape[1], dtype=self.dtype)  # type: ignore[operator]
                self.opaque = cache if self.kind == "opaque" else None
            logits, cache = self.model(ids, cache, attention_mask=attention, position_ids=positions)
            if self.kind == "kv":
                self._kv = cache
                self.tensors = [t for pair in zip(cache.k, cache.v, strict=True) for t in pair]
                self.room = cache.max_len - cache.length
            else:
                self.opaque = cache
        self.mask = full
        return logits

    def _held(self) -> list[torch.Tensor]:
        """Every tensor narrowed to the positions written so far."""
        if self.kind == "kv":
            return [t.narrow(2, 0, self.length) for t in self.tensors]
        return self.tensors

    def rebuild(
        self, keep: Sequence[int], room: int, newcomers: BatchCache | None = None, joining: Sequence[int] = ()
    ) -> None:
        """Keep rows ``keep`` (in that order), append rows ``joining`` of ``newcomers`` after them,
        drop the columns every row pads, and leave buffer space for ``room`` more steps."""
        if not self.splittable:  # one row at a time: it is either this cache's or the newcomer's
            if newcomers is not None and joining:
                self.opaque, self.mask = newcomers.opaque, newcomers.mask
            elif not keep:
                self.opaque, self.mask = None, self.mask[:0, :0]
            return
        parts = [(self._held(), self.mask, self._index(keep))]
        if newcomers is not None:
            parts.append((newcomers._held(), newcomers.mask, self._index(joining)))
        parts = [(tensors, mask.index_select(0, rows), rows) for tensors, mask, rows in parts if len(rows)]
        length = 0
        for _, mask, _ in parts:  # the longest row, its padding dropped, sets the new length
            length = max(length, int(mask.shape[1] - int((mask.cumsum(-1) == 0).sum(-1).min())))
        total = sum(len(rows) for _, _, rows in parts)
        capacity = length + (room if self.kind == "kv" else 0)
        new_mask = torch.zeros((total, length), dtype=torch.long, device=self.device)
        shapes = [(total, t.shape[1], capacity, t.shape[3]) for t in parts[0][0]] if parts else []
        out = [torch.zeros(shape, dtype=self.dtype, device=self.device) for shape in shapes]
        at = 0
        for tensors, mask, rows in parts:
            tensors = [t.index_select(0, rows) for t in tensors]
            n, width = mask.shape[0], min(length, mask.shape[1])
            new_mask[at : at + n, length - width :] = mask[:, mask.shape[1] - width :]
            for o, t in zip(out, tensors, strict=True):
                o[at : at + n, :, length - width : length] = t[:, :, t.shape[2] - width :]
            at += n
        self.mask = new_mask
        self._install(out, length)

    def _index(self, rows: Sequence[int]) -> torch.Tensor:
        return torch.tensor(list(rows), dtype=torch.long, device=self.device)

    def _install(self, tensors: list[torch.Tensor], length: int) -> None:
        if self.kind == "kv":
            kv = self._kv or KVCache(0, 0, 0, 0, 0, device=self.device, dtype=self.dtype)
            kv.k, kv.v = tensors[0::2], tensors[1::2]
            kv.max_len, kv.length = tensors[0].shape[2] if tensors else 0, length
            self._kv, self.room = kv, kv.max_len - length
        self.tensors = tensors
