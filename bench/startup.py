"""`zoo list` cold start against `python -c "import torch"`, measured side by side.

Each command runs as a fresh process N times, alternating; the table shows medians.
Goal (issue 2): `zoo list` under 0.3 s on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import interleave  # noqa: E402


def wall(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def rounds(runs: int = 7) -> dict[str, list[float]]:
    """Wall seconds of each command, ``runs`` interleaved rounds (one warm-up round first)."""
    commands = {
        "zoo list": [sys.executable, "-m", "zoo", "list"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "python -c 'pass'": [sys.executable, "-c", "pass"],
    }
    return interleave({name: lambda cmd=cmd: wall(cmd) for name, cmd in commands.items()}, runs)


def measure(runs: int = 7) -> dict[str, float]:
    return {name: statistics.median(t) for name, t in rounds(runs).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    med = measure(parser.parse_args().runs)
    zoo_list, torch_import = med["zoo list"], med["python -c 'import torch'"]
    print(f"{'command':<28} {'median s':>9}")
    for name, value in med.items():
        print(f"{name:<28} {value:>9.3f}")
    print(f"zoo list / import torch = {zoo_list / torch_import:.2f}  (goal: zoo list < 0.300 s)")


if __name__ == "__main__":
    main()
