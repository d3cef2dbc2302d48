"""The prepared GPU script runs end to end on the CPU (tiny shapes), so it does not rot between
the sessions that have a GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_dry_run():
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--dry-run"], capture_output=True, text=True, cwd=ROOT
    )
    assert res.returncode == 0, res.stderr[-3000:]
    for needle in (
        "minigpt eager",
        "hf gpt2 compiled",
        "fp16 + GradScaler",
        "zoo (static step, compiled)",
        "hf generate()",
    ):
        assert needle in res.stdout
