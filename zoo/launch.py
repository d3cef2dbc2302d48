"""`zoo train --nproc N`: re-run the same command under torchrun (one machine, N processes).

For several machines, call torchrun yourself on each (see the README):
``torchrun --nnodes=2 --node_rank=R --nproc_per_node=N --rdzv_endpoint=HOST:PORT -m zoo train ...``
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence


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


def relaunch_with_torchrun(nproc: int, argv: Sequence[str]) -> int:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.call([*cmd, "-m", "zoo", *without_nproc(argv)])
