"""Shared fixtures: every test gets a fresh registry (no state leaks between tests)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import zoo
from zoo.config import Config, config_from_dict, load_config
from zoo.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Under pytest-xdist each worker (and each process a test starts) gets its share of the cores:
# two workers with two torch threads each on two cores run slower than with one each.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(share))


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def config() -> Config:
    """The repository's registry.toml over a fresh registry of the installed plugins."""
    return load_config(ROOT / "registry.toml", env={})


@pytest.fixture
def make_config() -> Callable[..., Config]:
    """Build a Config from a dict, with a fresh registry plus optional inline plugins."""

    def make(raw: dict | None = None, *plugins: object, entry_points: bool = True, env: dict | None = None) -> Config:
        from zoo.specs import PluginsSpec

        settings = PluginsSpec.model_validate((raw or {}).get("plugins", {}))
        registry = Registry(settings, entry_points=entry_points, env=env or {})
        for i, plugin in enumerate(plugins):
            name = getattr(plugin, "__name__", f"inline{i}")
            registry.add_plugin(plugin, name=name, distribution=getattr(plugin, "DIST", name), version="9.9")
        return config_from_dict(raw or {}, registry=registry)

    return make


@pytest.fixture
def no_torch_python() -> Callable[[str], str]:
    """Run Python code in a subprocess; returns its stdout; fails if torch got imported."""
    import subprocess

    def run(code: str) -> str:
        probe = code + "\nimport sys\nassert 'torch' not in sys.modules, 'torch was imported'\n"
        probe += "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
        res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
        assert res.returncode == 0, res.stderr
        return res.stdout

    return run


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A small text corpus for real training runs (a test file may define its own)."""
    path = tmp_path_factory.mktemp("corpus") / "c.txt"
    path.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(400)))
    return path


__all__ = ["zoo"]


@pytest.fixture(autouse=True)
def _command_line_verbosity(monkeypatch: pytest.MonkeyPatch) -> None:
    """`main([...])` records --verbose in the environment (ZOO_VERBOSE); undone after each test."""
    monkeypatch.delenv("ZOO_VERBOSE", raising=False)
