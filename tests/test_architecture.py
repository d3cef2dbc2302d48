"""The arrows of the layout: plugins use only `import zoo`; the core imports no plugin; the
engine, the language-model pieces and the command line do not import each other in circles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import zoo

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_SOURCES = sorted((ROOT / "plugins").glob("*/src"))


def imports(path: Path, *, for_typing: bool = True) -> list[tuple[int, str]]:
    """Every module a file imports (top level and inside functions), with its line; without
    ``for_typing``, imports under ``if TYPE_CHECKING:`` (never run) are left out."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    if not for_typing:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)]
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_plugins_import_only_the_public_api():
    assert len(PLUGIN_SOURCES) == 4
    private = [
        f"{path.relative_to(ROOT)}:{line}: imports {name}"
        for src in PLUGIN_SOURCES
        for path in src.rglob("*.py")
        for line, name in imports(path)
        if name.startswith("zoo.")
    ]
    assert not private, "plugins must use `import zoo` only:\n" + "\n".join(private)


def test_the_public_api_resolves_every_name():
    missing = [name for name in zoo.__all__ if not hasattr(zoo, name)]
    assert not missing and sorted(zoo._HOME) == sorted(n for n in zoo.__all__ if n != "__version__")


def test_the_core_imports_no_plugin_package():
    plugin_packages = {
        p.name for src in PLUGIN_SOURCES for p in src.iterdir() if p.is_dir() and p.name != "__pycache__"
    }
    assert plugin_packages >= {"zoo_hf", "zoo_minigpt", "zoo_simplenet", "zoo_example"}
    found = [
        f"{path.relative_to(ROOT)}:{line}: imports {name}"
        for path in (ROOT / "zoo").rglob("*.py")
        for line, name in imports(path)
        if name.split(".")[0] in plugin_packages or name.split(".")[0].startswith("zoo_")
    ]
    assert not found, "zoo/ must not import plugins:\n" + "\n".join(found)


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in (ROOT / "zoo").rglob("*.py")}
    return {
        name: {m for _, m in imports(path, for_typing=False) if m in modules and m != name}
        for name, path in sorted(modules.items())
    }


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("zoo.trainers", "zoo.lm"),  # the engine knows nothing of language models
        ("zoo.trainers", "zoo.cli"),
        ("zoo.lm", "zoo.cli"),  # `zoo generate` is registered through the command hook
        ("zoo.protocols", "zoo."),  # the contract depends on nothing at run time
    ],
)
def test_no_arrow_points_back(low, high):
    back = [
        f"{name} imports {dep}"
        for name, deps in graph().items()
        if name.startswith(low)
        for dep in deps
        if dep.startswith(high) and not dep.startswith(low)
    ]
    assert not back, f"{low} must not import {high}: " + "; ".join(back)
