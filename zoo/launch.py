"""`zoo train --nproc N`: re-run the same command under torchrun (one machine, N processes).

For several machines, call torchrun yourself on each (see the README):
``torchrun --nnodes=2 --node_rank=R --nproc_per_node=N --rdzv_endpoint=HOST:PORT -m zoo train ...``
"""

from __future__ import annotations

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


def relaunch_with_torchrun(nproc: int, argv: Sequence[str]) -> int:
    """Run torchrun in a session of its own, so that each SIGINT/SIGTERM reaches it once, from
    here: torchrun passes it to every process, which stop together at the next step with a
    checkpoint (the processes see ``--nproc`` and run, since torchrun launched them)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    proc = subprocess.Popen([*cmd, "-m", "zoo", *argv], start_new_session=True)
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
