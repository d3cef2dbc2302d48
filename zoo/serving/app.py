"""The HTTP side of `zoo serve`: the OpenAI routes on FastAPI, streaming by server-sent events.

Each request is checked (API key, body size, fields, prompt length, ``max_tokens``), turned into a
`zoo.serving.batcher.Request` and handed to its model's batcher; the batcher's updates come back
through an asyncio queue. A client that goes away cancels its request, and the batcher frees the
row at its next step. Beyond the queue's bound the answer is 429 with Retry-After; while shutting
down, 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from torch import nn

from zoo.errors import ZooError
from zoo.lm.chat_templates import TemplateError
from zoo.lm.generation import resolve_sampler
from zoo.protocols import ChatTemplate, SamplingDefaults, Tokenizer
from zoo.serving import metrics
from zoo.serving.batcher import Batcher, Closed, QueueFull, Update
from zoo.serving.batcher import Request as Job
from zoo.serving.protocol import ApiError, ChatRequest, CompletionRequest, Limits, Sampling, parse, sampler_spec
from zoo.specs import MAX_SEED

RETRY_AFTER = "1"  # seconds: a step of the batch frees rows quickly
MAX_SAMPLERS = 256  # sampler objects kept per model, one per distinct setting


@dataclass
class Served:
    """One model the server answers for, under ``name``."""

    name: str
    model: nn.Module
    tokenizer: Tokenizer
    batcher: Batcher
    config: Any = None  # the registry samplers are built from
    created: int = field(default_factory=lambda: int(time.time()))
    # one sampler object per distinct spec: the batcher draws the rows that share one in one call
    samplers: dict[str, Any] = field(default_factory=dict)


@dataclass
class State:
    models: dict[str, Served]
    limits: Limits
    api_key: str | None
    draining: bool = False
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, outcome) -> count
    outbox: Outbox | None = None  # the batchers' way to the event loop, made when the app starts

    def count(self, model: str, outcome: str) -> None:
        self.outcomes[model, outcome] = self.outcomes.get((model, outcome), 0) + 1


def create_app(models: Sequence[Served], *, limits: Limits | None = None, api_key: str | None = None) -> FastAPI:
    """The ASGI app for ``models``; their batchers start with the app and close with it."""
    state = State({m.name: m for m in models}, limits or Limits(), api_key or None)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.outbox = Outbox(asyncio.get_running_loop())
        for m in models:
            m.batcher.start()
        yield
        state.draining = True
        for m in models:  # uvicorn has already waited for the requests in flight
            await asyncio.to_thread(m.batcher.close, 30.0)

    app = FastAPI(title="zoo serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.zoo = state
    page = resources.files("zoo.serving").joinpath("page.html").read_text(encoding="utf-8")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503, headers={"Retry-After": RETRY_AFTER})
        return JSONResponse({"status": "ok", "models": sorted(state.models)})

    @app.get("/metrics")
    async def metrics_route() -> Response:
        batchers = {name: m.batcher for name, m in state.models.items()}
        body, content_type = metrics.render(batchers, state.outcomes)
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def list_models(request: Request) -> JSONResponse:
        check_key(request, state)
        data = [{"id": m.name, "object": "model", "created": m.created, "owned_by": "zoo"} for m in models]
        return JSONResponse({"object": "list", "data": data})

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await answer(request, state, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await answer(request, state, chat=True)

    return app


def check_key(request: Request, state: State) -> None:
    if state.api_key is None:
        return
    given = request.headers.get("authorization", "")
    token = given[7:] if given[:7].lower() == "bearer " else ""
    if not hmac.compare_digest(token.encode(), state.api_key.encode()):
        raise ApiError(401, "a valid API key is needed: Authorization: Bearer KEY", None, "authentication_error")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 once it grows past ``limit`` (whatever Content-Length said)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body: larger than {limit} bytes", None)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body: larger than {limit} bytes", None)
        chunks.append(chunk)
    return b"".join(chunks)


async def answer(request: Request, state: State, *, chat: bool) -> Response:
    check_key(request, state)
    if state.draining:
        raise unavailable("the server is shutting down")
    body = await read_body(request, state.limits.max_body_bytes)
    req = parse(body, ChatRequest if chat else CompletionRequest)
    served = state.models.get(req.model)
    if served is None:
        raise ApiError(404, f"model: {req.model!r} is not served here; try {sorted(state.models)}", "model")
    if state.outbox is None:  # served without its lifespan: no batcher runs
        raise unavailable("the server has not started its models")
    job = prepare(req, served, state.limits, state.outbox)
    try:
        served.batcher.submit(job.request)
    except QueueFull as err:
        state.count(served.name, "rejected")
        raise busy(str(err)) from None
    except Closed as err:
        raise unavailable(str(err)) from None
    reply = Reply(served.name, chat, job, req.include_usage)
    if req.stream:
        return StreamingResponse(reply.events(state), media_type="text/event-stream")
    return await reply.whole(request, state)


def busy(message: str) -> ApiError:
    err = ApiError(429, f"the queue is full ({message}); retry later", None, "rate_limit_error")
    err.headers["Retry-After"] = RETRY_AFTER
    return err


def unavailable(message: str) -> ApiError:
    err = ApiError(503, message, None, "unavailable")
    err.headers["Retry-After"] = RETRY_AFTER
    return err


class Outbox:
    """Carries updates from the batcher's thread to one event loop: one wake-up of the loop per
    step of the batch, however many requests the step updated."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.items: list[tuple[asyncio.Queue[Update], Update]] = []

    def post(self, queue: asyncio.Queue[Update], update: Update) -> None:  # on the batcher's thread
        if self.loop.is_closed():
            raise RuntimeError("the event loop is closed")  # the batcher stops the row
        with self.lock:
            self.items.append((queue, update))
            if len(self.items) > 1:  # a delivery is already on its way
                return
        self.loop.call_soon_threadsafe(self.deliver)

    def deliver(self) -> None:  # on the event loop
        with self.lock:
            items, self.items = self.items, []
        for queue, update in items:
            queue.put_nowait(update)


