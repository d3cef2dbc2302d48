"""`zoo train --nproc N`: re-run the same command under torchrun (one machine, N processes).

For several machines, call torchrun yourself on each (see the README):
``torchrun --nnodes=2 --node_rank=R --nproc_per_node=N --rdzv_endpoint=HOST:PORT -m zoo train ...``
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from zoo.interrupts import SIGNALS


def launched_by_torchrun(env: Any = None) -> bool:
    env = os.environ if env is None else env
    return int(env.get("WORLD_SIZE", "1")) > 1


ARGV = "ZOO_ARGV"  # the command as the user gave it (with --nproc), for the processes' messages


def without_nproc(argv: Sequence[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def relaunched() -> bool:
    """This process is one of those `relaunch_with_torchrun` started (it reports their exit code)."""
    return launched_by_torchrun() and ARGV in os.environ


def user_argv(argv: Sequence[str]) -> list[str]:
    """The arguments the user typed: ``argv`` itself, or, in a process torchrun started for
    ``--nproc``, the relaunching command's."""
    given = os.environ.get(ARGV)
    return [str(a) for a in json.loads(given)] if given and launched_by_torchrun() else list(argv)


def relaunch_with_torchrun(nproc: int, argv: Sequence[str]) -> int:
    """Run torchrun in a session of its own, so that Ctrl-C reaches only this process, which
    passes each SIGINT/SIGTERM on to every training process once (torchrun itself hears none:
    it would print a traceback); they stop together at the next step with a checkpoint, exit 0,
    and this process exits 128 + the signal."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    env = {**os.environ, ARGV: json.dumps(list(argv))}
    proc = subprocess.Popen([*cmd, "-m", "zoo", *without_nproc(argv)], start_new_session=True, env=env)
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        for pid in _children(proc.pid) or [proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in SIGNALS}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:  # stopped (the processes exit 0), or a second signal ended them at once
        return 128 + (received[0] if code == 0 else received[-1])
    return code


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (torchrun's training processes), as Linux lists them."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError, ValueError):
            found += [int(child) for child in task.read_text().split()]
    return found
