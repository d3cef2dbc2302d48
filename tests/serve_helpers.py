"""What the `zoo serve` tests share: a tiny MiniGPT, samplers that are slow or raise (an inline
plugin), and a server on 127.0.0.1 in a thread of the test process."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import torch
import uvicorn

import zoo
from zoo.config import config_from_dict
from zoo.registry import Registry
from zoo.runtime import Runtime
from zoo.serving.app import create_app
from zoo.serving.protocol import Limits
from zoo.serving.server import open_models

TINY = {"type": "minigpt", "vocab_size": 256, "d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 512}


class SlowSpec(zoo.SamplerSpec):
    """Greedy, after ``delay`` seconds per token: a reply that takes long enough to watch."""

    type: Literal["slow-greedy"] = "slow-greedy"
    delay: float = zoo.Field(0.02, ge=0.0, description="seconds per token")

    def build(self) -> Any:
        return Slow(self.delay)


class Slow:
    needs_seen = False

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def select(self, logits: torch.Tensor, seen: torch.Tensor, generator: zoo.Generators) -> torch.Tensor:
        time.sleep(self.delay)
        return logits.argmax(-1)


class ExplodeSpec(zoo.SamplerSpec):
    """Raises on its ``after``-th token."""

    type: Literal["explode"] = "explode"
    after: int = zoo.Field(3, ge=1, description="tokens before it raises")

    def build(self) -> Any:
        return Explode(self.after)


class Explode:
    needs_seen = False

    def __init__(self, after: int) -> None:
        self.after, self.drawn = after, 0

    def select(self, logits: torch.Tensor, seen: torch.Tensor, generator: zoo.Generators) -> torch.Tensor:
        self.drawn += 1
        if self.drawn >= self.after:
            raise RuntimeError("boom")
        return logits.argmax(-1)


class FailSeedSpec(zoo.SamplerSpec):
    """Greedy, but raises when a row's generator was seeded with ``seed``: one request of a batch."""

    type: Literal["fail-seed"] = "fail-seed"
    seed: int = zoo.Field(13, description="the seed whose request fails")

    def build(self) -> Any:
        return FailSeed(self.seed)


class FailSeed:
    needs_seen = False

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def select(self, logits: torch.Tensor, seen: torch.Tensor, generator: zoo.Generators) -> torch.Tensor:
        if isinstance(generator, list) and any(g.initial_seed() == self.seed for g in generator):
            raise RuntimeError(f"seed {self.seed}")
        return logits.argmax(-1)


class SamplerPlugin:
    """An inline plugin registering the samplers above."""

    @staticmethod
    @zoo.hookimpl
    def zoo_register_samplers(register: zoo.Register) -> None:
        register(SlowSpec)
        register(ExplodeSpec)
        register(FailSeedSpec)


def plugin_config() -> Any:
    registry = Registry(entry_points=True, env={})
    registry.add_plugin(SamplerPlugin, name="serve-test-samplers", distribution="serve-tests", version="1.0")
    return config_from_dict({}, registry=registry)


def tiny_model(seed: int = 0, **changes: Any) -> torch.nn.Module:
    torch.manual_seed(seed)
    return zoo.build_model({**TINY, **changes}).eval()


class Running:
    """A server in a thread: ``url``, its app's state, and the models' batchers by name."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, app: Any) -> None:
        self.server, self.thread, self.app = server, thread, app
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self.state = app.state.zoo
        self.batchers = {name: m.batcher for name, m in self.state.models.items()}


@contextlib.contextmanager
def running(
    models: Mapping[str, Any],
    *,
    max_batch: int = 8,
    max_queue: int = 16,
    limits: Limits | None = None,
    api_key: str | None = None,
    config: Any = None,
) -> Iterator[Running]:
    """Serve ``models`` (name -> module or target) on 127.0.0.1, a free port, until the block ends."""
    config = config or plugin_config()
    served = open_models(dict(models), Runtime(device="cpu"), config, max_batch=max_batch, max_queue=max_queue)
    app = create_app(served, limits=limits, api_key=api_key)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield Running(server, thread, app)
    finally:
        server.should_exit = True
        thread.join(30)
