"""Data sources and commands are plugin kinds: registered through hooks, owned by a distribution,
refused when they clash, gone when their plugin is; the image path trains end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import warm

import zoo
from zoo.training import train_from_config


def plugin(name: str, **hooks: object) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook, body in hooks.items():
        setattr(module, hook, zoo.hookimpl(body))  # type: ignore[arg-type]
    return module


def commands_plugin(name: str, command: str) -> types.ModuleType:
    def zoo_register_commands(register):
        register(command, lambda args: 0, help=f"from {name}")

    return plugin(name, zoo_register_commands=zoo_register_commands)


def test_commands_are_owned_and_unique(make_config):
    cfg = make_config({}, commands_plugin("first", "hello"), commands_plugin("second", "hello"))
    assert cfg.registry.commands["hello"].distribution == "first"
    second = cfg.registry.plugins["second"]
    assert second.status == "failed" and "command 'hello' is already registered by first 9.9" in second.reason
    core = make_config({}, commands_plugin("bold", "train"), entry_points=False).registry.plugins["bold"]
    assert core.status == "failed" and "one of zoo's own commands" in core.reason


def test_a_data_source_must_say_what_it_reads(make_config):
    def zoo_register_data_sources(register):
        register("weird", lambda path, options: None, protocol="images")

    info = make_config({}, plugin("bad", zoo_register_data_sources=zoo_register_data_sources)).registry.plugins["bad"]
    assert info.status == "failed" and "protocol must be one of classifier, causal-lm" in info.reason


def test_a_registered_data_source_feeds_the_trainer(make_config, tmp_path):
    """A plugin's reader is chosen by suffix and its examples train; its errors name the file."""

    def read(path, options):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        import torch

        return zoo.Examples(torch.tensor([r["x"] for r in rows]), torch.tensor([r["y"] for r in rows]))

    def zoo_register_data_sources(register):
        register("points", read, protocol="classifier", suffixes=[".points"])

    cfg = make_config({}, plugin("pts", zoo_register_data_sources=zoo_register_data_sources))
    assert cfg.registry.data_sources["points"].distribution == "pts"
    data = tmp_path / "d.points"
    data.write_text("".join(json.dumps({"x": [i % 2, 1.0], "y": i % 2}) + "\n" for i in range(40)))
    trainer = {"type": "classifier", "max_steps": 30, "lr": 0.05, "eval_every": 30, "progress": False}
    model = {"type": "simplenet", "in_features": 2, "num_classes": 2, "hidden": [8]}
    result = train_from_config(cfg, model, trainer, tmp_path / "run", data=data)
    assert result.metrics["val_accuracy"] == 1.0
    data.write_text("not json\n")
    with pytest.raises(zoo.DataError, match=r"d\.points: data source 'points' \(pts 9\.9\) failed: JSONDecodeError"):
        train_from_config(cfg, model, trainer, tmp_path / "run2", data=data)


def _zoo(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m zoo ARGS` in a process of its own (started warm: tests/warm.py)."""
    return warm.run(args, capture_output=True, text=True, cwd=cwd, env={**os.environ, **(env or {})})


def test_plugin_commands_come_and_go_with_their_plugin(tmp_path):
    shown = _zoo("--help", cwd=tmp_path)
    assert "import" in shown.stdout and "[zoo-hf]" in shown.stdout and "generate" in shown.stdout
    off = _zoo("import", "x", "--out", "y", cwd=tmp_path, env={"ZOO_DISABLE_PLUGINS": "zoo-hf"})
    assert off.returncode == 2 and "invalid choice: 'import'" in off.stderr
    # an export format is a plugin kind too: without zoo-hf, "hf" is gone and the message says why
    zoo_save = "import zoo; zoo.save(zoo.build_model('simplenet-small'), 'a')"
    subprocess.run([sys.executable, "-c", zoo_save], cwd=tmp_path, check=True)
    no_hf = _zoo("export", "a", "--format", "hf", "--out", "o", cwd=tmp_path, env={"ZOO_DISABLE_PLUGINS": "zoo-hf"})
    assert (
        no_hf.returncode == 2 and "unknown export format 'hf'" in no_hf.stderr and "zoo-hf (disabled)" in no_hf.stderr
    )
    (tmp_path / "registry.toml").write_text('[plugins]\ndisable = ["zoo-hf"]\n')
    assert "import" not in _zoo("--help", cwd=tmp_path).stdout.split("exit codes")[0]


def _image_set(root: Path, per_class: int = 24) -> Path:
    """Four classes of 16x16 grey images: a bright quadrant says which, over noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(4):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (16, 16))
            r, q = divmod(c, 2)
            pixels[r * 8 : r * 8 + 8, q * 8 : q * 8 + 8] += 150
            Image.fromarray(pixels.astype(np.uint8), mode="L").save(root / f"class{c}" / f"{i}.png")
    return root


def test_a_cnn_trains_on_an_image_folder_through_zoo_train(tmp_path):
    images = _image_set(tmp_path / "images")
    trainer = {"type": "classifier", "max_steps": 60, "batch_size": 32, "lr": 0.01, "eval_every": 60}
    trainer |= {"progress": False, "data_options": {"image_mode": "L"}}
    res = _zoo(
        "train",
        "--model",
        "small-cnn-gray",
        "--trainer",
        json.dumps(trainer),
        "--data",
        str(images),
        "--out",
        str(tmp_path / "run"),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in rows if "val_accuracy" in r][-1]
    assert final["step"] == 60 and final["val_accuracy"] >= 0.9, final
    # the wrong image size names the fields of the preset to change
    small = _zoo(
        "train",
        "--model",
        "small-cnn-gray",
        "--trainer",
        json.dumps({**trainer, "data_options": {"image_mode": "L", "image_size": [8, 8]}}),
        "--data",
        str(images),
        "--out",
        str(tmp_path / "run2"),
        cwd=tmp_path,
    )
    assert small.returncode == 2
    assert "fix: --set models.small-cnn-gray.channels=1 --set models.small-cnn-gray.height=8" in small.stderr


def test_a_broken_plugin_command_is_one_message(tmp_path, monkeypatch, capsys):
    from zoo import cli
    from zoo.registry import CommandEntry

    def arguments(parser):
        raise RuntimeError("oops")

    broken = {"boom": CommandEntry("boom", lambda args: 0, "explodes", arguments, "zoo-bad", "1.0")}
    monkeypatch.setattr(cli, "plugin_commands", lambda argv: broken)
    assert cli.main(["boom"]) == 2
    assert "command 'boom' of zoo-bad 1.0: adding its arguments failed (RuntimeError: oops)" in capsys.readouterr().err
