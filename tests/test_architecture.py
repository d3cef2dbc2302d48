"""The arrows of the layout: plugins use only `import zoo`; the core imports no plugin; the
engine, the language-model pieces and the command line do not import each other in circles."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import zoo
from zoo.specs import KINDS

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
        ("zoo.trainers", "zoo.commands"),
        ("zoo.lm", "zoo.cli"),
        ("zoo.lm", "zoo.commands"),  # `zoo generate` is registered through the command hook
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


def every_import(path: Path) -> set[str]:
    """The zoo modules a file imports, anywhere (inside functions and under TYPE_CHECKING too);
    ``from zoo import checkpoints`` imports the module ``zoo.checkpoints``, not the facade."""
    modules = {module_name(p) for p in (ROOT / "zoo").rglob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            found |= subs or {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in modules and m != module_name(path)}


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in graph.get(node, ()):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            group = set()
            while True:
                top = stack.pop()
                group.add(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(group)

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_core_has_no_import_circle():
    graph = {module_name(p): every_import(p) for p in (ROOT / "zoo").rglob("*.py") if p.name != "__init__.py"}
    found = circles(graph)
    assert not found, "import circles in zoo/: " + "; ".join(" <-> ".join(sorted(c)) for c in found)


@pytest.mark.parametrize("src", PLUGIN_SOURCES, ids=lambda p: p.parent.name)
def test_no_plugin_has_an_import_circle(src):
    """Spec beside the model, hooks on top: a plugin's modules import one another in one direction."""
    files = {".".join(p.relative_to(src).with_suffix("").parts): p for p in src.rglob("*.py")}
    graph = {name: {m for _, m in imports(path) if m in files and m != name} for name, path in files.items()}
    found = circles(graph)
    assert not found, f"import circles in {src.parent.name}: " + "; ".join(" <-> ".join(sorted(c)) for c in found)


def test_every_builder_names_a_callable():
    """A spec's ``builder`` is an arrow written as a string: each must lead somewhere real."""
    cfg = zoo.default_config()
    missing = []
    for kind in KINDS:
        for name, entry in cfg.registry.types(kind).items():
            target = entry.spec_cls.builder
            if target is not None:
                module, _, attr = target.partition(":")
                if not callable(getattr(importlib.import_module(module), attr, None)):
                    missing.append(f"{kind}.{name}: {target}")
    assert not missing, "builders that name nothing: " + "; ".join(missing)


def test_nothing_below_the_facade_imports_it():
    top = {"zoo", "zoo.__main__", "zoo.cli", "zoo.api"}  # and the commands, which the command line runs
    up = [
        f"{module_name(p)} imports {m}"
        for p in (ROOT / "zoo").rglob("*.py")
        if module_name(p) not in top and not module_name(p).startswith("zoo.commands")
        for m in every_import(p)
        if m in ("zoo", "zoo.api")
    ]
    assert not up, "the facade (zoo, zoo.api) is the top floor, never a foundation: " + "; ".join(up)


# The only imports inside functions: each keeps torch (or another heavy import) out of a command
# that does not need it. A new one needs a reason here, not a circle to dodge.
LAZY = {
    "zoo.__main__": {"zoo.cli", "zoo.interrupts"},  # the Ctrl-C guard first, then the command line
    "zoo.commands.train": {"zoo.distributed", "zoo.training"},  # `zoo list` imports no torch
    "zoo.commands.export": {"zoo.finetune", "zoo.storage"},
    "zoo.commands.generate": {"zoo.finetune", "zoo.lm.generation", "zoo.runtime"},
    "zoo.commands.serve": {"zoo.serving.protocol", "zoo.serving.server"},  # FastAPI and torch: only to serve
    "zoo.lm.specs": {"zoo.lm.samplers"},  # build() imports what it builds
    "zoo.trainers.specs": {"zoo.trainers.callbacks", "zoo.trainers.loggers", "zoo.trainers.trackers"},
    "zoo.plugin": {"zoo.lm.specs", "zoo.trainers.specs", "zoo.trainers.optimizers", "zoo.trainers.schedules"},
    "zoo.trainers.optimizers": {"zoo.trainers", "zoo.trainers.muon", "zoo.trainers.param_groups"},  # build()
    "zoo.testing": {
        "zoo.artifacts",
        "zoo.checkpoints",
        "zoo.lm.generation",
        "zoo.lm.tokenizers",
        "zoo.runtime",
        "zoo.trainers.engine",
        "zoo.trainers.run",
    },
}


def test_imports_inside_functions_are_the_listed_lazy_ones():
    found: dict[str, set[str]] = {}
    for path in (ROOT / "zoo").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and node.module == "zoo":  # from zoo import checkpoints
                        names = [f"zoo.{a.name}" for a in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.module:
                        names = [node.module]
                    else:
                        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                    found.setdefault(module_name(path), set()).update(n for n in names if n.startswith("zoo"))
    extra = {m: sorted(deps - LAZY.get(m, set())) for m, deps in found.items() if deps - LAZY.get(m, set())}
    assert not extra, f"imports inside functions that are not in LAZY (move them to the top): {extra}"


def test_no_function_in_the_core_is_over_80_lines():
    """Small rooms: a function that outgrows a screen is split into named steps."""
    long = [
        f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name} ({fn.end_lineno - fn.lineno + 1} lines)"
        for path in (ROOT / "zoo").rglob("*.py")
        for fn in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and (fn.end_lineno or 0) - fn.lineno + 1 > 80
    ]
    assert not long, "functions over 80 lines: " + "; ".join(long)
