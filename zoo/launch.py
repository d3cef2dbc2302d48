"""`zoo train --nproc N`: re-run the same command under torchrun (one machine, N processes).

For several machines, call torchrun yourself on each (see the README):
``torchrun --nnodes=2 --node_rank=R --nproc_per_node=N --rdzv_endpoint=HOST:PORT -m zoo train ...``
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
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


def user_argv(argv: Sequence[str]) -> list[str]:
    """The arguments the user typed: ``argv`` itself, or, in a process torchrun started for
    ``--nproc``, the relaunching command's."""
    given = os.environ.get(ARGV)
    return [str(a) for a in json.loads(given)] if given and launched_by_torchrun() else list(argv)


def relaunch_with_torchrun(nproc: int, argv: Sequence[str]) -> int:
    """Run torchrun in a session of its own, so that each SIGINT/SIGTERM reaches it once, from
    here: torchrun passes it to every process, which stop together at the next step with a
    checkpoint."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    env = {**os.environ, ARGV: json.dumps(list(argv))}
    proc = subprocess.Popen([*cmd, "-m", "zoo", *without_nproc(argv)], start_new_session=True, env=env)
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in SIGNALS}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 + received[0] if received else code