class Stream:
    """One request's updates, handed over from the batcher's thread to the event loop."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox, self.queue = outbox, asyncio.Queue[Update]()
        self.request: Job
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def emit(self, update: Update) -> None:  # on the batcher's thread
        self.outbox.post(self.queue, update)

    async def updates(self) -> AsyncIterator[Update]:
        """The updates in order; those that arrived together come as one (their text joined), so
        a client that reads slower than the model writes gets fewer, longer chunks."""
        while True:
            update = await self.queue.get()
            self.completion_tokens += update.token is not None
            while update.finish is None and not self.queue.empty():
                nxt = self.queue.get_nowait()
                self.completion_tokens += nxt.token is not None
                update = Update(update.text + nxt.text, nxt.token, nxt.finish, nxt.error)
            yield update
            if update.finish is not None:
                return


def prepare(req: Sampling, served: Served, limits: Limits, outbox: Outbox) -> Stream:
    """The batcher's request for ``req``: its prompt ids, sampler, seed and token budget; 400 on
    any field the model cannot take."""
    field_name = "messages" if isinstance(req, ChatRequest) else "prompt"
    prompt = encode(req, served.tokenizer)
    vocab = int(served.model.vocab_size)  # type: ignore[arg-type]
    if not prompt or any(not 0 <= t < vocab for t in prompt):
        raise ApiError(400, f"{field_name}: needs at least one token, each id in [0, {vocab})", field_name)
    if len(prompt) > limits.max_prompt_tokens:
        raise ApiError(
            400, f"{field_name}: {len(prompt)} tokens; this server takes {limits.max_prompt_tokens}", field_name
        )
    room = served.batcher.limit - len(prompt) if served.batcher.limit is not None else limits.max_tokens
    if room < 1:
        raise ApiError(
            400, f"{field_name}: {len(prompt)} tokens fill the model's context of {served.batcher.limit}", field_name
        )
    asked = req.max_completion_tokens if isinstance(req, ChatRequest) and req.max_completion_tokens else req.max_tokens
    if asked is not None and asked > min(room, limits.max_tokens):
        raise ApiError(
            400,
            f"max_tokens: {asked} is more than {min(room, limits.max_tokens)} (this server's limit is "
            f"{limits.max_tokens}; after this prompt the model's context has room for {room})",
            "max_tokens",
        )
    default = 16 if isinstance(req, CompletionRequest) else min(room, limits.max_tokens)  # OpenAI's defaults
    stream = Stream(outbox)
    stream.prompt_tokens = len(prompt)
    seed = req.seed if req.seed is not None else secrets.randbelow(MAX_SEED)
    sampler = build_sampler(req, served)
    stream.request = Job(prompt, sampler, min(asked or default, room), stream.emit, seed=seed, stop=req.stops)
    return stream


def encode(req: Sampling, tokenizer: Tokenizer) -> list[int]:
    if isinstance(req, ChatRequest):
        return chat_prompt(tokenizer, req.plain_messages())
    assert isinstance(req, CompletionRequest)
    prompt = req.one_prompt()
    return tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)


def chat_prompt(tokenizer: Tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """The model's chat template; a model without one gets a plain transcript ("user: ...")."""
    if isinstance(tokenizer, ChatTemplate):
        try:
            return tokenizer.apply_chat_template(messages)
        except TemplateError as err:  # the template ran and refused these messages (a bound, an error)
            raise ApiError(400, f"messages: the model's chat template failed: {err}", "messages") from None
        except ZooError:  # a tokenizer without a template says so: the plain transcript below
            pass
    return tokenizer.encode("".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:")


def build_sampler(req: Sampling, served: Served) -> Any:
    spec = sampler_spec(req)
    if spec is None:
        model = served.model
        spec = (model.default_sampler if isinstance(model, SamplingDefaults) else None) or "greedy"
    key = json.dumps(spec, sort_keys=True)
    if key in served.samplers:
        return served.samplers[key]
    try:
        sampler = resolve_sampler(spec, served.model, served.config)
    except ZooError as err:
        raise ApiError(400, f"sampler: {err}", "sampler") from None
    if len(served.samplers) >= MAX_SAMPLERS:  # many distinct settings: forget the oldest
        served.samplers.pop(next(iter(served.samplers)))
    served.samplers[key] = sampler
    return sampler


class Reply:
    """The OpenAI response of one request, whole or as server-sent events."""

    def __init__(self, model: str, chat: bool, stream: Stream, include_usage: bool) -> None:
        self.model, self.chat, self.stream, self.include_usage = model, chat, stream, include_usage
        self.id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())

    def usage(self) -> dict[str, int]:
        prompt, done = self.stream.prompt_tokens, self.stream.completion_tokens
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    def envelope(self, choices: list[dict[str, Any]], chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion" if self.chat else "text_completion") + (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}

    def choice(self, text: str, finish: str | None, chunk: bool, first: bool = False) -> dict[str, Any]:
        reason = {"eos": "stop", "stop": "stop", "length": "length"}.get(finish or "")
        if not self.chat:
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        if not chunk:
            return {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}
        delta = {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
        return {"index": 0, "delta": delta, "finish_reason": reason}

    async def whole(self, request: Request, state: State) -> Response:
        """Wait for the whole reply; a client that disconnects first cancels the request."""
        parts: list[str] = []
        last: list[Update] = []

        async def collect() -> None:
            async for update in self.stream.updates():
                parts.append(update.text)
                last[:] = [update]

        collecting, gone = asyncio.ensure_future(collect()), asyncio.ensure_future(disconnected(request))
        try:
            await asyncio.wait({collecting, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not collecting.done():
            collecting.cancel()
            self.stream.request.cancel()
            state.count(self.model, "cancelled")
            return Response(status_code=499)
        if last and last[0].error:
            state.count(self.model, "error")
            raise ApiError(500, last[0].error, None, "server_error")
        state.count(self.model, "ok")
        body = self.envelope([self.choice("".join(parts), last[0].finish if last else None, False)], False)
        return JSONResponse({**body, "usage": self.usage()})

    async def events(self, state: State) -> AsyncIterator[str]:
        """Server-sent events as the OpenAI API sends them; closing early cancels the request."""
        finished = False
        try:
            if self.chat:
                yield sse(self.envelope([self.choice("", None, True, first=True)], True))
            async for update in self.stream.updates():
                if update.error:
                    finished = True
                    state.count(self.model, "error")
                    yield sse({"error": {"message": update.error, "type": "server_error", "param": None}})
                    return
                if update.text or update.finish:
                    yield sse(self.envelope([self.choice(update.text, update.finish, True)], True))
            finished = True
            state.count(self.model, "ok")
            if self.include_usage:
                yield sse({**self.envelope([], True), "usage": self.usage()})
            yield "data: [DONE]\n\n"
        finally:
            if not finished:  # the client went away (or the server stops): free the row
                self.stream.request.cancel()
                state.count(self.model, "cancelled")


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


async def disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
