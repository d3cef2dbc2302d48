"""Every snippet in docs/writing-plugins.md and the README's Python section runs as written.

Blocks marked ``file=PATH`` are written into a fresh project; installing it is simulated the way
pip does it for discovery (a ``.dist-info`` with the project's entry points on ``sys.path``).
"""

from __future__ import annotations

import re
import shutil
import sys
import tomllib
from pathlib import Path

import pytest

import zoo.api

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```(\w+)([^\n]*)\n(.*?)```", re.S)


def blocks(path: Path) -> list[tuple[str, str, str]]:
    return [(lang, info.strip(), body) for lang, info, body in BLOCK.findall(path.read_text())]


def install_simulated(project: Path, site: Path) -> None:
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    info = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    eps = "".join(f"{k} = {v}\n" for k, v in meta["entry-points"]["zoo"].items())
    (info / "entry_points.txt").write_text(f"[zoo]\n{eps}")


def test_writing_plugins_walkthrough(tmp_path, monkeypatch):
    project, site = tmp_path / "zoo-tinycnn", tmp_path / "site"
    doc = blocks(ROOT / "docs" / "writing-plugins.md")
    files = [(info.removeprefix("file="), body) for _, info, body in doc if info.startswith("file=")]
    assert {f for f, _ in files} >= {"pyproject.toml", "src/zoo_tinycnn/hooks.py", "tests/test_conformance.py"}
    for name, body in files:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(body)
    install_simulated(project, site)
    monkeypatch.syspath_prepend(str(project / "src"))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.chdir(ROOT)
    zoo.api._cached_config.cache_clear()  # the registry must see the newly "installed" plugin
    try:
        namespace: dict = {}
        exec(
            compile(
                (project / "tests" / "test_conformance.py").read_text(),
                "test_conformance.py",
                "exec",
                dont_inherit=True,
            ),
            namespace,
        )
        tests = [f for n, f in namespace.items() if n.startswith("test_")]
        assert tests
        for test in tests:
            test()
        for lang, info, body in doc:
            if lang == "python" and not info:
                exec(compile(body, "writing-plugins.md", "exec", dont_inherit=True), {})
    finally:
        zoo.api._cached_config.cache_clear()
        for mod in [m for m in sys.modules if m.startswith("zoo_tinycnn")]:
            del sys.modules[mod]


def test_readme_python_snippets(tmp_path, monkeypatch):
    shutil.copy(ROOT / "registry.toml", tmp_path / "registry.toml")
    monkeypatch.chdir(tmp_path)
    zoo.api._cached_config.cache_clear()
    # a client of `zoo serve` needs a server: tests/test_serve_http.py runs those against one
    snippets = [body for lang, info, body in blocks(ROOT / "README.md") if lang == "python" and info != "needs-server"]
    assert snippets
    try:
        for body in snippets:
            exec(
                compile(
                    body.replace('"classifier-quick"', '{"type": "classifier", "max_steps": 20, "progress": False}'),
                    "README.md",
                    "exec",
                    dont_inherit=True,
                ),
                {},
            )
    finally:
        zoo.api._cached_config.cache_clear()
    assert (tmp_path / "artifacts" / "net" / "manifest.json").is_file()


@pytest.mark.parametrize("doc", sorted(p.name for p in (ROOT / "docs").glob("*.md")))
def test_docs_toml_blocks_parse(doc):
    for lang, _, body in blocks(ROOT / "docs" / doc):
        if lang == "toml":
            tomllib.loads(body)
