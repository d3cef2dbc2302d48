"""Text generation on any causal LM: prefill once, then one token at a time through a KV cache.

Prompts of different lengths are left-padded with an attention mask, and every row samples with
its own generator (row i seeded with ``seed + i``), so prompt i of a batch decodes exactly as it
does alone with ``seed + i`` (greedy: with any seed); each stops on its own (EOS ids after
``min_new_tokens``, stop strings, or ``max_new_tokens``). Without EOS ids or stop strings the
loop never waits on the device.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.build import build_sampler
from zoo.config import default_config
from zoo.errors import ProtocolError, ZooError
from zoo.finetune import open_model
from zoo.lm.kv_cache import KVCache
from zoo.lm.tokenizers import text_tokenizer
from zoo.protocols import (
    CausalLM,
    ChatTemplate,
    DecodingLimit,
    Sampler,
    SamplingDefaults,
    StaticDecoding,
    StopTokens,
    Tokenizer,
)
from zoo.quantization import check_method, is_quantized
from zoo.runtime import Runtime
from zoo.specs import Spec


@dataclass
class Generation:
    """Result of `generate`: per prompt, the new text, the new ids and why it stopped."""

    texts: list[str]
    ids: list[list[int]]
    prompt_ids: list[list[int]]
    finish_reasons: list[str] = field(default_factory=list)
    first_step_seconds: float | None = None  # compile=True: the first step, compilation included


@dataclass
class StreamChunk:
    """One decoding step while streaming: the text each sequence added (may be empty)."""

    step: int
    deltas: list[str]
    finished: list[bool]
    tokens: list[int] = field(default_factory=list)  # the id each sequence drew at this step


def resolve_sampler(sampler: Any, model: nn.Module, config: Any = None) -> Sampler:
    """A sampler object from a name, dict or spec, or a sampler object as is."""
    if isinstance(sampler, Sampler):
        return sampler

    if not isinstance(sampler, str | Mapping | Spec):
        raise ProtocolError(
            f"{type(sampler).__name__} is not a sampler: it needs select() and needs_seen (zoo.protocols.Sampler)"
        )
    built = build_sampler(sampler, model=model, config=config)
    if not isinstance(built, Sampler):
        raise ProtocolError(
            f"sampler {sampler!r}: build() returned {type(built).__name__}, not a zoo.protocols.Sampler"
        )
    return built


def decode_limit(model: nn.Module) -> int | None:
    """The longest sequence a causal LM decodes (`zoo.DecodingLimit`; else its ``max_seq_len``); None: no limit."""
    if isinstance(model, DecodingLimit):
        return model.decode_limit
    return int(model.max_seq_len)  # type: ignore[arg-type]


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, CausalLM):
        spec = vars(model).get("zoo_spec")
        what = f"model type {spec.type!r} is a {spec.protocol} model" if spec is not None else "this model"
        raise ProtocolError(f"samplers work on causal-lm models; {what} (zoo.protocols.CausalLM: no new_cache)")


class Decoder:
    """One batched decoding run; `steps()` yields the next token of every sequence."""

    def __init__(
        self,
        model: nn.Module,
        prompt_ids: Sequence[Sequence[int]],
        sampler: Any,
        *,
        max_new_tokens: int,
        min_new_tokens: int = 0,
        eos_ids: Sequence[int] = (),
        seed: int = 0,
        runtime: Runtime,
        pad_id: int = 0,
        static: bool = False,
        compile: bool = False,
        cache: Any = None,
    ) -> None:
        """``static`` decodes through the model's ``decode_step`` (fixed shapes, whole-cache mask);
        ``compile`` additionally wraps that step in ``torch.compile`` (implies static). ``cache``
        (one prompt, dynamic decoding) already holds the prompt's first ``cache.length`` tokens:
        only the rest is computed, and the cache keeps growing (a chat's history)."""
        _check_model(model)
        static = static or compile
        if compile and is_quantized(model):  # torch.compile cannot trace torch's packed int8 weights
            raise ZooError("--compile does not run int8 layers (--quantize int8); use one of the two (--static works)")
        if static and not isinstance(model, StaticDecoding):
            raise ZooError(f"{type(model).__name__} has no decode_step for static decoding; use static=False")
        self.static, self.compile = static, compile
        self.first_step_seconds: float | None = None  # with compile: the first step, compilation included
        if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
            raise ZooError("every prompt needs at least one token")
        if max_new_tokens < 1 or min_new_tokens < 0 or min_new_tokens > max_new_tokens:
            raise ZooError(f"need 0 <= min_new_tokens ({min_new_tokens}) <= max_new_tokens ({max_new_tokens}), >= 1")
        longest = max(len(p) for p in prompt_ids)
        limit = decode_limit(model)
        if limit is not None and longest + max_new_tokens > limit:
            raise ZooError(
                f"prompt of {longest} tokens + max_new_tokens {max_new_tokens} exceeds the model's context "
                f"of {limit} tokens; shorten the prompt or lower --max-new-tokens"
            )
        vocab = int(model.vocab_size)  # type: ignore[arg-type]
        if any(t < 0 or t >= vocab for p in prompt_ids for t in p):
            raise ZooError(f"prompt token ids must be in [0, {vocab})")
        if cache is not None:
            room = cache.max_len if isinstance(cache, KVCache) else limit
            if len(prompt_ids) != 1 or static or not 0 <= cache.length < len(prompt_ids[0]):
                raise ZooError("a reused cache takes one prompt, dynamic decoding, and new tokens after what it holds")
            if room is not None and longest + max_new_tokens > room:
                raise ZooError(f"the cache holds {room} positions; {longest + max_new_tokens} are needed")
        self.given_cache = cache
        self.model, self.sampler, self.runtime = model, sampler, runtime
        self.max_new, self.min_new, self.longest = max_new_tokens, min_new_tokens, longest
        device = runtime.device
        B = len(prompt_ids)
        ids = torch.full((B, longest), pad_id, dtype=torch.long)
        mask = torch.zeros((B, longest + max_new_tokens), dtype=torch.long)
        for i, p in enumerate(prompt_ids):
            ids[i, longest - len(p) :] = torch.tensor(p)
            mask[i, longest - len(p) :] = 1  # generated positions are real tokens too
        self.padded = any(len(p) != longest for p in prompt_ids)
        self.ids, self.mask = ids.to(device), mask.to(device)
        self.eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=device)
        # one generator per row (row i: seed + i), so a row's draws never depend on the batch
        self.generators = [torch.Generator(device=device).manual_seed(seed + i) for i in range(B)]
        # tokens present per sequence, kept only for samplers that ask (repetition penalty)
        self.track_seen = bool(sampler.needs_seen)
        self.seen = torch.zeros((B, vocab if self.track_seen else 1), dtype=torch.bool, device=device)
        if self.track_seen:
            self.seen.scatter_(1, self.ids, self.mask[:, :longest].bool())

    def steps(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (next_ids (B,), done (B,) bool) per step, on the device; no host sync here."""
        model, B, P = self.model, self.ids.shape[0], self.longest
        mask = self.mask if self.padded else None
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)  # (B, P + max_new): left padding aware
        cache = self.given_cache
        if cache is None:
            cache = model.new_cache(B, P + self.max_new, dtype=cache_dtype(model, self.runtime))  # type: ignore[operator]
        start = cache.length  # tokens of the prompt already in the cache
        done = torch.zeros(B, dtype=torch.bool, device=self.ids.device)
        step = self._static_step() if self.static else None
        cache_positions = torch.arange(P, P + self.max_new, device=self.ids.device)
        with self.runtime.inference(model):
            logits, cache = model(
                self.ids[:, start:],
                cache,
                attention_mask=None if mask is None else mask[:, :P],
                position_ids=positions[:, start:P],
                **last_logits_only(model.forward),
            )
            for t in range(self.max_new):
                last = logits[:, -1].float()  # (B, V)
                if t < self.min_new and self.eos.numel():
                    last[:, self.eos] = float("-inf")
                nxt = self.sampler.select(last, self.seen, self.generators)  # (B,)
                if self.eos.numel():  # finished sequences emit padding from now on
                    nxt = nxt.masked_fill(done, 0)
                    done = done | torch.isin(nxt, self.eos)
                if self.track_seen:
                    self.seen.scatter_(1, nxt[:, None], True)
                yield nxt, done
                if t + 1 == self.max_new:
                    break
                pos = P + t
                if step is not None:
                    started = time.perf_counter()
                    logits = step(
                        nxt[:, None], cache, self.mask, positions[:, pos : pos + 1], cache_positions[t : t + 1]
                    )
                    if t == 0 and self.compile:  # the first call compiles (once per process and shape)
                        self.first_step_seconds = time.perf_counter() - started
                    cache.advance(1)
                    continue
                logits, cache = model(
                    nxt[:, None],
                    cache,
                    attention_mask=None if mask is None else mask[:, : pos + 1],
                    position_ids=positions[:, pos : pos + 1],
                )

    def _static_step(self) -> Any:
        assert isinstance(self.model, StaticDecoding)  # checked in __init__
        step: Any = self.model.decode_step
        if self.compile:
            # on CUDA, "reduce-overhead" replays the step as a CUDA graph: one launch per token
            # instead of hundreds of small kernels, the host's cost at batch 1
            mode = "reduce-overhead" if self.runtime.device.type == "cuda" else None
            step = torch.compile(step, fullgraph=True, dynamic=False, mode=mode)
        return step


def last_logits_only(forward: Callable[..., Any]) -> dict[str, int]:
    """``{"logits_to_keep": 1}`` when a model's ``forward`` takes that keyword (transformers' name):
    a prefill then runs the output layer on the last position alone, the only one decoding reads."""
    try:
        takes = "logits_to_keep" in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        takes = False
    return {"logits_to_keep": 1} if takes else {}


def cache_dtype(model: nn.Module, runtime: Runtime) -> torch.dtype:
    """The dtype a decoding cache holds: autocast's, else the weights'."""
    return runtime.autocast_dtype or next(model.parameters()).dtype


def _encode(tokenizer: Any, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
    return [tokenizer.encode(p) if isinstance(p, str) else [int(t) for t in p] for p in prompts]


def _decoder(
    model: nn.Module | str | Path,
    tokenizer: Any,
    prompts: Any,
    sampler: Any,
    runtime: Runtime | None,
    config: Any,
    max_new_tokens: int,
    min_new_tokens: int,
    eos_ids: Sequence[int] | None,
    seed: int,
    static: bool,
    compile: bool,
    cache: Any = None,
    quantize: str | None = None,
) -> tuple[Decoder, list[list[int]], list[int], Any]:
    """What `generate` and `stream` share: resolve the model, tokenizer and sampler, encode, and
    set up the loop; returns the tokenizer used."""
    owned = isinstance(model, (str, Path))
    where = str(model) if owned else type(model).__name__
    if isinstance(model, (str, Path)):  # an artifact, run folder, model folder or preset name
        model = open_model(model, config or default_config())
    if tokenizer is None:
        tokenizer = text_tokenizer(model, where)
    if not isinstance(tokenizer, Tokenizer):
        raise ProtocolError(f"{type(tokenizer).__name__} is not a tokenizer (zoo.protocols.Tokenizer)")
    _check_model(model)  # before anything touches it, with the message that names the protocol
    runtime = runtime or Runtime(device=str(next(model.parameters()).device))
    if owned:  # loaded here: its weights go straight to the inference dtype (no autocast per step)
        runtime.prepare_for_inference(model, quantize)
    elif check_method(quantize) is not None:
        raise ZooError(
            f"quantize={quantize!r} applies to a model zoo opens (a path or name); zoo never changes the model "
            "it is handed: call zoo.quantize(model) on your own"
        )
    else:  # the caller's model keeps its dtype
        model.to(runtime.device).eval()
    prompt_ids = _encode(tokenizer, [prompts] if isinstance(prompts, str) else prompts)
    if sampler is None:  # the model's own recipe (its generation_config.json), else greedy
        sampler = (model.default_sampler if isinstance(model, SamplingDefaults) else None) or "greedy"
    sampler_obj = resolve_sampler(sampler, model, config)
    eos = list(eos_ids) if eos_ids is not None else default_eos(tokenizer, model)
    decoder = Decoder(
        model,
        prompt_ids,
        sampler_obj,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        eos_ids=eos,
        seed=seed,
        runtime=runtime,
        pad_id=tokenizer.pad_id,
        static=static,
        compile=compile,
        cache=cache,
    )
    return decoder, prompt_ids, eos, tokenizer


def stream(
    model: nn.Module | str | Path,
    tokenizer: Any,
    prompts: str | Sequence[str] | Sequence[Sequence[int]],
    sampler: str | Mapping[str, Any] | Any = None,
    *,
    max_new_tokens: int = 64,
    min_new_tokens: int = 0,
    eos_ids: Sequence[int] | None = None,
    stop: Sequence[str] = (),
    seed: int = 0,
    runtime: Runtime | None = None,
    config: Any = None,
    static: bool = False,
    compile: bool = False,
    cache: Any = None,
    quantize: str | None = None,
) -> Iterator[StreamChunk]:
    """Yield the text each sequence adds at every step (a Python iterator over the decode loop).
    ``cache``: see `Decoder` (a chat reuses one across turns)."""
    decoder, prompt_ids, eos, tokenizer = _decoder(
        model,
        tokenizer,
        prompts,
        sampler,
        runtime,
        config,
        max_new_tokens,
        min_new_tokens,
        eos_ids,
        seed,
        static,
        compile,
        cache,
        quantize,
    )
    rows = [TextStream(tokenizer, eos, stop, max_new_tokens) for _ in prompt_ids]
    for t, (nxt, _done) in enumerate(decoder.steps()):
        ids = nxt.tolist()
        deltas = ["" if row.finished else row.add(tok) for row, tok in zip(rows, ids, strict=True)]
        yield StreamChunk(t, deltas, [row.finished for row in rows], ids)
        if all(row.finished for row in rows):
            return


class TextStream:
    """The text one sequence adds with each drawn token (what `stream` yields, and the server too):
    an EOS id ends it (not shown), a stop string cuts it, half a UTF-8 character waits for the rest.
    ``reason`` says why it finished: "eos", "stop" or "length"."""

    def __init__(self, tokenizer: Any, eos: Sequence[int], stop: Sequence[str], max_new_tokens: int) -> None:
        self.tokenizer, self.eos, self.stop, self.max_new = tokenizer, set(eos), list(stop), max_new_tokens
        self.ids: list[int] = []  # the tokens kept (EOS left out)
        self.drawn = 0
        self.shown = ""
        self.finished = False
        self.reason: str | None = None

    def add(self, token: int) -> str:
        """The new text after ``token``; sets ``finished`` (and ``reason``) when the sequence ends."""
        self.drawn += 1
        if token in self.eos:
            self.finished, self.reason = True, "eos"
        else:
            self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        cut = [text.index(s) for s in self.stop if s in text]
        if cut:
            text, self.finished, self.reason = text[: min(cut)], True, "stop"
        if not self.finished and self.drawn >= self.max_new:
            self.finished, self.reason = True, "length"
        safe = text if self.finished else text.rstrip("\ufffd")  # hold back half a UTF-8 character
        delta = safe[len(self.shown) :]
        self.shown = max(self.shown, safe, key=len)
        return delta


def generate(
    model: nn.Module | str | Path,
    tokenizer: Any,
    prompts: str | Sequence[str] | Sequence[Sequence[int]],
    sampler: str | Mapping[str, Any] | Any = None,
    *,
    max_new_tokens: int = 64,
    min_new_tokens: int = 0,
    eos_ids: Sequence[int] | None = None,
    stop: Sequence[str] = (),
    seed: int = 0,
    runtime: Runtime | None = None,
    config: Any = None,
    static: bool = False,
    compile: bool = False,
    quantize: str | None = None,
) -> Generation:
    """Generate for a prompt or a batch of prompts; returns text and ids per prompt.

    ``model`` is a module, or what `zoo generate` takes (an artifact, a run folder, a local model
    folder, a preset name); ``tokenizer`` None means the model's own (byte-level if it has none);
    ``sampler`` None means the model's own recipe (`zoo.SamplingDefaults`), else greedy.
    ``quantize="int8"`` (a model zoo opens, on the CPU): int8 linear layers (`zoo.quantize`).
    """
    decoder, prompt_ids, eos, tokenizer = _decoder(
        model,
        tokenizer,
        prompts,
        sampler,
        runtime,
        config,
        max_new_tokens,
        min_new_tokens,
        eos_ids,
        seed,
        static,
        compile,
        quantize=quantize,
    )
    B = len(prompt_ids)
    steps: list[torch.Tensor] = []
    check_every = 1 if (eos or stop) else 0
    for nxt, done in decoder.steps():
        steps.append(nxt)
        if check_every and bool(done.all()):  # the only host sync: can we stop early?
            break
        if stop and len(steps) % 8 == 0 and _all_stopped(tokenizer, steps, stop):
            break
    out = torch.stack(steps, dim=1).tolist() if steps else [[] for _ in range(B)]
    texts, ids, reasons = [], [], []
    for row in out:
        reason = "length"
        for j, tok in enumerate(row):
            if tok in eos:
                row, reason = row[:j], "eos"
                break
        text = tokenizer.decode(row)
        for s in stop:
            if s in text:
                text, reason = text[: text.index(s)], "stop"
        texts.append(text)
        ids.append(row)
        reasons.append(reason)
    return Generation(texts, ids, prompt_ids, reasons, decoder.first_step_seconds)


def _all_stopped(tokenizer: Any, steps: list[torch.Tensor], stop: Sequence[str]) -> bool:
    rows = torch.stack(steps, dim=1).tolist()
    return all(any(s in tokenizer.decode(r) for s in stop) for r in rows)


def default_eos(tokenizer: Tokenizer, model: Any) -> list[int]:
    """The tokenizer's EOS id and every stop id the model knows (its generation config's)."""
    ids = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    if isinstance(model, StopTokens):
        ids += [i for i in model.stop_ids if i not in ids]
    return ids


def chat_ids(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """A conversation as the model's chat template writes it, ending with the assistant's turn."""
    if not isinstance(tokenizer, ChatTemplate):
        raise ZooError(
            f"{type(tokenizer).__name__} has no chat template; chat needs a model whose tokenizer has one "
            "(e.g. a local Hugging Face folder with tokenizer_config.json)"
        )
    return tokenizer.apply_chat_template(messages)


class History:
    """The KV cache of a conversation, kept across turns: each turn computes only the tokens after
    the longest prefix the cache already holds (a `KVCache` is cut back to it; another cache is
    reused only when it holds a prefix of the new prompt, else started afresh)."""

    def __init__(self, model: Any, runtime: Runtime) -> None:
        self.model, self.runtime = model, runtime
        self.cache: Any = None
        self.held: list[int] = []  # the ids whose keys and values the cache holds

    def cache_for(self, prompt: Sequence[int]) -> Any:
        if self.cache is not None:
            same = 0
            for a, b in zip(self.held, prompt, strict=False):
                if a != b:
                    break
                same += 1
            keep = min(same, len(prompt) - 1)
            if isinstance(self.cache, KVCache):
                self.cache.length = keep  # positions past it are overwritten by the next forward
            elif keep != self.cache.length:
                self.cache = None
        if self.cache is None:
            dtype = cache_dtype(self.model, self.runtime)
            room = decode_limit(self.model) or int(self.model.max_seq_len)  # no limit: the cache grows as it needs
            self.cache = self.model.new_cache(1, room, dtype=dtype)
        return self.cache

    def record(self, prompt: Sequence[int], generated: Sequence[int]) -> None:
        self.held = [*prompt, *generated][: self.cache.length]
