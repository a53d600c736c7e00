"""The layering rules of the house style, checked on the source: every `import` in a package's
own modules (module level or inside a function), and what importing the voxtune modules they
name runs in turn (their module-level imports), followed to the end. `voxtune.cli`, the
composition root that wires every command with lazy imports, is not followed.

Two kinds of contract, import-linter style:
- libraries (RULES): so the prepare and controller/UI images can leave torch out, and the GPU
  image leaves the cluster and web libraries out — an import that breaks this would fail only
  inside an image;
- package to package (FORBIDDEN): the walls between the rooms (run owner, executors, controller,
  UI, CLI), so a shortcut through a wall fails here instead of growing a cycle.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

RULES = {  # voxtune package → third-party packages nothing it imports may reach
    "voxtune.spec": {"torch", "transformers", "kubernetes", "gradio", "datasets", "peft"},
    # the controller and the UI plan runs before admitting them: shapes by arithmetic only
    "voxtune.plan": {"torch", "transformers", "kubernetes", "gradio", "datasets", "peft"},
    "voxtune.data": {"torch", "transformers", "kubernetes", "gradio", "peft"},
    "voxtune.train": {"kubernetes", "gradio"},
    "voxtune.publish": {"kubernetes", "gradio"},
    "voxtune.controller": {"torch", "transformers", "peft", "gradio", "datasets"},
    "voxtune.ui": {"torch", "transformers", "peft"},
    # what every step pod runs around its step: no cluster client, no ML stack
    "voxtune.run": {"torch", "transformers", "kubernetes", "gradio", "datasets", "peft"},
    "voxtune.executors.local": {"torch", "transformers", "kubernetes", "gradio", "datasets",
                                "peft"},
}

# package → (voxtune packages nothing it imports may reach, why)
FORBIDDEN = {
    "voxtune.ui": ({"voxtune.executors", "voxtune.controller"}, "the UI reaches the backends "
                   "(executors, the FineTuneRun it creates) only through voxtune.client (the one "
                   "gateway, not followed)"),
    "voxtune.controller": ({"voxtune.executors"}, "the operator never runs the user-side "
                           "backends (least of all executors.local)"),
    "voxtune.run": ({"voxtune.executors", "voxtune.controller", "voxtune.client", "voxtune.ui",
                     "voxtune.publish", "voxtune.train", "voxtune.data"},
                    "the run owner sits below every executor and step"),
    "voxtune.executors": ({"voxtune.ui"}, "backends know nothing of the UI"),
    "voxtune.spec": ({"voxtune.run.layout", "voxtune.run.status", "voxtune.run.process",
                      "voxtune.executors", "voxtune.controller"},
                     "the spec imports only the step list below it"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in SRC.rglob("*.py")}


COMPOSITION_ROOT = "voxtune.cli"
ENTRY_POINTS = {"voxtune.__main__"}  # `python -m voxtune`: runs the CLI


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@cache
def imports(module: str, module_level: bool) -> frozenset[str]:
    """Absolute names imported in `module`'s file: at module level only, or anywhere."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = _module_level(tree.body) if module_level else ast.walk(tree)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
    return frozenset(names)


def _module_level(body: list[ast.stmt]):
    """Statements that run on import: the top level, including inside if/try/with blocks."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []):
                    yield from _module_level(getattr(child, "body", [child]))


GATEWAYS = {"voxtune.ui": {"voxtune.client"}}  # the one way through a wall, not followed


def walk(package: str, gateways: frozenset[str] = frozenset()) -> tuple[dict[str, str],
                                                                        dict[str, str]]:
    """(third-party top-level packages, voxtune modules) reachable from `package`, each with
    one voxtune module that imports it (for the message); `gateways` are not entered."""
    own = {name for name in MODULES if in_package(name, package)}
    todo, seen = list(own), set(own)
    libraries: dict[str, str] = {}
    modules: dict[str, str] = {}
    while todo:
        module = todo.pop()
        for name in imports(module, module_level=module not in own):
            if name in gateways:
                continue
            if name in MODULES:
                modules.setdefault(name, module)
                if name not in seen and not in_package(name, COMPOSITION_ROOT):
                    seen.add(name)
                    todo.append(name)
            elif not name.startswith("voxtune"):
                libraries.setdefault(name.split(".")[0], module)
    return libraries, modules


def reachable(package: str) -> dict[str, str]:
    return walk(package)[0]


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_does_not_reach_forbidden_libraries(package: str) -> None:
    broken = {library: module for library, module in reachable(package).items()
              if library in RULES[package]}
    assert not broken, f"{package} reaches {broken} (library: importing module)"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_stays_behind_its_walls(package: str) -> None:
    forbidden, why = FORBIDDEN[package]
    gateways = frozenset(GATEWAYS.get(package, ()))
    broken = {module: by for module, by in walk(package, gateways)[1].items()
              if any(in_package(module, wall) for wall in forbidden)}
    assert not broken, f"{package} reaches {broken} (module: importing module): {why}"


def test_nothing_below_the_cli_imports_the_cli() -> None:
    """Commands are wired in voxtune.cli only; everything else is a library it calls."""
    broken = {module: name for module in MODULES if not in_package(module, COMPOSITION_ROOT)
              and module not in ENTRY_POINTS
              for name in imports(module, module_level=False)
              if in_package(name, COMPOSITION_ROOT)}
    assert not broken, f"modules below the CLI import it: {broken}"


def test_no_import_cycles_at_module_level() -> None:
    """What runs on import never loops back (a cycle breaks as soon as someone imports the
    other module first)."""
    graph = {module: {name for name in imports(module, module_level=True) if name in MODULES
                      and name != module} for module in MODULES}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for name in sorted(graph[module]):
            if state.get(name) == "open":
                raise AssertionError(" → ".join([*path[path.index(name):], name]))
            if name not in state:
                visit(name, [*path, name])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_checker_sees_lazy_imports() -> None:
    """train really imports torch inside functions: the walk must find it."""
    assert "torch" in reachable("voxtune.train")
    assert "kubernetes" in reachable("voxtune.controller")
    assert "voxtune.executors.local" in walk("voxtune.client")[1]
