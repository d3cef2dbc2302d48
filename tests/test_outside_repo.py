"""An installed zoo works anywhere: from an empty folder (no registry.toml, no user file), every
named preset the README uses resolves, and a model trains, generates and fine-tunes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def empty(tmp_path) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "empty"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZOO_", "XDG_CONFIG"))}
    env["HOME"] = str(tmp_path / "home")  # no user registry file either
    return folder, env


def zoo_cli(folder: Path, env: dict[str, str], *args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "zoo", *args], cwd=folder, env=env, capture_output=True, text=True)
    assert res.returncode == 0, f"zoo {' '.join(args)}: {res.stderr[-2000:]}"
    return res.stdout


def test_the_command_line_from_an_empty_folder(empty):
    folder, env = empty
    listing = json.loads(zoo_cli(folder, env, "list", "--json"))
    for kind, name in [
        ("models", "minigpt-small"),
        ("models", "simplenet-small"),
        ("models", "hf-gpt2-tiny"),
        ("trainers", "classifier-quick"),
        ("trainers", "lm-demo"),
        ("samplers", "creative"),
        ("samplers", "precise"),
    ]:
        assert name in listing[kind]["presets"], (kind, name)
    assert "zoo-minigpt" in zoo_cli(folder, env, "show", "minigpt-small")
    zoo_cli(folder, env, "train", "--model", "minigpt-tiny", "--trainer", "lm-tiny", "--out", "run")
    text = zoo_cli(folder, env, "generate", "run", "--prompt", "The", "--sampler", "creative", "--max-new-tokens", "5")
    assert text.startswith("The")
    zoo_cli(folder, env, "train", "--init-from", "run", "--trainer", "lm-tiny", "--out", "ft")
    assert json.loads((folder / "ft" / "model" / "manifest.json").read_text())["parent"]["path"].endswith("run/model")
    zoo_cli(folder, env, "train", "--model", "simplenet-small", "--trainer", "classifier-quick", "--out", "net")
    assert sorted(p.name for p in folder.iterdir()) == ["ft", "net", "run"]  # nothing else was written here


PYTHON = """
import zoo
assert "minigpt-small" in zoo.list_models("minigpt*", protocol="causal-lm")
model = zoo.build_model("minigpt-small", dropout=0.1)
assert model.zoo_spec.dropout == 0.1
parent = zoo.train("lm-tiny", "py-run", model="minigpt-tiny")
child = zoo.train("lm-tiny", "py-ft", init_from="py-run")
lm = zoo.load(child.artifact)
out = zoo.generate(lm, lm.zoo_tokenizer, ["Hi"], "precise", max_new_tokens=4)
assert len(out.ids[0]) == 4
print("ok")
"""


def test_the_python_api_from_an_empty_folder(empty):
    folder, env = empty
    res = subprocess.run([sys.executable, "-c", PYTHON], cwd=folder, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("ok")
