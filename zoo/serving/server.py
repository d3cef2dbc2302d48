"""Running the server: open the models, build the app, and run uvicorn until SIGTERM or Ctrl-C.

On the first SIGTERM (or SIGINT) the server stops accepting connections, answers 503 to new
requests on open ones, lets every request in flight finish (at most ``drain_seconds``), closes
the batchers and returns; `zoo serve` then exits 0. A second signal stops at once.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from torch import nn

from zoo.config import Config, default_config, spec_ref
from zoo.errors import ZooError
from zoo.finetune import open_model
from zoo.lm.generation import default_eos
from zoo.lm.tokenizers import text_tokenizer
from zoo.protocols import CausalLM
from zoo.runtime import Runtime
from zoo.serving.app import Served, State, create_app
from zoo.serving.batcher import Batcher, wants_prefill_thread
from zoo.serving.protocol import Limits

Target = str | Path | nn.Module


def model_name(target: Target, index: int) -> str:
    """What clients call a model: a preset's name, a folder's name, ``model`` for an object."""
    if isinstance(target, nn.Module):
        return "model" if index == 0 else f"model-{index}"
    text = str(target)
    if text.startswith("hf:") or text.lstrip().startswith("{"):
        return text.removeprefix("hf:") if text.startswith("hf:") else f"model-{index}"
    return Path(text).name or text


def open_models(
    targets: Sequence[Target] | Mapping[str, Target],
    runtime: Runtime,
    config: Config,
    *,
    max_batch: int = 16,
    max_queue: int = 64,
    quantize: str | None = None,
    prefill_thread: bool | None = None,
) -> list[Served]:
    """Each target opened as `zoo generate` opens it (``NAME=TARGET`` names it), with its batcher."""
    named = dict(targets) if isinstance(targets, Mapping) else {}
    if not named:
        for i, target in enumerate(targets):
            text = str(target) if not isinstance(target, nn.Module) else ""
            name, _, rest = text.partition("=")
            if rest and "/" not in name and not text.lstrip().startswith("{"):
                named[name] = rest
            else:
                named[model_name(target, i)] = target
    if len(named) != len(targets):
        raise ZooError(f"two models would be served under one name; name them: NAME=TARGET ({sorted(named)})")
    served = []
    for name, target in named.items():
        model = target if isinstance(target, nn.Module) else open_model(spec_ref(str(target)), config)
        if not isinstance(model, CausalLM):
            raise ZooError(f"{name}: zoo serve serves causal language models (zoo.protocols.CausalLM)")
        threaded = wants_prefill_thread(model) if prefill_thread is None else prefill_thread  # before int8
        if isinstance(target, nn.Module):
            model.to(runtime.device).eval()  # the caller's model keeps its dtype
        else:
            runtime.prepare_for_inference(model, quantize)
        tokenizer = text_tokenizer(model, str(target) if not isinstance(target, nn.Module) else name)
        batcher = Batcher(
            model,
            tokenizer,
            runtime,
            eos_ids=default_eos(tokenizer, model),
            max_batch=max_batch,
            max_queue=max_queue,
            prefill_thread=threaded,
        )
        served.append(Served(name, model, tokenizer, batcher, config))
    return served


class _DrainingServer(uvicorn.Server):
    """uvicorn's server, which also tells the app to refuse new requests once a signal came."""

    def __init__(self, config: uvicorn.Config, state: State) -> None:
        super().__init__(config)
        self.zoo_state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.zoo_state.draining = True
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM and sig in self._captured_signals:
            # uvicorn raises the signal again once it has shut down; a drained stop is a clean exit
            self._captured_signals.remove(sig)


def serve(
    *targets: Target,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    max_batch: int = 16,
    max_queue: int = 64,
    limits: Limits | None = None,
    device: str | None = None,
    precision: str | None = None,
    quantize: str | None = None,
    config: Config | None = None,
    drain_seconds: float = 60.0,
    log_level: str = "info",
    prefill_thread: bool | None = None,
) -> None:
    """Serve causal LMs over the OpenAI HTTP API until SIGTERM/Ctrl-C (see `zoo serve --help`).

    ``targets`` are what `zoo generate` opens (a run, artifact, local model folder, preset or
    ``hf:`` reference; ``NAME=TARGET`` names one) or model objects; ``api_key`` (None: none
    needed) is the bearer token clients must send; ``prefill_thread`` prefills newcomers on a
    thread of their own beside the decoding loop (None: for models of 10M parameters or more when
    torch's threads leave a core free, `zoo.serving.batcher.wants_prefill_thread`).
    """
    if not targets:
        raise ZooError("name at least one model to serve")
    cfg = config or default_config()
    settings: dict[str, Any] = {k: v for k, v in (("device", device), ("precision", precision)) if v is not None}
    runtime = Runtime(cfg.runtime, **settings)
    models = open_models(
        targets,
        runtime,
        cfg,
        max_batch=max_batch,
        max_queue=max_queue,
        quantize=quantize,
        prefill_thread=prefill_thread,
    )
    app = create_app(models, limits=limits, api_key=api_key)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print(f"zoo serve: listening on {host} without an API key (--api-key)", file=sys.stderr)
    config_ = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=max(1, round(drain_seconds)),
        access_log=False,
    )
    names = ", ".join(m.name for m in models)
    print(f"zoo serve: {names} on http://{host}:{port} (chat page at /, OpenAI API at /v1)", file=sys.stderr)
    _DrainingServer(config_, app.state.zoo).run()
