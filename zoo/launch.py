"""`zoo train --nproc N`: re-run the same command under torchrun."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence


def relaunch_with_torchrun(nproc: int, argv: Sequence[str]) -> int:
    args = [a for a in argv]
    i = args.index("--nproc")
    del args[i : i + 2]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "zoo",
        *args,
    ]
    return subprocess.call(cmd)
