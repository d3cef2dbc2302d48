"""Shell completion through argcomplete's protocol (what bash does after `register-python-argcomplete
zoo`): commands, preset names and run folders complete, and torch is never imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("argcomplete")

# torch made unimportable: completion must answer without it
RUN = "import sys; sys.modules['torch'] = None; from zoo.__main__ import run; run()"


def complete(line: str, cwd) -> list[str]:
    out = cwd / ".completions"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        "_ARGCOMPLETE_IFS": "\n",
    }
    res = subprocess.run([sys.executable, "-c", RUN], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return [word.rstrip(" ") for word in out.read_text().split("\n")]  # a lone match ends with a space


def test_commands_presets_and_run_folders_complete(tmp_path):
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    (tmp_path / "runs" / "demo" / "run.json").write_text("{}")
    (tmp_path / "runs" / "notes").mkdir()
    assert "train" in complete("zoo tr", tmp_path)
    assert complete("zoo train --model minigpt-ti", tmp_path) == ["minigpt-tiny"]
    assert set(complete("zoo train --trainer lm", tmp_path)) >= {"lm", "lm-demo", "lm-tiny"}
    assert complete("zoo generate runs/demo --sampler cre", tmp_path) == ["creative"]
    # a run folder completes whole; another folder with a / to go into
    assert complete("zoo train --out runs/", tmp_path) == ["runs/demo", "runs/notes/"]
    assert complete("zoo generate runs/d", tmp_path) == ["runs/demo"]
    assert complete("zoo train --resume runs/de", tmp_path) == ["runs/demo"]
    assert "simplenet-small" in complete("zoo show simplenet", tmp_path)
