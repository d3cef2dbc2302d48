"""`zoo serve`: causal LMs behind an OpenAI-compatible HTTP API (registered by `zoo.plugin`).

The server's modules (FastAPI, uvicorn, torch) are imported only when the command runs, so that
``zoo --help`` stays fast; they come with the optional extra ``zoo[serve]``.
"""

from __future__ import annotations

import argparse
import os

from zoo.config import config_from_args
from zoo.errors import ZooError
from zoo.specs import QUANTIZE_METHODS

TARGET_HELP = (
    "a run, artifact, local model folder (e.g. Hugging Face), preset or hf: reference; "
    "NAME=TARGET serves it as NAME (several: several models)"
)


def serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("targets", nargs="+", metavar="TARGET", help=TARGET_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="bearer token clients must send (default: $ZOO_API_KEY; none)")
    p.add_argument("--max-batch", type=int, default=16, help="requests decoded together (default 16)")
    p.add_argument("--max-queue", type=int, default=64, help="requests that may wait; beyond: 429 (default 64)")
    p.add_argument("--max-tokens", type=int, default=1024, help="largest max_tokens a request may ask (default 1024)")
    p.add_argument("--max-prompt-tokens", type=int, default=8192, help="longest prompt in tokens (default 8192)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    p.add_argument("--drain-seconds", type=float, default=60.0, help="on SIGTERM, how long requests may finish")
    p.add_argument("--quantize", choices=QUANTIZE_METHODS, default="none", help="int8: int8 linear layers (CPU)")
    p.add_argument(
        "--prefill",
        choices=["auto", "thread", "inline"],
        default="auto",
        help="newcomers' prefill on a thread beside decoding, or inline between steps "
        "(default auto: a thread for models of 10M parameters or more when torch's threads leave a core free)",
    )
    p.add_argument("--device")
    p.add_argument("--precision")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def cmd_serve(args: argparse.Namespace) -> int:
    for flag in ("max_batch", "max_queue", "max_tokens", "max_prompt_tokens", "max_body_bytes"):
        if getattr(args, flag) < 1:
            raise ZooError(f"--{flag.replace('_', '-')} must be at least 1")
    if not 0 <= args.port < 65536:
        raise ZooError(f"--port {args.port}: must be between 0 and 65535")
    cfg = config_from_args(args, ("device", "precision"))
    try:
        from zoo.serving.protocol import Limits
        from zoo.serving.server import serve
    except ImportError as err:
        raise ZooError(f"zoo serve needs the serve extra: pip install 'zoo[serve]' ({err})") from None
    limits = Limits(args.max_body_bytes, args.max_prompt_tokens, args.max_tokens)
    serve(
        *args.targets,
        host=args.host,
        port=args.port,
        api_key=args.api_key or os.environ.get("ZOO_API_KEY") or None,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        limits=limits,
        quantize=args.quantize,
        config=cfg,
        drain_seconds=args.drain_seconds,
        log_level=args.log_level,
        prefill_thread={"auto": None, "thread": True, "inline": False}[args.prefill],
    )
    return 0
