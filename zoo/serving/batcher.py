"""Continuous batching: requests join and leave one running decode batch between its steps.

Two threads share the work (`start`; by default only for models of `PREFILL_THREAD_PARAMETERS`
or more, and where torch's threads leave a core free: see there). The prefill thread takes
waiting requests as rows free up, prefills them together in one forward pass (left-padded, as
`zoo.generate` does) and draws their first tokens; the decoding thread, between two of its
steps, writes the prefilled rows into the slots of rows that finished or whose client went away
(one copy), or, when they do not fit, rebuilds the `BatchCache` with the rows that stay and the
newcomers (a slot no newcomer takes within `SLOT_GRACE` steps is dropped the same way), and runs
one decoding step for all of them. So a newcomer's first token does not wait for the step that
runs when it arrives, and decoding does not stop for prefills: with torch's ops running outside
the interpreter lock, the two use two cores. `step` does one round of both on the caller's
thread (the tests drive it so).

Every row keeps its own generator (seeded with the request's seed, as `zoo.generate` seeds a
lone prompt) and text state (`zoo.lm.generation.TextStream`); rows that share a sampler are
drawn in one call. So a request draws the same tokens whatever else is in the batch. A sampler
that raises fails its own request only; a prefill that raises fails its newcomers only.

`submit` is safe from any thread; each request's ``emit`` is called on one of the two threads,
in order (its first token before it joins the batch).
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from zoo.errors import ZooError
from zoo.lm.generation import TextStream, decode_limit
from zoo.protocols import Sampler, Tokenizer
from zoo.runtime import Runtime
from zoo.serving.cache import BatchCache, cache_kind

SLOT_GRACE = 2  # steps a finished row's slot waits for a newcomer before the batch drops it
# "auto" gives models this large a prefill thread when torch's own threads leave a core free: their
# forward passes run in torch's kernels, outside the interpreter lock, so prefill and decoding run
# on two cores at once. A smaller model's passes are mostly Python; two threads would only take
# turns at the lock (minigpt-small, 0.8M parameters, decodes 13-15% fewer tokens/s with the
# thread; a 135M Llama 30% more, one torch thread per side on 2 cores). Where torch already uses
# every core, a second thread's kernels fight them for the cores (the 135M Llama with torch's
# default 2 threads on 2 cores, 16 clients: 99-107 tok/s with the thread, 154-166 without).
PREFILL_THREAD_PARAMETERS = 10_000_000


def wants_prefill_thread(model: nn.Module) -> bool:
    """Whether ``prefill_thread=None`` gives ``model`` a prefill thread: `PREFILL_THREAD_PARAMETERS`
    or more (counted before any quantization: int8 layers keep their weights outside
    ``parameters()``), and torch's threads take at most half of the CPUs this process may use."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    spare = 2 * torch.get_num_threads() <= cpus
    return spare and sum(p.numel() for p in model.parameters()) >= PREFILL_THREAD_PARAMETERS


class QueueFull(ZooError):
    """More requests wait than the queue holds: the caller should retry later (HTTP 429)."""


class Closed(ZooError):
    """The batcher is shutting down and takes no new requests (HTTP 503)."""


@dataclass
class Update:
    """What one request gets after a step: new text, the token drawn, and whether it ended."""

    text: str
    token: int | None
    finish: str | None = None  # "eos", "stop", "length", "error"
    error: str | None = None


@dataclass(eq=False)
class Request:
    """One completion to run: prompt ids, a sampler object, and where its updates go."""

    prompt: list[int]
    sampler: Sampler
    max_tokens: int
    emit: Callable[[Update], None]
    seed: int = 0
    stop: Sequence[str] = ()
    cancelled: bool = False  # set by the server when the client disconnects; seen at the next step
    submitted: float = field(default_factory=time.monotonic)

    def cancel(self) -> None:
        self.cancelled = True


