"""Shared fixtures: every test gets a fresh registry (no state leaks between tests)."""

from __future__ import annotations

import gc
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


# `make test` runs `pytest -n <cores + 1> --dist loadgroup`, with the groups below (pytest_xdist_make_scheduler):
# a file's tests share a worker, as with --dist loadfile (module fixtures are set up once;
# test_fuzz and test_hostile_files report on the cases the file ran), except the FREE tests, which
# any worker takes. (xdist 3.8's own xdist_group marks do nothing under pytest 9.2: it renames
# item._nodeid, which pytest no longer reads.) Slow groups go first: workers take the queue in
# order, so the last tests to start are short ones (longest first balances two workers best).
FREE = {  # tests without an expensive module fixture (a file: all of its tests)
    "tests/test_distributed.py::test_early_stopping_stops_every_process_at_one_step",
    "tests/test_stop.py::test_force_killed_before_or_after_the_new_runs_first_checkpoint",
    "tests/test_outside_repo.py",
    "tests/test_bench_scripts.py",
}
SLOW = {  # group (a file) or free test: seconds, measured on a quiet 2-core machine under -n 2
    "tests/test_distributed.py": 60,
    "tests/test_onnx.py": 31,
    "tests/test_hostile_files.py": 27,
    "plugins/zoo-hf/tests/test_onnx_hf.py": 23,
    "plugins/zoo-hf/tests/test_trust.py": 22,
    "tests/test_fuzz.py": 20,
    "tests/test_bench_scripts.py::test_gpu_script_dry_run": 18,
    "plugins/zoo-hf/tests/test_hub.py": 17,
    "tests/test_exit_codes.py": 16,
    "tests/test_stop.py": 13,
    "tests/test_outside_repo.py::test_the_command_line_from_an_empty_folder": 14,
    "tests/test_crash.py": 13,
    "tests/test_docs.py": 10,
    "tests/test_conformance.py": 10,
    "tests/test_distributed.py::test_early_stopping_stops_every_process_at_one_step": 8,
    "plugins/zoo-hf/tests/test_chat.py": 7,
    "tests/test_extension_hooks.py": 7,
    "tests/test_architecture.py": 7,
    "tests/test_plugin_scale.py": 7,
}


def xdist_group(nodeid: str) -> str | None:
    """The file whose worker runs this test, or None for a free test."""
    path, test = nodeid.split("::")[0], nodeid.split("[")[0]
    return None if path in FREE or test in FREE else path


def pytest_configure(config: pytest.Config) -> None:
    """Collecting imports torch, transformers, onnxscript, hypothesis: millions of long-lived
    objects that collections would only rescan (as in zoo's command line: zoo.cli.import_heavy).
    The collector pauses from here to the end of collection (a third less time in each worker),
    then freezes them."""
    gc.disable()


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> object:
    try:
        return (yield)
    finally:  # also in xdist's controller, whose own pytest_collection returns at once
        gc.enable()
        gc.freeze()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def seconds(item: pytest.Item) -> float:
        return SLOW.get(xdist_group(item.nodeid) or item.nodeid.split("[")[0], 0)

    items.sort(key=lambda item: -seconds(item))  # stable: the rest keep their order


@pytest.hookimpl(optionalhook=True)  # an xdist hook: `pytest -p no:xdist` still runs
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Groups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid) or nodeid

    config.option.loadscopereorder = False  # keep the slowest-first order above
    return Groups(config, log)