class _Row:
    """A running request: its generator, the tokens it has seen, its text so far."""

    def __init__(self, request: Request, tokenizer: Tokenizer, eos: Sequence[int], vocab: int, device: str) -> None:
        self.request = request
        self.generator = torch.Generator(device=device).manual_seed(request.seed)
        self.text = TextStream(tokenizer, eos, request.stop, request.max_tokens)
        self.seen: torch.Tensor | None = None
        if request.sampler.needs_seen:  # only repetition penalties pay for this
            self.seen = torch.zeros((1, vocab), dtype=torch.bool, device=device)
            self.seen[0, request.prompt] = True
        self.pending = 0  # the last token drawn, fed at the next step
        self.done = False
        self.idle = 0  # steps since it finished, its slot kept for a newcomer

    @property
    def leaving(self) -> bool:
        return self.done or self.request.cancelled


class Batcher:
    """The decoding loop of one model; `max_batch` rows run at once, `max_queue` more may wait."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        runtime: Runtime,
        *,
        eos_ids: Sequence[int] = (),
        max_batch: int = 16,
        max_queue: int = 64,
        prefill_thread: bool | None = None,
    ) -> None:
        """``prefill_thread``: prefill on a thread of its own beside the decoding loop (None: as
        `wants_prefill_thread` says for ``model``)."""
        self.model, self.tokenizer, self.runtime = model, tokenizer, runtime
        self.prefill_thread = wants_prefill_thread(model) if prefill_thread is None else prefill_thread
        self.eos = list(eos_ids)
        self.vocab = int(model.vocab_size)  # type: ignore[arg-type]
        self.limit = decode_limit(model)
        kind = cache_kind(model, runtime)
        self.max_batch = max_batch if kind != "opaque" else 1  # an unsplittable cache: one row at a time
        self.max_queue = max_queue
        self.cache = BatchCache(model, runtime, kind)
        self.rows: list[_Row] = []
        self.waiting: collections.deque[Request] = collections.deque()
        # prefilled rows wait in `_ready` for the decoding thread; `_pending` counts them from
        # admission until they join, `_live` the batch's running rows after the last step: a row
        # is admitted only while the two leave room under max_batch (guarded by `_wake`)
        self._ready: list[tuple[list[_Row], BatchCache]] = []
        self._pending = 0
        self._live = 0
        self._wake = threading.Condition()
        self._hold = threading.Lock()  # held for one whole decoding step (tests pause with `paused`)
        self._hold_prefill = threading.Lock()  # and for one whole prefill
        self._stats = threading.Lock()  # the token counters both threads add to
        self._threads: list[threading.Thread] = []
        self._closing = False
        self.tokens_total = 0
        self.requests_total = 0
        self._recent: collections.deque[tuple[float, int]] = collections.deque()  # (time, tokens) per step
        self._no_seen = torch.zeros((1, 1), dtype=torch.bool, device=runtime.device)  # samplers without needs_seen

    # -- the side the server calls -----------------------------------------------------------

    def submit(self, request: Request) -> None:
        """Queue ``request``; `QueueFull` when ``max_queue`` already wait, `Closed` when closing."""
        if not request.prompt or request.max_tokens < 1:
            raise ZooError("a request needs at least one prompt token and max_tokens >= 1")
        if self.limit is not None and len(request.prompt) + request.max_tokens > self.limit:
            raise ZooError(f"prompt + max_tokens exceeds the model's context of {self.limit} tokens")
        if any(t < 0 or t >= self.vocab for t in request.prompt):
            raise ZooError(f"prompt token ids must be in [0, {self.vocab})")
        with self._wake:
            if self._closing:
                raise Closed("the server is shutting down")
            if len(self.waiting) >= self.max_queue:  # those whose client went away give up their place
                self.waiting = collections.deque(r for r in self.waiting if not r.cancelled)
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"{len(self.waiting)} requests are waiting (the queue holds {self.max_queue})")
            self.waiting.append(request)
            self._wake.notify_all()

    @property
    def queue_depth(self) -> int:
        return len(self.waiting)

    @property
    def batch_size(self) -> int:
        """Requests decoding now (a finished row's slot, kept for a newcomer, does not count)."""
        return sum(not r.leaving for r in self.rows)

    def tokens_per_second(self, window: float = 10.0) -> float:
        now = time.monotonic()
        recent = [(t, n) for t, n in list(self._recent) if now - t <= window]
        return sum(n for _, n in recent) / window

    def start(self) -> None:
        """Start the prefill thread and the decoding thread (or one thread that does both)."""
        loops = [(self._prefill_loop, "zoo-prefill"), (self._decode_loop, "zoo-decode")]
        for loop, name in loops if self.prefill_thread else [(self._one_loop, "zoo-batcher")]:
            thread = threading.Thread(target=loop, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self, timeout: float | None = None) -> None:
        """Take no new requests, finish the ones admitted or waiting, and stop both threads."""
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No prefill and no step runs inside this block (tests fill the queue deterministically)."""
        with self._hold_prefill, self._hold:
            yield

    # -- the two loops ------------------------------------------------------------------------

    def _room(self) -> int:
        """Rows that may be admitted now (call holding ``_wake``)."""
        busy = self._live + self._pending
        if not self.cache.splittable:  # one row at a time
            return 0 if busy else 1
        return self.max_batch - busy

    def _prefill_loop(self) -> None:
        while True:
            with self._wake:
                while not (self.waiting and self._room() > 0) and not (self._closing and not self.waiting):
                    self._wake.wait()
                if self._closing and not self.waiting:
                    self._wake.notify_all()  # the decoding thread may be waiting for the queue to empty
                    return
            self.prefill()

    def _decode_loop(self) -> None:
        while True:
            with self._wake:
                while not self._ready and not self.rows and not self._done():
                    self._wake.wait()
                if self._done():
                    return
            self.decode()

    def _one_loop(self) -> None:  # without a prefill thread: a prefill, then a decoding step
        while True:
            with self._wake:
                while not self.waiting and not self.rows and not self._done():
                    self._wake.wait()
                if self._done():
                    return
            self.step()

    def _done(self) -> bool:
        """Closing, and nothing is left to do (call holding ``_wake``)."""
        return self._closing and not (self.waiting or self._pending or self._ready or self.rows)

    def step(self) -> bool:
        """One prefill and one decoding step on the caller's thread; False when there was nothing to do."""
        prefilled = self.prefill()
        return self.decode() or prefilled

    def prefill(self) -> bool:
        """Admit the waiting requests that fit, prefill them together and draw their first tokens;
        they join the batch at the next decoding step. False when none was admitted."""
        with self._hold_prefill, self.runtime.inference(self.model):
            joining = self._admit()
            if not joining:
                return False
            try:
                fresh = self._prefill(joining)
            except Exception as err:  # the model failed on these prompts: the newcomers fail
                for row in joining:
                    if not row.leaving:
                        self._fail(row, f"the model failed: {type(err).__name__}: {err}")
                with self._wake:
                    self._pending -= len(joining)
                    self._wake.notify_all()
                return True
            with self._wake:
                self._ready.append((joining, fresh))
                self._wake.notify_all()
            return True

    def decode(self) -> bool:
        """Let the prefilled rows join the batch, then run one decoding step for every running
        row. False when there was nothing to do."""
        with self._hold, self.runtime.inference(self.model):
            with self._wake:
                ready, self._ready = self._ready, []
            if not ready and not self.rows:
                return False
            try:
                self._join(ready)
                if any(not r.leaving for r in self.rows):
                    self._decode()
            except Exception as err:  # the model itself failed: every row of this batch fails
                for row in [*self.rows, *(row for joining, _ in ready for row in joining)]:
                    if not row.leaving:
                        self._fail(row, f"the model failed: {type(err).__name__}: {err}")
                self.rows = []
                self.cache = BatchCache(self.model, self.runtime, self.cache.kind)
            finally:
                with self._wake:
                    self._pending -= sum(len(joining) for joining, _ in ready)
                    self._live = sum(not r.leaving for r in self.rows)
                    self._wake.notify_all()
            return True

    def _admit(self) -> list[_Row]:
        with self._wake:
            if self.waiting and self.waiting[0].cancelled:
                while self.waiting and self.waiting[0].cancelled:  # gone before it started
                    self.waiting.popleft()
                self._wake.notify_all()  # the queue changed: a closing decoding thread may be done
            room = self._room()
            taken: list[Request] = []
            while self.waiting and len(taken) < room:
                request = self.waiting.popleft()
                if not request.cancelled:
                    taken.append(request)
            self._pending += len(taken)
            self.requests_total += len(taken)
        device = str(self.runtime.device)
        return [_Row(r, self.tokenizer, self.eos, self.vocab, device) for r in taken]

    def _join(self, ready: list[tuple[list[_Row], BatchCache]]) -> None:
        """Put the prefilled newcomers in the slots of finished rows, or rebuild the batch's cache
        with the rows that stay and the newcomers; drop finished rows' slots when due."""
        free = [i for i, r in enumerate(self.rows) if r.leaving]
        rebuilt = False
        for joining, fresh in ready:
            going_on = [i for i, r in enumerate(joining) if not r.leaving]
            newcomers = [joining[i] for i in going_on]
            if not newcomers:
                continue
            if self._place(free, fresh, newcomers, going_on):
                free = free[len(newcomers) :]
                continue
            self._rebuild(fresh, newcomers, going_on)
            free, rebuilt = [], True  # a rebuild drops every finished row
        if rebuilt:
            return
        for i in free:
            self.rows[i].idle += 1
        if self._compact_due(free):  # the cache stays as it is otherwise (finished rows keep their slots a while)
            self._rebuild(None, [], [])

    def _rebuild(self, fresh: BatchCache | None, newcomers: list[_Row], rows: list[int]) -> None:
        """The batch's cache rebuilt with its running rows and ``newcomers`` (rows ``rows`` of ``fresh``)."""
        keep = [i for i, r in enumerate(self.rows) if not r.leaving]
        survivors = [self.rows[i] for i in keep] + newcomers
        room = max((r.request.max_tokens - r.text.drawn for r in survivors), default=0)
        self.cache.rebuild(keep, room, fresh, rows)
        self.rows = survivors

    def _prefill(self, joining: list[_Row]) -> BatchCache:
        fresh = BatchCache(self.model, self.runtime, self.cache.kind)
        longest = max(len(r.request.prompt) for r in joining)
        ids = torch.full((len(joining), longest), self.tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros((len(joining), longest), dtype=torch.long)
        for i, row in enumerate(joining):
            prompt = row.request.prompt
            ids[i, longest - len(prompt) :] = torch.tensor(prompt)
            mask[i, longest - len(prompt) :] = 1
        device = self.runtime.device
        logits = fresh.forward(ids.to(device), mask.to(device), last_only=True)
        self._draw(joining, logits[:, -1].float())
        return fresh

    def _place(self, free: list[int], fresh: BatchCache, newcomers: list[_Row], rows: list[int]) -> bool:
        """Newcomers (rows ``rows`` of ``fresh``) into the slots of finished rows: one copy into the
        running batch's buffers instead of rebuilding them. False when they do not fit (too few
        free slots, or a prompt longer than the batch)."""
        if len(free) < len(newcomers):
            return False
        slots = free[: len(newcomers)]
        if not self.cache.place(slots, fresh, rows):
            return False
        for slot, row in zip(slots, newcomers, strict=True):
            self.rows[slot] = row
        return True

    def _compact_due(self, free: list[int]) -> bool:
        """Drop the finished rows now? When no newcomer took a slot for a few steps, when no row
        runs, or when their columns would carry the batch past the model's limit."""
        if not free:
            return False
        if len(free) == len(self.rows) or any(self.rows[i].idle > SLOT_GRACE for i in free):
            return True
        return self.limit is not None and self.cache.length + 1 > self.limit

    def _decode(self) -> None:
        device = self.runtime.device
        ids = torch.tensor([[r.pending] for r in self.rows], dtype=torch.long, device=device)
        logits = self.cache.forward(ids, torch.ones_like(ids))
        self._draw(self.rows, logits[:, -1].float())

    def _draw(self, rows: Sequence[_Row], last: torch.Tensor) -> None:
        """One token per row from ``last`` (B, V), each with the row's own sampler and generator.

        Rows that share a sampler object are drawn in one call, as `zoo.generate` draws a batch
        (the protocol promises a row samples exactly as it would alone); if that call raises, each
        of its rows is drawn alone, so only the request whose draw fails fails."""
        groups: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            if not row.leaving:
                groups.setdefault(id(row.request.sampler), []).append(i)
        drawn = 0
        for members in groups.values():
            try:
                tokens: list[int | None] = list(self._select([rows[i] for i in members], last, members))
            except Exception as err:  # a request's sampler: that request alone fails
                if len(members) == 1:
                    self._fail(rows[members[0]], f"the sampler failed: {type(err).__name__}: {err}")
                    continue
                tokens = [self._select_alone(rows[i], last, i) for i in members]
            for i, token in zip(members, tokens, strict=True):
                if token is not None:
                    drawn += self._take(rows[i], token)
        with self._stats:
            self.tokens_total += drawn
            self._recent.append((time.monotonic(), drawn))
            while self._recent and time.monotonic() - self._recent[0][0] > 60:
                self._recent.popleft()

    def _select(self, rows: Sequence[_Row], last: torch.Tensor, index: Sequence[int]) -> list[int]:
        """The tokens ``rows`` (rows ``index`` of ``last``, one sampler) draw; raises what the sampler raises."""
        sampler = rows[0].request.sampler
        if len(index) == last.shape[0]:  # the whole batch (one sampler for every row, the usual case)
            logits = last
        elif len(index) == 1:
            logits = last[index[0] : index[0] + 1]
        else:
            logits = last[torch.tensor(index, device=last.device)]
        if sampler.needs_seen:
            seen = torch.cat([r.seen for r in rows if r.seen is not None])
        else:
            seen = self._no_seen.expand(len(rows), 1)
        tokens = [int(t) for t in sampler.select(logits, seen, [r.generator for r in rows]).tolist()]
        if len(tokens) != len(rows) or any(not 0 <= t < self.vocab for t in tokens):
            raise ValueError(f"drew {tokens} for {len(rows)} rows; tokens are in [0, {self.vocab})")
        return tokens

    def _select_alone(self, row: _Row, last: torch.Tensor, i: int) -> int | None:
        try:
            return self._select([row], last, [i])[0]
        except Exception as err:
            self._fail(row, f"the sampler failed: {type(err).__name__}: {err}")
            return None

    def _take(self, row: _Row, token: int) -> int:
        """Record ``token`` as ``row``'s next one and send its text; 1 (a token drawn)."""
        if row.seen is not None:
            row.seen[0, token] = True
        row.pending = token
        text = row.text.add(token)
        row.done = row.text.finished
        self._emit(row, Update(text, token, row.text.reason if row.done else None))
        return 1

    def _fail(self, row: _Row, message: str) -> None:
        row.done = True
        self._emit(row, Update("", None, "error", message))

    def _emit(self, row: _Row, update: Update) -> None:
        try:
            row.request.emit(update)
        except Exception:  # nobody listens any more (the server's loop closed): stop the row
            row.request.cancelled = True
